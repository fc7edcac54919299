/**
 * The narpush daemon, assembled: state directory, journal and queue, the
 * hook's spool, the socket server and the worker. The store and the cache
 * come in as functions (`validPaths`, `upload`), so this file is tested
 * with fakes and never imports the store client, the S3 SDK or a
 * compressor; src/cli/daemon.ts wires the real ones.
 *
 * Order of events that makes "nothing acknowledged is ever lost" hold:
 * a request is validated, its paths are appended to the journal and
 * fsync'd, and only then answered; a spool file is deleted only after its
 * paths are in the journal; a path leaves the journal (a `done` record)
 * only after its closure is in the cache.
 *
 * What happened is counted once, in DaemonStats; `status` and the metrics
 * endpoint (metrics.ts, started only with `metricsListen`, which loads
 * prom-client) both read it.
 */
import type { StorePath } from '../store/store-path.js';
import { type RetryPolicy, DEFAULT_RETRY_POLICY } from './backoff.js';
import { type DaemonStatus, daemonStatus, queueCounts } from './daemon-status.js';
import { pipelineEventSink, workerLogger } from './event-log.js';
import { gcRootsDir } from './gc-roots.js';
import { DaemonHealth } from './health.js';
import { Intake } from './intake.js';
import type { Journal } from './journal.js';
import type { ListenAddress } from './listen-address.js';
import { type DaemonLogger, errorLine } from './log.js';
import type { MetricsServer } from './metrics.js';
import { WorkQueue } from './queue.js';
import { RootKeeper, type RootStore } from './root-keeper.js';
import { startServer, type SocketServer } from './server.js';
import { SpoolIngester } from './spool-ingest.js';
import { openJournal, reconcileRoots } from './startup.js';
import { type StateDirLayout, claimStateDir, releaseStateDir } from './state-dir.js';
import { DaemonStats } from './stats.js';
import { type UploadBatch, Worker } from './worker.js';

export type { DaemonStatus, FailingPath } from './daemon-status.js';

export interface DaemonConfig {
  readonly stateDir: string;
  readonly storeDir: string;
  /** The socket to create; or `listenFd` for an inherited one (systemd). */
  readonly socketPath?: string;
  readonly listenFd?: number;
  /** The cache, for status (no secrets: a CacheBackend description). */
  readonly cache: string;
  readonly retry?: RetryPolicy;
  /** How long in-flight uploads may run on after SIGTERM before they are aborted; default 10 s. */
  readonly shutdownGraceMs?: number;
  readonly idleTimeoutMs?: number;
  /** How often the spool is checked for new files; default 1 s. */
  readonly spoolPollMs?: number;
  readonly maxBatch?: number;
  readonly compactAtBytes?: number;
  /** Serve /metrics and /healthz over HTTP here; off when undefined. */
  readonly metricsListen?: ListenAddress;
}

export interface DaemonDeps {
  /** The subset of `paths` that is valid in the local store; may throw when the store cannot be asked. */
  readonly validPaths: (paths: readonly StorePath[]) => Promise<ReadonlySet<string>>;
  readonly upload: UploadBatch;
  /**
   * GC roots for queued work (<stateDir>/gcroots, see gc-roots.ts). Without
   * it the daemon holds none: only the unit tests that are not about roots
   * leave it out.
   */
  readonly roots?: RootStore;
  /** The queue ran dry. */
  readonly onIdle?: () => Promise<void>;
  readonly log: DaemonLogger;
  readonly now?: () => number;
  readonly random?: () => number;
}

export interface RunningDaemon {
  readonly address: string;
  /** The metrics endpoint's host:port, when `metricsListen` was given. */
  readonly metricsAddress?: string;
  /** Paths the journal held at start. */
  readonly resumed: number;
  status(): DaemonStatus;
  /** Ingest the spool now (it is also polled). */
  ingestSpool(): Promise<void>;
  /** Stop: no new requests, in-flight uploads get the grace period. A second call aborts them at once. */
  stop(): Promise<void>;
}


/** The daemon's parts, wired to each other; nothing started yet. */
interface Parts {
  readonly queue: WorkQueue;
  readonly roots: RootKeeper | undefined;
  readonly intake: Intake;
  readonly spool: SpoolIngester;
  readonly stats: DaemonStats;
  readonly health: DaemonHealth;
  readonly worker: Worker;
  readonly status: () => DaemonStatus;
}

interface Opened {
  readonly layout: StateDirLayout;
  readonly journal: Journal;
  readonly replayed: Awaited<ReturnType<typeof openJournal>>['replayed'];
  readonly started: number;
  readonly now: () => number;
  /** The socket's address once it listens. */
  readonly socket: () => string;
}

