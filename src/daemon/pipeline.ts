/**
 * The daemon's upload function: the same pipeline as `narpush upload-path`
 * (src/store/arguments.ts resolvePaths, src/cache/upload.ts uploadPaths), applied
 * to a batch of queued paths and turned into one outcome per queued path.
 *
 * A queued .drv means its outputs (Nix 2.8.0 gives the hook an empty
 * OUT_PATHS). Each queued path is resolved on its own, so one path that left
 * the store (`dropped`) or cannot be read fails only itself; the closures are
 * then merged and uploaded together, so shared dependencies go up once and
 * paths already in the cache, or served by an upstream (cache/upstream.ts),
 * are skipped. A queued path is `done` only when its whole closure is in the
 * cache or upstream.
 */
import { ERROR_CODES } from '../error-codes.js';
import { isNarpushError } from '../errors.js';
import type { CacheBackend } from '../cache/backend.js';
import { type CacheInfo, ensureCacheInfo } from '../cache/cache-info.js';
import type { CompressionOptions } from '../cache/compression.js';
import type { ListingOptions } from '../cache/nar-producers.js';
import { type BuildLogOptions, derivationsOf, uploadBuildLogs } from '../cache/build-logs.js';
import { resolvePaths } from '../store/arguments.js';
import { ThreadPool } from '../cache/threads/thread-pool.js';
import { type MetadataCompressions, type UploadEvent, uploadPaths } from '../cache/upload.js';
import type { Upstream } from '../cache/upstream.js';
import type { SecretKey } from '../signing/keys.js';
import type { StoreClient } from '../store/client.js';
import type { PathInfo } from '../store/path-info.js';
import { type StorePath, parseStorePath } from '../store/store-path.js';
import { StoreHandle, isConnectionError } from './store-handle.js';
import type { PathOutcome, PipelineEvent, UploadBatch, UploadContext } from './worker.js';

export interface PipelineOptions {
  readonly storeDir: string;
  /** Opens a store connection for the worker (kept while busy, reopened when broken). */
  readonly openStore: () => Promise<StoreClient>;
  readonly backend: CacheBackend;
  /** What nix-cache-info must say; created when the cache has none. */
  readonly cacheInfo: CacheInfo;
  readonly compression: CompressionOptions;
  readonly signingKeys: readonly SecretKey[];
  /** With --build-logs: upload the logs of the derivations of uploaded paths, from Nix's log directory. */
  readonly buildLogs?: BuildLogOptions;
  /** Write each path's `.ls` listing (`write-nar-listing=true`). */
  readonly listing?: ListingOptions;
  /** s3:// narinfo-compression and ls-compression (cache/stage.ts). */
  readonly metadataCompression?: MetadataCompressions;
  /** NARs uploaded at once. */
  readonly jobs: number;
  /** Paths it serves are not uploaded; kept (with its remembered answers) for the daemon's life, closed by close. */
  readonly upstream?: Upstream;
  /** Renew narinfos relied on once this old, for narpush gc (cache/refresh.ts); undefined: never. */
  readonly refreshAgeMs?: number;
  /** How long a worker thread may have no work before it is stopped (DEFAULT_THREAD_IDLE_MS unless set). */
  readonly threadIdleMs?: number;
  /** Tests: worker threads of the caller's (closed by the caller); by default the pipeline's own. */
  readonly threads?: ThreadPool;
}

