/**
 * Putting a set of store paths into a cache: which ones are already there,
 * uploading the rest in parallel, and publishing each narinfo only when it is
 * safe to. The invariants this module exists for, whatever fails midway:
 *  - the cache never shows a path's `.narinfo` before that path's NAR is
 *    complete and durable, nor before the narinfos of all its references
 *    (a reference an upstream cache serves, see upstream.ts, is satisfied:
 *    it is not uploaded and nothing waits for it);
 *  - a path is reported `uploaded` only once its narinfo is durable;
 *  - a path's listing (`<hashpart>.ls`, with `listing`) is written before
 *    its narinfo is staged, so a visible path has its listing.
 * Visibility is ordered, durability is not: each narinfo is staged (written,
 * not shown) as soon as its NAR is done, and only showing it waits for its
 * references, so a chain of references costs one rename per link and the
 * fsyncs run beside it (see file-backend.ts). Small paths (most of a
 * typical closure) go up in batches: their NARs built, checked and
 * compressed in one loop, written together, their narinfos signed together
 * (in one message when on the crypto thread: see plan.ts) and written
 * together; each path still succeeds, fails and is published alone.
 * Progress and results are reported as events; nothing here prints. Beside
 * `narpush gc`: a narinfo relied on is renewed when old (refresh.ts) and
 * none is shown if a collector ran since the checks began (gc-fence.ts).
 *
 * This file only assembles the steps, each in its own module:
 * presence.ts (what is there already), batcher.ts (units of work),
 * stage.ts (step 1: NAR, listing, narinfo staged), publisher.ts (step 2:
 * shown in order, then durable; how each path ends).
 */
import { NarpushError } from '../errors.js';
import type { SecretKey } from '../signing/keys.js';
import { signFingerprint } from '../signing/sign.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import type { CacheBackend } from './backend.js';
import { type UploadUnit, uploadUnits } from './batcher.js';
import type { CompressionOptions } from './compression.js';
import { type FenceOptions, GcFence } from './gc-fence.js';
import { type Limiter, createLimiter } from './limit.js';
import type { ListingOptions } from './nar-producers.js';
import type { UploadedNar } from './nar-upload.js';
import { UploadPlanner } from './plan.js';
import { checkPresence } from './presence.js';
import { Publisher, type UploadedPath, asNarpushError } from './publisher.js';
import type { RefreshOptions } from './refresh.js';
import { type MetadataCompressions, type Signer, type StageContext, stageLarge, stageSmall } from './stage.js';
import type { ThreadPool } from './threads/thread-pool.js';
import type { Upstream } from './upstream.js';
import { monotonicMs } from '../clock.js';

export type { UploadedPath } from './publisher.js';
export { LISTING_CONTENT_TYPE, NARINFO_CONTENT_TYPE, type MetadataCompressions, type Signer, listingKey, makeNarInfo, narInfoKey } from './stage.js';

/**
 * Small paths (see plan.ts) go up in batches of at most this many
 * paths and NAR bytes (held in memory at once), SMALL_BATCHES at once
 * (`jobs` if more): while one is built on this thread, the others wait for
 * the disk, the network or their signatures.
 */
export const SMALL_BATCH_PATHS = 32;
export const SMALL_BATCH_BYTES = 8 << 20;
export const SMALL_BATCHES = 4;