function assemble(config: DaemonConfig, deps: DaemonDeps, o: Opened): Parts {
  const { log } = deps;
  const health = new DaemonHealth();
  // Roots are kept while the queue has their path or a request is queueing it (RootKeeper's inUse).
  const roots: RootKeeper | undefined = deps.roots
    ? new RootKeeper(gcRootsDir(config.stateDir), deps.roots, log, (p): boolean => queue.has(p) || intake.isEnqueuing(p))
    : undefined;
  const releaseRoots = (paths: readonly string[]): void => {
    if (roots && paths.length > 0) {
      void roots.release(paths).catch((e: unknown) => log({ event: 'warning', detail: `cannot remove GC roots: ${errorLine(e)}` }));
    }
  };
  const queue = new WorkQueue(health.journalSink(o.journal), {
    retry: config.retry ?? DEFAULT_RETRY_POLICY,
    now: o.now,
    ...(deps.random ? { random: deps.random } : {}),
    onFinished: (p) => releaseRoots([p]),
  });
  queue.restore(o.replayed.pending.values());
  const stats = new DaemonStats(o.now);
  const status = (): DaemonStatus =>
    daemonStatus({ stateDir: config.stateDir, cache: config.cache, socket: o.socket, started: o.started, now: o.now, queue, stats });
  const intake: Intake = new Intake({ storeDir: config.storeDir, validPaths: deps.validPaths, queue, ...(roots ? { roots } : {}), releaseRoots, stats, health, status, log });
  const spool = new SpoolIngester({ dir: o.layout.spool, storeDir: config.storeDir, intake, stats, log });
  const worker = new Worker(queue, {
    upload: deps.upload,
    ...(config.maxBatch !== undefined ? { maxBatch: config.maxBatch } : {}),
    log: workerLogger(stats, log),
    onEvent: pipelineEventSink(stats, log),
    ...(deps.onIdle ? { onIdle: deps.onIdle } : {}),
    onBatch: (s) => stats.batchFinished(s),
  });
  return { queue, roots, intake, spool, stats, health, worker, status };
}

/**
 * Start-up, in the order that keeps roots and hooks safe: the roots' listing
 * before the spool is ingested, the metrics address bound before the socket
 * (one that cannot be bound stops the start before any hook is answered).
 * On failure everything opened is closed and the state directory released.
 */
async function listen(config: DaemonConfig, deps: DaemonDeps, o: Opened, p: Parts): Promise<{ server: SocketServer; metrics?: MetricsServer }> {
  let metrics: MetricsServer | undefined;
  try {
    const listed = p.roots ? await p.roots.snapshot() : [];
    await p.spool.ingest();
    if (config.metricsListen) {
      const { startMetricsServer } = await import('./metrics.js');
      metrics = await startMetricsServer({
        listen: config.metricsListen,
        stats: p.stats,
        queue: () => queueCounts(p.queue.list()),
        health: () => p.health.reason(),
      });
    }
    if (p.roots) {
      await reconcileRoots(p.roots, listed, { queue: p.queue, store: deps.roots!, spoolDir: o.layout.spool, storeDir: config.storeDir, log: deps.log });
    }
    const server = await startServer({
      ...(config.listenFd !== undefined ? { listenFd: config.listenFd } : { socketPath: config.socketPath! }),
      ...(config.idleTimeoutMs !== undefined ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
      handle: (line) => p.intake.handleLine(line),
      log: deps.log,
      paused: true,
    });
    return { server, ...(metrics ? { metrics } : {}) };
  } catch (e) {
    await metrics?.close();
    await o.journal.close().catch(() => {});
    await releaseStateDir(o.layout);
    throw e;
  }
}

/** Stop: no new requests, uploads in flight get the grace period, then everything is closed in order. A second call aborts them at once. */
function stopper(config: DaemonConfig, log: DaemonLogger, o: Opened, p: Parts, s: { server: SocketServer; metrics?: MetricsServer; poll: NodeJS.Timeout }): () => Promise<void> {
  let stopping: Promise<void> | undefined;
  return () => {
    if (stopping) {
      p.worker.abortNow();
      return stopping;
    }
    p.health.markStopping();
    stopping = (async () => {
      log({ event: 'stopping', detail: `waiting up to ${((config.shutdownGraceMs ?? 10_000) / 1000).toFixed(0)} s for uploads in flight` });
      clearInterval(s.poll);
      await s.server.close();
      await p.spool.settled();
      await p.worker.stop(config.shutdownGraceMs ?? 10_000);
      await s.metrics?.close();
      await p.roots?.close();
      await o.journal.close();
      await releaseStateDir(o.layout);
      log({ event: 'stopped', detail: `${p.queue.size} path(s) left in the queue for the next start` });
    })();
    return stopping;
  };
}

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps): Promise<RunningDaemon> {
  const { log } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const layout: StateDirLayout = await claimStateDir(config.stateDir);
  const { journal, replayed } = await openJournal(config.stateDir, layout, config.compactAtBytes, log);
  let server: SocketServer | undefined;
  const opened: Opened = { layout, journal, replayed, started, now, socket: () => server?.address ?? '' };
  const parts = assemble(config, deps, opened);
  const listening = await listen(config, deps, opened, parts);
  server = listening.server;
  const { metrics } = listening;
  const poll = setInterval(() => {
    void parts.spool.ingest();
    void parts.roots?.retry();
  }, config.spoolPollMs ?? 1000);
  parts.worker.start();
  log({
    event: 'started',
    detail: `listening on ${server.address}${metrics ? `, metrics at http://${metrics.address}/metrics` : ''}, state in ${config.stateDir}, uploading to ${config.cache}; ${replayed.pending.size} path(s) resumed from the journal`,
  });
  // Requests are read from here on. The socket listens a few event-loop turns
  // earlier (its file is then chmod-ed and stat-ed); a client connecting in
  // between was answered by a daemon that had not yet said it was listening
  // (seen in CI: a status answered before this line was written).
  server.open();
  return {
    address: server.address,
    ...(metrics ? { metricsAddress: metrics.address } : {}),
    resumed: replayed.pending.size,
    status: parts.status,
    ingestSpool: () => parts.spool.ingest(),
    stop: stopper(config, log, opened, parts, { server, ...(metrics ? { metrics } : {}), poll }),
  };
}
