/**
 * `narpush upload-path --to URL PATH...`: put store paths (and their closure)
 * into a binary cache, with no `nix` process anywhere. Everything the user
 * gave is checked before the first byte is uploaded: the URL, the keys, the
 * compression, every path. Then: progress on stderr, a summary, exit 0 only
 * when every path reached the cache.
 */
import { NarpushError } from '../errors.js';
import { formatHash } from '../hash/hash.js';
import type { CacheBackend } from '../cache/backend.js';
import { openCacheBackend } from './open-backend.js';
import { parseCacheUrl } from './cache-url.js';
import type { Compression } from '../cache/compression.js';
import type { UploadReport } from '../cache/upload.js';
import type { BuildLogReport } from '../cache/build-logs.js';
import type { PathInfo } from '../store/path-info.js';
import { StoreClient } from '../store/client.js';
import { type StorePath, followLinksToStorePath } from '../store/store-path.js';
import { storeTransportFromEnv } from '../store/transport.js';
import { formatBytes, formatRate, formatSeconds } from './format.js';
import type { CliContext } from './context.js';
import { type UploadFlags, uploadSettings } from './upload-settings.js';
import { openUpstream } from './upstream-settings.js';

export interface UploadPathFlags extends UploadFlags {
  readonly to: string;
  readonly closure: boolean;
  readonly force: boolean;
  readonly dryRun: boolean;
  readonly json: boolean;
  /** Also upload the build logs of the uploaded paths built here (`log/<drv>`). */
  readonly buildLogs: boolean;
}