export interface UploadOptions {
  readonly backend: CacheBackend;
  readonly compression: CompressionOptions;
  readonly signingKeys: readonly SecretKey[];
  /** Write each path's NAR listing (`write-nar-listing`), built as its NAR streams past. */
  readonly listing?: ListingOptions;
  /** s3:// `narinfo-compression` and `ls-compression` (stage.ts). */
  readonly metadataCompression?: MetadataCompressions;
  /** The worker threads (hashing, signing, whole NARs); owned and closed by the caller. */
  readonly threads: ThreadPool;
  /** Large NARs uploaded at once (and batches of small ones, if more than SMALL_BATCHES). */
  readonly jobs: number;
  /** Small paths per batch (SMALL_BATCH_PATHS unless set). */
  readonly batchPaths?: number;
  /** Upload even when the narinfo exists. */
  readonly force?: boolean;
  /** Decide what would be uploaded, upload nothing. */
  readonly dryRun?: boolean;
  /** NARs up to this size go up in one request (see plan.ts SMALL_NAR_BYTES); tests set 0 to force streaming. */
  readonly smallNarBytes?: number;
  /** Paths an upstream cache serves are not uploaded (see upstream.ts); their narinfos count as present. */
  readonly upstream?: Upstream;
  /** The local info of a reference outside `infos` (--no-closure), so that an upstream may serve it (presence.ts). */
  readonly referenceInfo?: (path: StorePath) => Promise<PathInfo | undefined>;
  /** Tests: whether large NARs are hashed on this thread (see UploadWork.hashHere); measured unless set. */
  readonly hashHere?: boolean;
  /** From how many bytes of large NARs they go whole to worker threads (plan.ts WHOLE_MIN_BYTES unless set; the daemon and tests set 0). */
  readonly wholeMinBytes?: number;
  /** From how many large NARs they go whole to worker threads (2 unless set; the daemon sets 1). */
  readonly wholeFromNars?: number;
  /** Existence checks at once (they are small requests). */
  readonly checkConcurrency?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: UploadEvent) => void;
  /** Staying safe beside `narpush gc`: when to renew narinfos relied on (refresh.ts), clock and skew (gc-fence.ts). */
  readonly gc?: RefreshOptions & FenceOptions;
}

export type UploadEvent =
  | { readonly type: 'planned'; readonly total: number; readonly toUpload: readonly PathInfo[]; readonly present: number; readonly upstream: number }
  | { readonly type: 'started'; readonly info: PathInfo }
  | { readonly type: 'progress'; readonly info: PathInfo; readonly narBytes: number; readonly fileBytes: number }
  | { readonly type: 'uploaded'; readonly info: PathInfo; readonly nar: UploadedNar; readonly seconds: number }
  | { readonly type: 'skipped'; readonly info: PathInfo }
  | { readonly type: 'upstream'; readonly info: PathInfo }
  | { readonly type: 'failed'; readonly info: PathInfo; readonly error: NarpushError };

export interface UploadReport {
  readonly uploaded: readonly UploadedPath[];
  /** Already in the cache (or, with dryRun, what would be skipped). */
  readonly skipped: readonly PathInfo[];
  /** Not uploaded because an upstream cache serves them (also with dryRun). */
  readonly upstream: readonly PathInfo[];
  /** With dryRun: what would be uploaded. */
  readonly wouldUpload: readonly PathInfo[];
  readonly failed: readonly { readonly info: PathInfo; readonly error: NarpushError }[];
  readonly seconds: number;
}

/**
 * Upload `infos` (any order; references outside the set must already be in
 * the cache), except those `upstream` serves. Never throws for a single
 * path's failure: it is in `failed`.
 */
export async function uploadPaths(infos: readonly PathInfo[], opts: UploadOptions): Promise<UploadReport> {
  const started = monotonicMs();
  const emit = opts.onEvent ?? (() => {});
  const seconds = (): number => (monotonicMs() - started) / 1000;
  // Before anything is looked at: a collector that starts after this lists what we rely on as we left it.
  const fence = new GcFence(opts.backend, opts.gc);
  if (!opts.dryRun) await fence.open();
  const found = await checkPresence(infos, {
    backend: opts.backend,
    ...(opts.force !== undefined ? { force: opts.force } : {}),
    ...(opts.upstream ? { upstream: opts.upstream } : {}),
    ...(opts.referenceInfo ? { referenceInfo: opts.referenceInfo } : {}),
    concurrency: opts.checkConcurrency ?? 32,
    // A dry run changes nothing, not even a narinfo's time.
    refresh: opts.dryRun ? {} : (opts.gc ?? {}),
  });
  const { skipped, upstream, toUpload } = found;
  emit({ type: 'planned', total: infos.length, toUpload, present: skipped.length, upstream: upstream.length });
  for (const info of skipped) emit({ type: 'skipped', info });
  for (const info of upstream) emit({ type: 'upstream', info });
  if (opts.dryRun) return { uploaded: [], skipped, upstream, wouldUpload: toUpload, failed: [], seconds: seconds() };

  const uploaded: UploadedPath[] = [];
  const failed: { info: PathInfo; error: NarpushError }[] = [];
  const publisher = new Publisher(toUpload, {
    available: (ref) => found.available(ref),
    fence,
    onUploaded: (u) => {
      uploaded.push(u);
      emit({ type: 'uploaded', ...u });
    },
    onFailed: (info, error) => {
      failed.push({ info, error });
      emit({ type: 'failed', info, error });
    },
  });
  await runUploads(toUpload, opts, emit, publisher);
  return { uploaded, skipped, upstream, wouldUpload: [], failed, seconds: seconds() };
}

