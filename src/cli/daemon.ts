/**
 * `narpush daemon --to URL ...`: the long-running uploader behind
 * bin/narpush-hook. Everything is checked before the socket opens (the URL,
 * the keys, the compression, the store, the state directory), each problem
 * as one line. Then it runs until SIGTERM/SIGINT: the first one stops it
 * gracefully (uploads in flight get --shutdown-grace seconds), a second one
 * aborts them; either way the exit code is 0 and the queue is on disk.
 * Logs go to stderr, one line per event.
 */
import { NarpushError } from '../errors.js';
import { openCacheBackend } from './open-backend.js';
import { parseCacheUrl } from './cache-url.js';
import { DEFAULT_RETRY_POLICY } from '../daemon/backoff.js';
import { startDaemon } from '../daemon/daemon.js';
import { DEFAULT_SOCKET, DEFAULT_STATE_DIR } from '../daemon/hook.js';
import { idleCollector } from '../daemon/idle-gc.js';
import { type ListenAddress, parseListenAddress } from '../daemon/listen-address.js';
import { DirSyncer } from '../daemon/fs-util.js';
import { nixAutoRootsDir, registerIndirectRoots } from '../daemon/gc-roots.js';
import { formatLogEvent, type LogEvent } from '../daemon/log.js';
import { DEFAULT_THREAD_IDLE_MS } from '../cache/threads/thread-pool.js';
import { DEFAULT_NIX_LOG_DIR } from '../cache/build-logs.js';
import { createPipeline } from '../daemon/pipeline.js';
import { StoreHandle } from '../daemon/store-handle.js';
import { StoreClient } from '../store/client.js';
import { parseStorePath } from '../store/store-path.js';
import type { RootStore } from '../daemon/root-keeper.js';
import { storeTransportFromEnv } from '../store/transport.js';
import type { CliContext } from './context.js';
import { type UploadFlags, uploadSettings } from './upload-settings.js';
import { DAEMON_MAX_ANSWERS, DAEMON_NEGATIVE_TTL_MS, DAEMON_POSITIVE_TTL_MS, openUpstream } from './upstream-settings.js';
import { LookupCache } from '../cache/lookup-cache.js';
import * as nodePath from 'node:path';

export interface DaemonFlags extends UploadFlags {
  readonly to: string;
  readonly socket?: string;
  readonly stateDir?: string;
  readonly shutdownGrace?: string;
  readonly retryDelay?: string;
  readonly retryMaxDelay?: string;
  readonly storeTimeout?: string;
  readonly metricsListen?: string;
  /** Upload the build logs of the derivations whose outputs are uploaded. */
  readonly buildLogs?: boolean;
}

/**
 * Default of --store-timeout. narpush's store requests are small queries and
 * temporary roots, answered in milliseconds; but a store busy with a garbage
 * collection or a locked database can stall a reply for tens of seconds, and
 * a false alarm costs a retry, so this is generous. A hung nix-daemon then
 * holds a batch for two minutes, not for ever.
 */
const DEFAULT_STORE_TIMEOUT_S = 120;

function number(flag: string, s: string, min: number, max: number, integer: boolean): number {
  const ok = integer ? /^-?\d+$/.test(s) : /^\d+(\.\d+)?$/.test(s);
  const n = Number(s);
  if (!ok || n < min || n > max) {
    throw new NarpushError('BAD_OPTION', `${flag} takes a ${integer ? 'whole ' : ''}number from ${min} to ${max}, not '${s}'`);
  }
  return n;
}

/** The inherited listening socket, when systemd started us by socket activation. */
function socketActivationFd(env: NodeJS.ProcessEnv): number | undefined {
  if (env.LISTEN_PID !== String(process.pid)) return undefined;
  const n = Number(env.LISTEN_FDS);
  return Number.isInteger(n) && n >= 1 ? 3 : undefined;
}