export async function uploadPath(ctx: CliContext, paths: readonly string[], flags: UploadPathFlags): Promise<number> {
  // 1. Everything the user typed, checked before any I/O that matters.
  const config = parseCacheUrl(flags.to, { cwd: process.cwd() });
  const settings = await uploadSettings(flags, config, ctx.storeDir);
  const storePaths: StorePath[] = [];
  for (const p of paths) {
    const { storePath, subpath } = await followLinksToStorePath(p, ctx.storeDir);
    if (subpath !== '') {
      throw new NarpushError('BAD_STORE_PATH', `'${p}' is inside the store path '${storePath.path}'; give the store path itself`);
    }
    storePaths.push(storePath);
  }

  // 2. The store (closure and GC roots, held until the client closes) and the
  // cache. While the daemon starts (another process) and the S3 SDK loads,
  // this thread loads the upload pipeline (in bin/narpush's bundle it is
  // already parsed; unbundled, it is dozens of modules to load).
  const opening = StoreClient.open({
    transport: storeTransportFromEnv(ctx.env),
    storeDir: ctx.storeDir,
    ...(ctx.storeOpening && { opening: ctx.storeOpening() }),
  });
  const backendOpening = openCacheBackend(config);
  const pipeline = Promise.all([
    import('../cache/upload.js'),
    import('../cache/plan.js'),
    import('../cache/threads/thread-pool.js'),
    import('../store/arguments.js'),
    import('../cache/cache-info.js'),
    import('./progress.js'),
    import('../cache/build-logs.js'),
  ]);
  const [storeOpened, backendOpened, loaded] = await Promise.allSettled([opening, backendOpening, pipeline]);
  if (storeOpened.status === 'rejected' || backendOpened.status === 'rejected' || loaded.status === 'rejected') {
    await Promise.allSettled([
      storeOpened.status === 'fulfilled' ? storeOpened.value.close() : undefined,
      backendOpened.status === 'fulfilled' ? backendOpened.value.close() : undefined,
    ]);
    for (const r of [storeOpened, backendOpened, loaded]) if (r.status === 'rejected') throw r.reason;
  }
  const store = (storeOpened as PromiseFulfilledResult<StoreClient>).value;
  const backend = (backendOpened as PromiseFulfilledResult<CacheBackend>).value;
  const [{ uploadPaths }, { UploadPlanner }, { ThreadPool }, { resolvePaths }, { checkCacheInfo, createCacheInfo }, { createProgress }, buildLogs] = (
    loaded as PromiseFulfilledResult<Awaited<typeof pipeline>>
  ).value;

  // This command's threads, closed when it ends. They boot (on other cores)
  // while the closure is read, as many as the planner expects to use for
  // the paths seen so far (see cache/plan.ts); a dry run starts none.
  const threads = new ThreadPool();
  const planner = new UploadPlanner({
    compression: settings.compression,
    jobs: settings.jobs,
    cores: threads.maxThreads,
    signingKeys: settings.signingKeys.length,
  });
  const prewarm = (): void => {
    if (!flags.dryRun && planner.threads() > 0) threads.prewarm(planner.threads());
  };
  prewarm();
  const onInfo = (info: PathInfo): void => {
    planner.add(info.narSize);
    prewarm();
  };

  // Upstream caches: read-only, opened (no I/O yet) beside the cache.
  const upstream = await openUpstream(settings.upstream, {
    storeDir: ctx.storeDir,
    onUnavailable: (cache, reason) =>
      void ctx.stderr.write(`narpush: warning: upstream ${cache} cannot be used (${reason}); the paths it might serve are uploaded\n`),
  }).catch(async (e: unknown) => {
    await Promise.allSettled([store.close(), backend.close(), threads.close()]);
    throw e;
  });

  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new NarpushError('INTERRUPTED', 'interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let report: UploadReport;
  let logs: BuildLogReport | undefined;
  try {
    // The cache's nix-cache-info is read (one round trip) while the store
    // answers the closure query; a new cache's is written only once the
    // paths are known good, so a failed command leaves no cache behind.
    const cacheInfo = flags.dryRun ? undefined : checkCacheInfo(backend, settings.cacheInfo);
    cacheInfo?.catch(() => {}); // awaited below, after the closure: a bad path is said first
    const infos = await resolvePaths(store, storePaths, flags.closure, onInfo);
    if (cacheInfo && (await cacheInfo) === undefined) await createCacheInfo(backend, settings.cacheInfo);
    const progress = createProgress(ctx.stderr as NodeJS.WriteStream, flags.json);
    const upload = (force: boolean) =>
      uploadPaths(infos, {
        backend,
        compression: settings.compression,
        signingKeys: settings.signingKeys,
        ...(settings.listing ? { listing: settings.listing } : {}),
        ...(settings.metadataCompression ? { metadataCompression: settings.metadataCompression } : {}),
        threads,
        jobs: settings.jobs,
        force,
        dryRun: flags.dryRun,
        ...(upstream ? { upstream } : {}),
        // --no-closure: a reference left out may still be served upstream.
        ...(upstream && !flags.closure ? { referenceInfo: (p: StorePath) => store.queryPathInfo(p) } : {}),
        signal: abort.signal,
        onEvent: progress,
        gc: { refreshAgeMs: settings.refreshAgeMs },
      });
    try {
      report = await upload(flags.force);
      // Paths held back because a `narpush gc` ran meanwhile (cache/gc-fence.ts): wait for it, then again.
      for (let round = 1; round <= MAX_GC_ROUNDS && !flags.dryRun && !abort.signal.aborted && heldBack(report); round++) {
        progress.done();
        ctx.stderr.write(`narpush: narpush gc is running on ${config.description}; waiting for it to finish, then uploading what it held back\n`);
        await waitForCollections(backend, abort.signal);
        report = mergeReports(report, await upload(false));
      }
    } finally {
      progress.done();
    }
    if (flags.buildLogs && !flags.dryRun && !abort.signal.aborted) {
      logs = await buildLogs.uploadBuildLogs(backend, buildLogs.derivationsOf(report.uploaded.map((u) => u.info)), {
        logDir: ctx.env.NIX_LOG_DIR || buildLogs.DEFAULT_NIX_LOG_DIR,
        ...(config.kind === 's3' && config.logCompression !== undefined ? { compression: config.logCompression } : {}),
      });
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await Promise.allSettled([store.close(), backend.close(), threads.close(), upstream?.close()]);
  }

  for (const u of report.uploaded) {
    if (u.nar.listing === 'too-large') {
      ctx.stderr.write(`warning: wrote no listing (.ls) for '${u.info.path.path}': it has too many entries (the cap is ${formatBytes(settings.listing!.maxBytes)} of JSON)\n`);
    }
  }
  for (const f of logs?.failed ?? []) ctx.stderr.write(`error: ${f.error.message}\n`);
  if (ctx.debug) for (const d of logs?.missing ?? []) ctx.stderr.write(`no build log of '${d.path}' in the local store\n`);
  if (flags.json) ctx.stdout.write(`${JSON.stringify(jsonReport(config.description, report, flags.dryRun, logs), null, 2)}\n`);
  else printSummary(ctx, report, flags.dryRun, settings.compression.method, logs);
  if (abort.signal.aborted) return 130;
  return report.failed.length === 0 && (logs?.failed.length ?? 0) === 0 ? 0 : 1;
}

/** How many times an upload held back by collections is tried again. */
const MAX_GC_ROUNDS = 5;
const GC_POLL_MS = 2000;

function heldBack(r: UploadReport): boolean {
  return r.failed.some((f) => f.error.code === 'GC_CONFLICT');
}

/** Until no collection may still be deleting (a crashed one counts until its deadline). */
async function waitForCollections(backend: CacheBackend, signal: AbortSignal): Promise<void> {
  const { runningCollections } = await import('../cache/gc-fence.js');
  while (!signal.aborted && (await runningCollections(backend)).length > 0) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, GC_POLL_MS);
      signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
  }
}