/** Step 1 of every path (stage.ts), a unit at a time (batcher.ts), each path then handed to the publisher. */
async function runUploads(toUpload: readonly PathInfo[], opts: UploadOptions, emit: (e: UploadEvent) => void, publisher: Publisher): Promise<void> {
  // How each NAR is produced, and on which threads: see plan.ts.
  const planner = new UploadPlanner({
    compression: opts.compression,
    jobs: opts.jobs,
    cores: opts.threads.maxThreads,
    threadsRunning: opts.threads.running,
    signingKeys: opts.signingKeys.length,
    ...(opts.smallNarBytes !== undefined ? { smallNarBytes: opts.smallNarBytes } : {}),
    ...(opts.hashHere !== undefined ? { hashHere: opts.hashHere } : {}),
    ...(opts.wholeMinBytes !== undefined ? { wholeMinBytes: opts.wholeMinBytes } : {}),
    ...(opts.wholeFromNars !== undefined ? { wholeFromNars: opts.wholeFromNars } : {}),
  });
  for (const info of toUpload) planner.add(info.narSize);
  const sign: Signer = planner.signOnThread()
    ? (fp, key) => opts.threads.sign(fp, key)
    : async (fp, key) => signFingerprint(fp, key);
  const ctx: StageContext = {
    backend: opts.backend,
    compression: opts.compression,
    ...(opts.listing ? { listing: opts.listing } : {}),
    ...(opts.metadataCompression ? { metadataCompression: opts.metadataCompression } : {}),
    threads: opts.threads,
    planner,
    signingKeys: opts.signingKeys,
    sign,
    ...(opts.signal ? { signal: opts.signal } : {}),
    onStarted: (info) => emit({ type: 'started', info }),
    onProgress: (info, narBytes, fileBytes) => emit({ type: 'progress', info, narBytes, fileBytes }),
  };
  // Large NARs hold compressor threads and upload buffers: `jobs` of them at
  // once. Small ones are batched (see SMALL_BATCH_PATHS).
  const limits: Record<UploadUnit['kind'], Limiter> = { large: createLimiter(opts.jobs), batch: createLimiter(Math.max(SMALL_BATCHES, opts.jobs)) };
  const failure = (e: unknown, info: PathInfo): NarpushError =>
    opts.signal?.aborted
      ? new NarpushError('UPLOAD_ABORTED', `upload of '${info.path.path}' was interrupted`, { cause: e })
      : asNarpushError(e, info);

  const run = async (unit: UploadUnit): Promise<void> => {
    const t0 = monotonicMs();
    const infos = unit.kind === 'large' ? [unit.info] : unit.infos;
    let outcomes;
    try {
      outcomes = await limits[unit.kind](async () =>
        unit.kind === 'large' ? [{ info: unit.info, result: { status: 'fulfilled' as const, value: await stageLarge(ctx, unit.info) } }] : stageSmall(ctx, unit.infos),
      );
    } catch (e) {
      for (const info of infos) publisher.failed(info, failure(e, info));
      return;
    }
    await Promise.all(
      outcomes.map(({ info, result }) => {
        if (result.status === 'fulfilled') return publisher.staged(info, result.value, t0);
        publisher.failed(info, failure(result.reason, info));
        return undefined;
      }),
    );
  };

  const running: Promise<void>[] = [];
  const small = (info: PathInfo): boolean => planner.production(info.narSize) === 'memory';
  const batchPaths = Math.max(1, opts.batchPaths ?? SMALL_BATCH_PATHS);
  for (const unit of uploadUnits(toUpload, small, { paths: batchPaths, bytes: SMALL_BATCH_BYTES })) running.push(run(unit));
  // `run` hands every path's end to the publisher: a rejection here is a bug, raised once all have settled.
  for (const r of await Promise.allSettled(running)) if (r.status === 'rejected') throw r.reason;
}