export interface Pipeline {
  readonly upload: UploadBatch;
  /** The queue ran dry: close the store connection, releasing its temporary GC roots. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

async function resolveOne(store: StoreClient, path: string, storeDir: string): Promise<{ outputs: StorePath[]; infos: PathInfo[] } | PathOutcome> {
  const sp = parseStorePath(path, storeDir);
  let outputs: StorePath[] = [sp];
  if (sp.name.endsWith('.drv')) {
    if (!(await store.isValidPath(sp))) return { kind: 'dropped', reason: 'the derivation is no longer in the local store' };
    const outs = await store.derivationOutputs(sp);
    const unbuilt = [...outs].filter(([, o]) => !o).map(([name]) => name);
    if (unbuilt.length > 0) return { kind: 'failed', error: `output(s) ${unbuilt.join(', ')} of the derivation are not built` };
    outputs = [...outs.values()] as StorePath[];
  }
  const valid = new Set((await store.queryValidPaths(outputs)).map((p) => p.path));
  const gone = outputs.filter((o) => !valid.has(o.path));
  if (gone.length > 0) {
    return { kind: 'dropped', reason: `${gone.map((g) => g.path).join(', ')} is no longer valid in the local store (garbage-collected?)` };
  }
  return { outputs, infos: await resolvePaths(store, outputs, true) };
}

/** The first failure in the closure of `outputs` that is not merely "a reference failed": the cause. */
function rootCause(outputs: readonly StorePath[], infos: ReadonlyMap<string, PathInfo>, failed: ReadonlyMap<string, string>, codes: ReadonlyMap<string, string>): string | undefined {
  const seen = new Set<string>();
  const stack = outputs.map((o) => o.baseName);
  let first: string | undefined;
  while (stack.length > 0) {
    const b = stack.pop()!;
    if (seen.has(b)) continue;
    seen.add(b);
    const err = failed.get(b);
    if (err !== undefined) {
      if (codes.get(b) !== 'REFERENCE_MISSING') return err;
      first ??= err;
    }
    for (const r of infos.get(b)?.references ?? []) stack.push(r.baseName);
  }
  return first;
}

/**
 * The build logs of what was uploaded: each uploaded path's deriver, and the
 * hook's DRV_PATH (a queued .drv) when one of its outputs was uploaded. A
 * log never fails the paths: it is reported as an event only.
 */
async function uploadLogs(
  backend: CacheBackend,
  uploaded: readonly PathInfo[],
  roots: ReadonlyMap<string, readonly StorePath[]>,
  ctx: UploadContext,
  logOptions: BuildLogOptions,
): Promise<void> {
  const drvs = new Map(derivationsOf(uploaded).map((d) => [d.path, d]));
  const done = new Set(uploaded.map((i) => i.path.path));
  for (const [queued, outputs] of roots) {
    if (!queued.endsWith('.drv') || drvs.has(queued)) continue;
    if (outputs.some((o) => done.has(o.path))) drvs.set(queued, parseStorePath(queued, outputs[0]!.storeDir));
  }
  if (drvs.size === 0) return;
  const r = await uploadBuildLogs(backend, [...drvs.values()], logOptions);
  for (const d of r.written) ctx.onEvent({ type: 'build-log', drv: d.path, outcome: 'written' });
  for (const d of r.missing) ctx.onEvent({ type: 'build-log', drv: d.path, outcome: 'missing' });
  for (const f of r.failed) ctx.onEvent({ type: 'build-log', drv: f.drv.path, outcome: 'failed', error: f.error.message });
}

export function createPipeline(opts: PipelineOptions): Pipeline {
  const store = new StoreHandle(opts.openStore);
  // The pipeline's worker threads: stopped while the daemon idles, ended by close.
  const threads = opts.threads ?? new ThreadPool(opts.threadIdleMs !== undefined ? { idleMs: opts.threadIdleMs } : {});
  let cacheChecked = false;

  const upload: UploadBatch = async (paths: readonly string[], ctx: UploadContext) => {
    const outcomes = new Map<string, PathOutcome>();
    const failAll = (error: string): Map<string, PathOutcome> => {
      for (const p of paths) if (!outcomes.has(p)) outcomes.set(p, { kind: 'failed', error });
      return outcomes;
    };
    if (!cacheChecked) {
      try {
        await ensureCacheInfo(opts.backend, opts.cacheInfo);
        cacheChecked = true;
      } catch (e) {
        return failAll(`cannot use the cache: ${message(e)}`);
      }
    }
    let client: StoreClient;
    try {
      client = await store.get();
    } catch (e) {
      return failAll(`cannot open the Nix store: ${message(e)}`);
    }

    let broken = false;
    const roots = new Map<string, readonly StorePath[]>();
    const infos = new Map<string, PathInfo>();
    await Promise.all(
      paths.map(async (p) => {
        try {
          const r = await resolveOne(client, p, opts.storeDir);
          if ('kind' in r) return void outcomes.set(p, r);
          roots.set(p, r.outputs);
          for (const i of r.infos) infos.set(i.path.baseName, i);
        } catch (e) {
          if (isConnectionError(e)) broken = true;
          // A path that cannot become uploadable by waiting (not valid, not a store path) is dropped.
          if (isNarpushError(e) && !ERROR_CODES[e.code].retried) {
            outcomes.set(p, { kind: 'dropped', reason: message(e) });
          } else {
            outcomes.set(p, { kind: 'failed', error: message(e) });
          }
        }
      }),
    );
    if (broken) await store.reset();
    if (roots.size === 0) return outcomes;

    const forward = (e: UploadEvent): void => {
      if (e.type === 'uploaded') {
        ctx.onEvent({
          type: 'uploaded',
          path: e.info.path.path,
          narSize: e.info.narSize,
          fileSize: e.nar.fileSize,
          seconds: e.seconds,
          ...(e.nar.listing === 'too-large' ? { listingTooLarge: true } : {}),
        });
      } else if (e.type === 'skipped') {
        ctx.onEvent({ type: 'skipped', path: e.info.path.path });
      } else if (e.type === 'upstream') {
        ctx.onEvent({ type: 'upstream', path: e.info.path.path });
      } else if (e.type === 'failed' && !ctx.signal.aborted && e.error.code !== 'REFERENCE_MISSING') {
        ctx.onEvent({ type: 'failed', path: e.info.path.path, error: e.error.message });
      }
    };
    let report;
    try {
      report = await uploadPaths([...infos.values()], {
        backend: opts.backend,
        compression: opts.compression,
        signingKeys: opts.signingKeys,
        ...(opts.listing ? { listing: opts.listing } : {}),
        ...(opts.metadataCompression ? { metadataCompression: opts.metadataCompression } : {}),
        threads,
        // Large NARs go to worker threads, even one alone and however small
        // their sum (plan.ts's rules are for upload-path): this thread
        // answers the hook, which holds a build up. Produced here, a 24 MiB
        // closure kept it busy for ~100 ms at a stretch, and a hook's answer
        // waited up to 135 ms (210 ms during a 99 MiB NAR; docs/performance.md).
        wholeMinBytes: 0,
        wholeFromNars: 1,
        jobs: opts.jobs,
        ...(opts.upstream ? { upstream: opts.upstream } : {}),
        signal: ctx.signal,
        onEvent: forward,
        gc: opts.refreshAgeMs !== undefined ? { refreshAgeMs: opts.refreshAgeMs } : {},
      });
    } catch (e) {
      return failAll(message(e));
    }
    if (opts.buildLogs && !ctx.signal.aborted) await uploadLogs(opts.backend, report.uploaded.map((u) => u.info), roots, ctx, opts.buildLogs);
    const failed = new Map(report.failed.map((f) => [f.info.path.baseName, f.error.message]));
    const codes = new Map(report.failed.map((f) => [f.info.path.baseName, f.error.code]));
    for (const [p, outputs] of roots) {
      const cause = rootCause(outputs, infos, failed, codes);
      outcomes.set(p, cause === undefined ? { kind: 'done' } : { kind: 'failed', error: cause });
    }
    return outcomes;
  };

  return {
    upload,
    idle: () => store.reset(),
    close: async () => {
      await Promise.allSettled([store.close(), opts.backend.close(), opts.threads ? undefined : threads.close(), opts.upstream?.close()]);
    },
  };
}