/** A later round after an earlier: what either uploaded, what is still failing, what was in the cache before both. */
function mergeReports(first: UploadReport, again: UploadReport): UploadReport {
  const uploaded = [...first.uploaded, ...again.uploaded];
  const done = new Set(uploaded.map((u) => u.info.path.baseName));
  return {
    uploaded,
    skipped: again.skipped.filter((i) => !done.has(i.path.baseName)),
    upstream: again.upstream,
    wouldUpload: again.wouldUpload,
    failed: again.failed,
    seconds: first.seconds + again.seconds,
  };
}

function printSummary(ctx: CliContext, r: UploadReport, dryRun: boolean, method: Compression, logs: BuildLogReport | undefined): void {
  if (dryRun) {
    for (const i of r.wouldUpload) ctx.stderr.write(`would upload ${i.path.path}\n`);
    const bytes = r.wouldUpload.reduce((n, i) => n + i.narSize, 0);
    ctx.stderr.write(
      `dry run: would upload ${r.wouldUpload.length} paths (${formatBytes(bytes)} before compression), ${r.skipped.length} already in the cache, ${r.upstream.length} skipped: upstream\n`,
    );
    return;
  }
  const nar = r.uploaded.reduce((n, u) => n + u.nar.narSize, 0);
  const file = r.uploaded.reduce((n, u) => n + u.nar.fileSize, 0);
  const parts = [
    r.uploaded.length === 0 && r.failed.length === 0
      ? 'nothing to upload'
      : `uploaded ${r.uploaded.length} paths (${formatBytes(nar)} -> ${formatBytes(file)} ${method}, ${formatRate(nar, r.seconds)})`,
    `${r.skipped.length} already in the cache`,
  ];
  if (r.upstream.length > 0) parts.push(`${r.upstream.length} skipped: upstream`);
  if (r.failed.length > 0) parts.push(`${r.failed.length} FAILED`);
  if (logs) {
    parts.push(`${logs.written.length} build logs (${logs.missing.length} not kept locally${logs.failed.length > 0 ? `, ${logs.failed.length} FAILED` : ''})`);
  }
  ctx.stderr.write(`${parts.join(', ')}, in ${formatSeconds(r.seconds)}\n`);
}

function jsonReport(cache: string, r: UploadReport, dryRun: boolean, logs: BuildLogReport | undefined): Record<string, unknown> {
  return {
    cache,
    dryRun,
    uploaded: r.uploaded.map((u) => ({
      path: u.info.path.path,
      url: u.nar.url,
      compression: u.nar.compression,
      narHash: formatHash(u.nar.narHash),
      narSize: u.nar.narSize,
      fileHash: formatHash(u.nar.fileHash),
      fileSize: u.nar.fileSize,
      seconds: Number(u.seconds.toFixed(3)),
      ...(u.nar.listing !== undefined ? { listing: u.nar.listing } : {}),
    })),
    skipped: r.skipped.map((i) => i.path.path),
    skippedUpstream: r.upstream.map((i) => i.path.path),
    ...(dryRun ? { wouldUpload: r.wouldUpload.map((i) => i.path.path) } : {}),
    failed: r.failed.map((f) => ({ path: f.info.path.path, code: f.error.code, error: f.error.message })),
    listings: {
      written: r.uploaded.filter((u) => u.nar.listing === 'written').length,
      tooLarge: r.uploaded.filter((u) => u.nar.listing === 'too-large').length,
    },
    ...(logs
      ? {
          buildLogs: {
            written: logs.written.length,
            missing: logs.missing.length,
            failed: logs.failed.map((f) => ({ drv: f.drv.path, code: f.error.code, error: f.error.message })),
          },
        }
      : {}),
    narBytes: r.uploaded.reduce((n, u) => n + u.nar.narSize, 0),
    fileBytes: r.uploaded.reduce((n, u) => n + u.nar.fileSize, 0),
    seconds: Number(r.seconds.toFixed(3)),
  };
}
