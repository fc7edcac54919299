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
import { Journal, type JournalRecord } from './journal.js';
import type { ListenAddress } from './listen-address.js';
import type { DaemonLogger } from './log.js';
import { type EnqueueAnswer, type ErrorAnswer, MAX_LINE_BYTES, type RejectedPath } from './protocol.js';
import { WorkQueue } from './queue.js';
import { gcRootsDir } from './gc-roots.js';
import { RootKeeper, type RootStore } from './root-keeper.js';
import { type ParsedRequest, parseRequest } from './request.js';
import { startServer, type SocketServer } from './server.js';
import { listSpool, markSpoolFileRejected, readSpoolFile, removeSpoolFile, removeStaleTempFiles } from './spool.js';
import { type StateDirLayout, claimStateDir, releaseStateDir, unusable } from './state-dir.js';
import { type BuildLogCounts, DaemonStats, HOOK_SOURCES } from './stats.js';
import type { MetricsServer } from './metrics.js';
import { type PipelineEvent, type UploadBatch, Worker } from './worker.js';

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

export interface FailingPath {
  readonly path: string;
  readonly attempts: number;
  readonly lastError: string;
  /** Seconds until the next attempt; 0 when it is queued or uploading now. */
  readonly nextRetryInSeconds: number;
}

/** What `narpush status` shows. Counts of `uploaded`/`skipped` are of closure paths; the rest are of queued paths. */
export interface DaemonStatus {
  readonly pid: number;
  readonly socket: string;
  readonly stateDir: string;
  readonly cache: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  /** Waiting to be uploaded (including those waiting for a retry). */
  readonly queued: number;
  readonly inFlight: readonly string[];
  readonly waitingRetry: number;
  readonly uploaded: number;
  readonly skipped: number;
  /** Not uploaded because an upstream cache serves them. */
  readonly skippedUpstream: number;
  /** Queued paths given up on because they left the store. */
  readonly dropped: number;
  /** Paths refused at the socket or in the spool. */
  readonly rejected: number;
  /** Failed attempts since start. */
  readonly failures: number;
  /** With --build-logs: derivations whose log was written, not kept locally, or not uploaded. */
  readonly buildLogs: BuildLogCounts;
  readonly failing: readonly FailingPath[];
  readonly narBytes: number;
  readonly fileBytes: number;
  /** Time spent uploading. */
  readonly busySeconds: number;
  /** NAR bytes per second of busy time. */
  readonly narBytesPerSecond: number;
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

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps): Promise<RunningDaemon> {
  const { log } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const layout: StateDirLayout = await claimStateDir(config.stateDir);
  let opened;
  try {
    opened = await Journal.open(layout.journal, { compactAtBytes: config.compactAtBytes });
  } catch (e) {
    await releaseStateDir(layout);
    throw unusable(config.stateDir, e);
  }
  const { journal, replayed } = opened;
  if (replayed.tornTail) log({ event: 'warning', detail: 'the queue journal ended in a partial line (a crash mid-write); ignored it' });
  if (replayed.badLines > 0) log({ event: 'warning', detail: `skipped ${replayed.badLines} unreadable line(s) of the queue journal` });

  // Health: from a request that could not be queued (its GC roots or its journal record not written)
  // until the next journal write succeeds, the daemon cannot take work (hooks are answered with an
  // error and spool). Writes come with every request, so it recovers by itself.
  let journalError: string | undefined;
  const journalSink = {
    append: (records: readonly JournalRecord[]): Promise<void> =>
      journal.append(records).then(
        () => void (journalError = undefined),
        (e: unknown) => {
          journalError = message(e);
          throw e;
        },
      ),
  };
  // Paths between their roots and their journal record (see RootKeeper's inUse).
  const enqueuing = new Map<string, number>();
  const roots = deps.roots
    ? new RootKeeper(gcRootsDir(config.stateDir), deps.roots, log, (p) => queue.has(p) || enqueuing.has(p))
    : undefined;
  const releaseRoots = (paths: readonly string[]): void => {
    if (roots && paths.length > 0) {
      void roots.release(paths).catch((e: unknown) => log({ event: 'warning', detail: `cannot remove GC roots: ${message(e)}` }));
    }
  };
  const queue = new WorkQueue(journalSink, {
    retry: config.retry ?? DEFAULT_RETRY_POLICY,
    now,
    ...(deps.random ? { random: deps.random } : {}),
    onFinished: (p) => releaseRoots([p]),
  });
  queue.restore(replayed.pending.values());

  const stats = new DaemonStats(now);
  const onEvent = (e: PipelineEvent): void => {
    stats.pipelineEvent(e);
    if (e.type === 'uploaded') {
      log({ event: 'uploaded', subject: e.path, detail: `(${e.narSize} bytes -> ${e.fileSize} bytes, ${e.seconds.toFixed(2)} s)` });
      if (e.listingTooLarge) log({ event: 'warning', subject: e.path, detail: 'no listing (.ls) written: it has too many entries' });
    } else if (e.type === 'skipped') {
      log({ event: 'skipped', subject: e.path, detail: '(already in the cache)' });
    } else if (e.type === 'upstream') {
      log({ event: 'skipped', subject: e.path, detail: '(served upstream)' });
    } else if (e.type === 'build-log') {
      // A missing log is normal (keep-build-log off, or removed): counted, not logged.
      if (e.outcome === 'written') log({ event: 'uploaded', subject: `log/${e.drv.slice(e.drv.lastIndexOf('/') + 1)}`, detail: '(build log)' });
      if (e.outcome === 'failed') log({ event: 'warning', subject: e.drv, detail: `build log not uploaded: ${e.error ?? ''}` });
    } else {
      log({ event: 'failed', subject: e.path, detail: e.error });
    }
  };
  const worker = new Worker(queue, {
    upload: deps.upload,
    ...(config.maxBatch !== undefined ? { maxBatch: config.maxBatch } : {}),
    log: (e) => {
      if (e.event === 'retry') stats.attemptFailed();
      if (e.event === 'dropped') stats.pathDropped();
      log(e);
    },
    onEvent,
    ...(deps.onIdle ? { onIdle: deps.onIdle } : {}),
    onBatch: (s) => stats.batchFinished(s),
  });

  const done = (paths: readonly string[]): void => {
    for (const p of paths) {
      const n = (enqueuing.get(p) ?? 1) - 1;
      if (n > 0) enqueuing.set(p, n);
      else enqueuing.delete(p);
    }
  };

  /** Validate against the store, hold GC roots, queue durably. Throws only when the roots or the journal cannot be written. */
  const enqueue = async (req: Extract<ParsedRequest, { op: 'enqueue' }>, source: string): Promise<EnqueueAnswer> => {
    const rejected: RejectedPath[] = [...req.rejected];
    let targets = req.targets;
    if (targets.length > 0) {
      try {
        const valid = await deps.validPaths(targets);
        for (const t of targets) if (!valid.has(t.path)) rejected.push({ path: t.path, reason: 'not valid in the local store' });
        targets = targets.filter((t) => valid.has(t.path));
      } catch (e) {
        // Queue them anyway: the worker checks again before uploading, and a path must not be lost to a store hiccup.
        log({ event: 'warning', detail: `cannot check paths against the store (${message(e)}); queueing them unchecked` });
      }
    }
    for (const r of rejected) log({ event: 'rejected', subject: r.path, detail: `${r.reason} (from ${source})` });
    stats.pathsRejected(rejected.length);
    // A hook that spooled made roots for these too; a path given up keeps none.
    const given = rejected.map((r) => r.path).filter((p) => p.startsWith(`${config.storeDir}/`) && !p.slice(config.storeDir.length + 1).includes('/'));
    releaseRoots(given);
    // The roots exist before the journal has the paths, and so before any acknowledgement.
    const paths = targets.map((t) => t.path);
    for (const p of paths) enqueuing.set(p, (enqueuing.get(p) ?? 0) + 1);
    let r;
    let fresh: string[] = [];
    try {
      fresh = roots ? await roots.hold(paths) : [];
      r = await queue.enqueue(paths);
    } catch (e) {
      done(paths);
      releaseRoots(fresh);
      throw e;
    }
    done(paths);
    const via = req.drv && !r.queued.includes(req.drv.path) ? `from ${source}, ${req.drv.path}` : `from ${source}`;
    for (const p of r.queued) log({ event: 'queued', subject: p, detail: `(${via})` });
    return { ok: true, queued: r.queued.length, duplicates: r.duplicates.length, rejected };
  };

  const handle = async (line: string): Promise<unknown> => {
    const parsed = parseRequest(line, config.storeDir);
    if (!parsed.ok) {
      stats.hookRequest('socket', 'rejected');
      log({ event: 'rejected', subject: 'a request', detail: parsed.error });
      return { ok: false, code: 'BAD_REQUEST', error: parsed.error } satisfies ErrorAnswer;
    }
    if (parsed.request.op === 'status') return { ok: true, status: status() };
    try {
      const answer = await enqueue(parsed.request, 'the socket');
      stats.hookRequest('socket', 'ok');
      return answer;
    } catch (e) {
      stats.hookRequest('socket', 'error');
      journalError ??= message(e);
      log({ event: 'warning', detail: `cannot queue the request (GC roots or journal): ${message(e)}` });
      return { ok: false, code: 'QUEUE_UNAVAILABLE', error: `the daemon cannot write its queue: ${message(e)}` } satisfies ErrorAnswer;
    }
  };

  // Spool ingestion runs one pass at a time; a pass asked for meanwhile runs after it.
  let ingesting: Promise<void> = Promise.resolve();
  const ingestOnce = async (): Promise<void> => {
    await removeStaleTempFiles(layout.spool, 10 * 60_000).catch(() => 0);
    for (const name of await listSpool(layout.spool)) {
      let line: string;
      try {
        line = (await readSpoolFile(layout.spool, name, MAX_LINE_BYTES + 1)).replace(/\n$/, '');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        stats.hookRequest('spool', 'rejected');
        log({ event: 'rejected', subject: name, detail: `unreadable spool file (${message(e)}); kept as ${name}.rejected` });
        await markSpoolFileRejected(layout.spool, name).catch(() => {});
        continue;
      }
      const parsed = parseRequest(line, config.storeDir);
      if (!parsed.ok || parsed.request.op !== 'enqueue') {
        stats.hookRequest('spool', 'rejected');
        log({ event: 'rejected', subject: name, detail: `${parsed.ok ? 'not an enqueue request' : parsed.error}; kept as ${name}.rejected` });
        await markSpoolFileRejected(layout.spool, name).catch(() => {});
        continue;
      }
      try {
        await enqueue(parsed.request, 'the spool');
        stats.hookRequest('spool', 'ok');
      } catch (e) {
        stats.hookRequest('spool', 'error');
        log({ event: 'warning', detail: `cannot queue spool file ${name} (${message(e)}); will try again` });
        return;
      }
      await removeSpoolFile(layout.spool, name).catch(() => {});
    }
  };
  const ingestSpool = (): Promise<void> => {
    ingesting = ingesting.then(ingestOnce).catch((e: unknown) => log({ event: 'warning', detail: `spool: ${message(e)}` }));
    return ingesting;
  };

  const queueCounts = (items = queue.list()): { queued: number; inFlight: number; waitingRetry: number } => {
    let inFlight = 0;
    let waitingRetry = 0;
    for (const i of items) {
      if (i.state === 'running') inFlight++;
      else if (i.state === 'waiting') waitingRetry++;
    }
    return { queued: items.length - inFlight, inFlight, waitingRetry };
  };

  const status = (): DaemonStatus => {
    const t = now();
    const items = queue.list();
    const counts = queueCounts(items);
    const s = stats.snapshot();
    const rejectedRequests = HOOK_SOURCES.reduce((n, source) => n + stats.hookRequests(source, 'rejected'), 0);
    const failing = items
      .filter((i) => i.attempts > 0)
      .slice(0, 100)
      .map((i) => ({
        path: i.path,
        attempts: i.attempts,
        lastError: i.lastError ?? '',
        nextRetryInSeconds: i.state === 'waiting' ? Math.max(0, Math.round((i.notBefore - t) / 1000)) : 0,
      }));
    return {
      pid: process.pid,
      socket: server?.address ?? '',
      stateDir: config.stateDir,
      cache: config.cache,
      startedAt: new Date(started).toISOString(),
      uptimeSeconds: Math.round((t - started) / 1000),
      queued: counts.queued,
      inFlight: items.filter((i) => i.state === 'running').map((i) => i.path),
      waitingRetry: counts.waitingRetry,
      uploaded: s.uploaded,
      skipped: s.skipped,
      skippedUpstream: s.skippedUpstream,
      dropped: s.dropped,
      rejected: s.rejectedPaths + rejectedRequests,
      failures: s.failures,
      buildLogs: s.buildLogs,
      failing,
      narBytes: s.narBytes,
      fileBytes: s.fileBytes,
      busySeconds: Number(s.busySeconds.toFixed(3)),
      narBytesPerSecond: s.busySeconds > 0 ? Math.round(s.narBytes / s.busySeconds) : 0,
    };
  };

  let stopping: Promise<void> | undefined;
  /** Why the daemon cannot take work now, or undefined (GET /healthz). */
  const health = (): string | undefined => {
    if (stopping) return 'stopping';
    if (journalError !== undefined) return `the queue cannot be written (${journalError})`;
    return undefined;
  };

  /**
   * At start: roots for everything the journal holds (state directories from
   * before roots existed have none), and no root for anything else. The
   * listing is taken before the spool is ingested (see RootKeeper.reconcile).
   */
  const reconcileRoots = async (keeper: RootKeeper, listed: readonly string[]): Promise<void> => {
    await keeper.hold(queue.list().map((i) => i.path));
    const leftover: string[] = [];
    for (const name of await listSpool(layout.spool)) {
      const line = await readSpoolFile(layout.spool, name, MAX_LINE_BYTES + 1).catch(() => '');
      const parsed = parseRequest(line.replace(/\n$/, ''), config.storeDir);
      if (parsed.ok && parsed.request.op === 'enqueue') leftover.push(...parsed.request.targets.map((t) => t.path));
    }
    const keep: string[] = [];
    for (const p of leftover) {
      try {
        keep.push(...(await deps.roots!.expand(p)));
      } catch (e) {
        // Not knowing what a spool file needs kept, remove nothing.
        log({ event: 'warning', detail: `cannot check the GC roots in ${keeper.dir} (${message(e)}); left them as they are` });
        return;
      }
    }
    const removed = await keeper.reconcile(listed, keep);
    if (removed > 0) log({ event: 'warning', detail: `removed ${removed} GC root(s) in ${keeper.dir} that no queued path needs` });
  };

  let server: SocketServer | undefined;
  let metrics: MetricsServer | undefined;
  try {
    const listed = roots ? await roots.snapshot() : [];
    await ingestSpool();
    // Before the socket: a metrics address that cannot be bound stops the start, before any hook is answered.
    if (config.metricsListen) {
      const { startMetricsServer } = await import('./metrics.js');
      metrics = await startMetricsServer({ listen: config.metricsListen, stats, queue: () => queueCounts(), health });
    }
    if (roots) await reconcileRoots(roots, listed);
    server = await startServer({
      ...(config.listenFd !== undefined ? { listenFd: config.listenFd } : { socketPath: config.socketPath! }),
      ...(config.idleTimeoutMs !== undefined ? { idleTimeoutMs: config.idleTimeoutMs } : {}),
      handle,
      log,
    });
  } catch (e) {
    await metrics?.close();
    await journal.close().catch(() => {});
    await releaseStateDir(layout);
    throw e;
  }
  const poll = setInterval(() => {
    void ingestSpool();
    void roots?.retry();
  }, config.spoolPollMs ?? 1000);
  worker.start();
  log({
    event: 'started',
    detail: `listening on ${server.address}${metrics ? `, metrics at http://${metrics.address}/metrics` : ''}, state in ${config.stateDir}, uploading to ${config.cache}; ${replayed.pending.size} path(s) resumed from the journal`,
  });

  const stop = (): Promise<void> => {
    if (stopping) {
      worker.abortNow();
      return stopping;
    }
    stopping = (async () => {
      log({ event: 'stopping', detail: `waiting up to ${((config.shutdownGraceMs ?? 10_000) / 1000).toFixed(0)} s for uploads in flight` });
      clearInterval(poll);
      await server!.close();
      await ingesting;
      await worker.stop(config.shutdownGraceMs ?? 10_000);
      await metrics?.close();
      await roots?.settled();
      await journal.close();
      await releaseStateDir(layout);
      log({ event: 'stopped', detail: `${queue.size} path(s) left in the queue for the next start` });
    })();
    return stopping;
  };

  return {
    address: server.address,
    ...(metrics ? { metricsAddress: metrics.address } : {}),
    resumed: replayed.pending.size,
    status,
    ingestSpool,
    stop,
  };
}