export async function daemon(ctx: CliContext, flags: DaemonFlags): Promise<number> {
  // 1. Everything the user gave, checked before anything starts.
  const config = parseCacheUrl(flags.to, { cwd: process.cwd() });
  const settings = await uploadSettings(flags, config, ctx.storeDir);
  const graceMs = 1000 * (flags.shutdownGrace !== undefined ? number('--shutdown-grace', flags.shutdownGrace, 0, 3600, false) : 10);
  const retry = {
    initialDelayMs:
      flags.retryDelay !== undefined ? 1000 * number('--retry-delay', flags.retryDelay, 0.001, 86400, false) : DEFAULT_RETRY_POLICY.initialDelayMs,
    maxDelayMs:
      flags.retryMaxDelay !== undefined ? 1000 * number('--retry-max-delay', flags.retryMaxDelay, 0.001, 86400, false) : DEFAULT_RETRY_POLICY.maxDelayMs,
  };
  if (retry.maxDelayMs < retry.initialDelayMs) throw new NarpushError('BAD_OPTION', '--retry-max-delay is shorter than --retry-delay');
  const storeTimeoutMs =
    1000 * (flags.storeTimeout !== undefined ? number('--store-timeout', flags.storeTimeout, 0.1, 86400, false) : DEFAULT_STORE_TIMEOUT_S);
  let metricsListen: ListenAddress | undefined;
  if (flags.metricsListen !== undefined) {
    const parsed = parseListenAddress(flags.metricsListen);
    if (!parsed.ok) throw new NarpushError('BAD_OPTION', `--metrics-listen ${parsed.error}`);
    metricsListen = parsed.address;
  }

  // LISTEN_* are meant for this process only, not for the nix-daemon it may spawn.
  const env: NodeJS.ProcessEnv = { ...ctx.env };
  const listenFd = socketActivationFd(env);
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  const socketPath = nodePath.resolve(flags.socket ?? (env.NARPUSH_SOCKET || DEFAULT_SOCKET));
  const stateDir = nodePath.resolve(flags.stateDir ?? (env.NARPUSH_STATE_DIR || DEFAULT_STATE_DIR));

  const transport = storeTransportFromEnv(env);
  const openStore = (): Promise<StoreClient> => StoreClient.open({ transport, storeDir: ctx.storeDir, idleTimeoutMs: storeTimeoutMs });
  // The query connection: opened now, so that an unusable store is an error at start.
  const queries = new StoreHandle(openStore);
  await queries.get();

  // Nix's side of the roots (registerIndirectRoots); a failure to sync it is said once.
  // Its directory stays open for those syncs (one per request), until the daemon stops.
  const autoRootsDir = nixAutoRootsDir(env);
  const autoRootsSync = new DirSyncer();
  let autoRootsWarned = false;
  // GC roots for queued work, registered on the query connection. No
  // temporary roots: while the hook waits for the acknowledgement, the build
  // that made the path still holds one, which covers a collection already
  // under way; later collections see the indirect root.
  const roots: RootStore = {
    expand: async (p) => {
      const sp = parseStorePath(p, ctx.storeDir);
      if (!sp.name.endsWith('.drv')) return [p];
      const outputs = await queries.use((s) => s.derivationOutputs(sp), { retry: true });
      return [p, ...[...outputs.values()].flatMap((o) => (o ? [o.path] : []))];
    },
    register: (links) =>
      queries.use(
        async (s) => {
          const why = await registerIndirectRoots(s, links, autoRootsDir, autoRootsSync.sync);
          if (why !== undefined && !autoRootsWarned) {
            autoRootsWarned = true;
            log({ event: 'warning', detail: `${why}: after a power cut, GC roots registered in the seconds before it may be missing until the daemon runs again` });
          }
        },
        { retry: true },
      ),
  };

  const log = (e: LogEvent): void => void ctx.stderr.write(`${formatLogEvent(e)}\n`);
  const backend = await openCacheBackend(config);
  // Upstream answers are remembered across batches, bounded and expiring (see upstream-settings.ts).
  const upstream = await openUpstream(settings.upstream, {
    storeDir: ctx.storeDir,
    answers: new LookupCache<string>({ maxEntries: DAEMON_MAX_ANSWERS, ttlMs: DAEMON_POSITIVE_TTL_MS }),
    negativeTtlMs: DAEMON_NEGATIVE_TTL_MS,
    onUnavailable: (cache, reason) =>
      log({ event: 'warning', detail: `upstream ${cache} cannot be used (${reason}); the paths it might serve are uploaded` }),
  }).catch(async (e: unknown) => {
    await Promise.allSettled([queries.close(), backend.close(), autoRootsSync.close()]);
    throw e;
  });
  const pipeline = createPipeline({
    storeDir: ctx.storeDir,
    openStore,
    backend,
    cacheInfo: settings.cacheInfo,
    compression: settings.compression,
    signingKeys: settings.signingKeys,
    ...(settings.listing ? { listing: settings.listing } : {}),
    ...(settings.metadataCompression ? { metadataCompression: settings.metadataCompression } : {}),
    ...(flags.buildLogs === true
      ? {
          buildLogs: {
            logDir: env.NIX_LOG_DIR || DEFAULT_NIX_LOG_DIR,
            ...(config.kind === 's3' && config.logCompression !== undefined ? { compression: config.logCompression } : {}),
          },
        }
      : {}),
    jobs: settings.jobs,
    ...(upstream ? { upstream } : {}),
    refreshAgeMs: settings.refreshAgeMs,
  });

  // The heap garbage of a burst is given back when the crypto threads are (see idle-gc.ts).
  const idleGc = idleCollector(DEFAULT_THREAD_IDLE_MS);
  // Signals are ours from before the socket opens: a SIGTERM that came while the daemon was
  // starting (or just after it began answering) stops it gracefully once it runs, and never
  // kills it with hooks already answered.
  let signalled: NodeJS.Signals | undefined;
  let onSignal = (signal: NodeJS.Signals): void => void (signalled ??= signal);
  const listener = (signal: NodeJS.Signals): void => onSignal(signal);
  process.on('SIGTERM', listener);
  process.on('SIGINT', listener);
  let running;
  try {
    running = await startDaemon(
      {
        stateDir,
        storeDir: ctx.storeDir,
        ...(listenFd !== undefined ? { listenFd } : { socketPath }),
        cache: backend.description,
        retry,
        shutdownGraceMs: graceMs,
        ...(metricsListen ? { metricsListen } : {}),
      },
      {
        validPaths: async (paths) =>
          new Set((await queries.use((s) => s.queryValidPaths(paths), { retry: true })).map((p) => p.path)),
        upload: pipeline.upload,
        roots,
        onIdle: async () => {
          await pipeline.idle();
          idleGc.schedule();
        },
        log,
      },
    );
  } catch (e) {
    process.off('SIGTERM', listener);
    process.off('SIGINT', listener);
    await Promise.allSettled([queries.close(), pipeline.close(), autoRootsSync.close()]);
    throw e;
  }

  // 2. Run until told to stop.
  const daemon = running;
  await new Promise<void>((resolve) => {
    onSignal = (signal) => {
      log({ event: 'stopping', detail: `received ${signal}` });
      void daemon.stop().then(resolve, resolve);
    };
    if (signalled) onSignal(signalled);
  });
  idleGc.cancel();
  await Promise.allSettled([queries.close(), pipeline.close(), autoRootsSync.close()]);
  // Whatever handle a library left open must not keep a stopped daemon alive.
  setTimeout(() => process.exit(0), 2000).unref();
  return 0;
}
