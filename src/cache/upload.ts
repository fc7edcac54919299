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
 * together; each path still
 * succeeds, fails and is published alone. Progress and results are reported
 * as events; nothing here prints. Beside `narpush gc`: a narinfo relied on
 * is renewed when old (refresh.ts) and none is shown if a collector ran
 * since the checks began (gc-fence.ts).
 */
import { NarpushError, isNarpushError } from '../errors.js';
import type { NarInfo } from '../narinfo/narinfo.js';
import { formatNarInfo } from '../narinfo/narinfo.js';
import type { SecretKey } from '../signing/keys.js';
import { signFingerprint, signNarInfoWith } from '../signing/sign.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import { type CacheBackend, type StagedObject, stageBatch, stageBytes } from './backend.js';
import type { CompressionOptions } from './compression.js';
import { type FenceOptions, GcFence } from './gc-fence.js';
import { createLimiter } from './limit.js';
import type { ListingOptions } from './nar-producers.js';
import { type UploadedNar, uploadNar, uploadSmallNars } from './nar-upload.js';
import { UploadPlanner, streamed } from './plan.js';
import { type RefreshOptions, presentAndFresh } from './refresh.js';
import type { ThreadPool } from './threads/thread-pool.js';
import type { Upstream } from './upstream.js';

export const NARINFO_CONTENT_TYPE = 'text/x-nix-narinfo';
/** What Nix 2.8 gives `.ls` listings (uncompressed, as on a file:// cache). */
export const LISTING_CONTENT_TYPE = 'application/json';

/**
 * Small paths (see plan.ts) go up in batches of at most this many
 * paths and NAR bytes (held in memory at once), SMALL_BATCHES at once
 * (`jobs` if more): while one is built on this thread, the others wait for
 * the disk, the network or their signatures.
 */
export const SMALL_BATCH_PATHS = 32;
export const SMALL_BATCH_BYTES = 8 << 20;
export const SMALL_BATCHES = 4;

export function narInfoKey(path: StorePath): string {
  return `${path.hashPart}.narinfo`;
}

export function listingKey(path: StorePath): string {
  return `${path.hashPart}.ls`;
}

export interface UploadOptions {
  readonly backend: CacheBackend;
  readonly compression: CompressionOptions;
  readonly signingKeys: readonly SecretKey[];
  /** Write each path's NAR listing (`write-nar-listing`), built as its NAR streams past. */
  readonly listing?: ListingOptions;
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
  /** Tests: whether large NARs are hashed on this thread (see UploadWork.hashHere); measured unless set. */
  readonly hashHere?: boolean;
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

export interface UploadedPath {
  readonly info: PathInfo;
  /** `nar.listing`, when a listing was asked for, is 'written' or 'too-large' (none written). */
  readonly nar: UploadedNar;
  readonly seconds: number;
}

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

function asNarpushError(e: unknown, info: PathInfo): NarpushError {
  if (isNarpushError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new NarpushError('UPLOAD_FAILED', `uploading '${info.path.path}' failed: ${message}`, { cause: e });
}

/** Makes `<key name>:<signature>` of a fingerprint (on the crypto thread or this one, as the planner chose). */
export type Signer = (fingerprint: string, key: SecretKey) => Promise<string>;

/** The narinfo for an uploaded path: what the store knows, where the NAR went, signed by `sign`. */
export async function makeNarInfo(info: PathInfo, nar: UploadedNar, keys: readonly SecretKey[], sign: Signer): Promise<NarInfo> {
  const unsigned: NarInfo = {
    storePath: info.path,
    url: nar.url,
    compression: nar.compression,
    fileHash: nar.fileHash,
    fileSize: nar.fileSize,
    narHash: info.narHash,
    narSize: info.narSize,
    references: info.references,
    ...(info.deriver ? { deriver: info.deriver } : {}),
    sigs: info.sigs,
    ...(info.ca ? { ca: info.ca } : {}),
  };
  return keys.length > 0 ? signNarInfoWith(unsigned, keys, sign) : unsigned;
}

/**
 * Upload `infos` (any order; references outside the set must already be in
 * the cache), except those `upstream` serves. Never throws for a single
 * path's failure: it is in `failed`.
 */
export async function uploadPaths(infos: readonly PathInfo[], opts: UploadOptions): Promise<UploadReport> {
  const started = performance.now();
  const emit = opts.onEvent ?? (() => {});
  const { backend } = opts;
  const inSet = new Map(infos.map((i) => [i.path.baseName, i]));
  // Before anything is looked at: a collector that starts after this lists what we rely on as we left it.
  const fence = new GcFence(backend, opts.gc);
  if (!opts.dryRun) await fence.open();

  // Signed by an upstream key: not ours to upload, and no request needed to know it.
  const upstreamSigned = opts.upstream ? infos.filter((i) => opts.upstream!.signed(i)) : [];
  const served = new Set(upstreamSigned.map((i) => i.path.baseName));
  const own = served.size > 0 ? infos.filter((i) => !served.has(i.path.baseName)) : infos;

  // Which narinfos exist: the paths themselves (unless forced) and any reference outside the set.
  const check = createLimiter(opts.checkConcurrency ?? 32);
  const outside = new Map<string, StorePath>();
  for (const i of infos) for (const r of i.references) if (!inSet.has(r.baseName)) outside.set(r.baseName, r);
  const toCheck = [...(opts.force ? [] : own.map((i) => i.path)), ...outside.values()];
  const presence = new Map<string, boolean>();
  // A dry run changes nothing, not even a narinfo's time.
  const refresh = opts.dryRun ? {} : (opts.gc ?? {});
  await Promise.all(
    toCheck.map((p) =>
      check(async () => presence.set(p.baseName, await presentAndFresh(backend, narInfoKey(p), NARINFO_CONTENT_TYPE, refresh))),
    ),
  );

  const skipped = own.filter((i) => !opts.force && presence.get(i.path.baseName));
  const missing = own.filter((i) => opts.force || !presence.get(i.path.baseName));
  // Asked of the upstream caches only for what ours lacks.
  for (const b of (await opts.upstream?.lookup(missing)) ?? []) served.add(b);
  const upstream = infos.filter((i) => served.has(i.path.baseName));
  const toUpload = missing.filter((i) => !served.has(i.path.baseName));
  emit({ type: 'planned', total: infos.length, toUpload, present: skipped.length, upstream: upstream.length });
  for (const info of skipped) emit({ type: 'skipped', info });
  for (const info of upstream) emit({ type: 'upstream', info });
  if (opts.dryRun) {
    return { uploaded: [], skipped, upstream, wouldUpload: toUpload, failed: [], seconds: (performance.now() - started) / 1000 };
  }

  // Large NARs hold compressor threads and upload buffers: `jobs` of them at
  // once. Small ones are batched (see SMALL_BATCH_PATHS).
  const jobs = createLimiter(opts.jobs);
  const batches = createLimiter(Math.max(SMALL_BATCHES, opts.jobs));
  // How each NAR is produced, and on which threads: see plan.ts.
  const planner = new UploadPlanner({
    compression: opts.compression,
    jobs: opts.jobs,
    cores: opts.threads.maxThreads,
    signingKeys: opts.signingKeys.length,
    ...(opts.smallNarBytes !== undefined ? { smallNarBytes: opts.smallNarBytes } : {}),
    ...(opts.hashHere !== undefined ? { hashHere: opts.hashHere } : {}),
  });
  for (const info of toUpload) planner.add(info.narSize);
  const sign: Signer = planner.signOnThread()
    ? (fp, key) => opts.threads.sign(fp, key)
    : async (fp, key) => signFingerprint(fp, key);
  const batchPaths = Math.max(1, opts.batchPaths ?? SMALL_BATCH_PATHS);
  const uploaded: UploadedPath[] = [];
  const failed: { info: PathInfo; error: NarpushError }[] = [];
  // Per path being uploaded: true once its narinfo is visible, false when it will not be.
  const visible = new Map<string, Promise<boolean>>();

  const fail = (info: PathInfo, error: NarpushError): void => {
    failed.push({ info, error });
    emit({ type: 'failed', info, error });
  };
  const failure = (e: unknown, info: PathInfo): NarpushError =>
    opts.signal?.aborted
      ? new NarpushError('UPLOAD_ABORTED', `upload of '${info.path.path}' was interrupted`, { cause: e })
      : asNarpushError(e, info);

  /** Whether every reference's narinfo is visible (waiting for those in the set), or the error why not. */
  const referencesVisible = async (info: PathInfo): Promise<NarpushError | undefined> => {
    for (const ref of info.references) {
      if (ref.baseName === info.path.baseName) continue;
      const pending = visible.get(ref.baseName);
      // An upstream reference is satisfied: clients get it from the upstream, not from us.
      if (pending ? await pending : presence.get(ref.baseName) === true || served.has(ref.baseName)) continue;
      const why = pending ? 'failed to upload' : 'is not in the cache (upload it, or leave out --no-closure)';
      return new NarpushError('REFERENCE_MISSING', `not publishing '${info.path.path}': its reference '${ref.path}' ${why}`);
    }
    return undefined;
  };

  /** GC_CONFLICT if a collector ran since the checks began (see gc-fence.ts), or the error listing its markers. */
  const collectorRan = async (info: PathInfo): Promise<NarpushError | undefined> => {
    try {
      return await fence.check();
    } catch (e) {
      return asNarpushError(e, info);
    }
  };

  interface Upload {
    readonly info: PathInfo;
    readonly shown: (ok: boolean) => void;
  }

  /** After step 1 (the NAR, and the narinfo staged): make the narinfo visible, then durable. */
  const show = async ({ info, shown }: Upload, nar: UploadedNar, staged: StagedObject, t0: number): Promise<void> => {
    // 2. Visible only after the narinfos of its references: the one step on the chain.
    const missing = (await referencesVisible(info)) ?? (await collectorRan(info));
    if (missing) {
      shown(false);
      await staged.discard();
      return fail(info, missing);
    }
    try {
      await staged.publish();
    } catch (e) {
      shown(false);
      return fail(info, asNarpushError(e, info));
    }
    shown(true);
    // 3. Reported uploaded only once it survives a crash (the daemon's journal relies on it).
    try {
      await staged.durable();
    } catch (e) {
      return fail(info, asNarpushError(e, info));
    }
    const seconds = (performance.now() - t0) / 1000;
    uploaded.push({ info, nar, seconds });
    emit({ type: 'uploaded', info, nar, seconds });
  };

  /** Step 1b: the listing, before the narinfo is staged; the NAR record keeps only whether it was written. */
  const writeListing = async (info: PathInfo, nar: UploadedNar): Promise<UploadedNar> => {
    if (!Buffer.isBuffer(nar.listing)) return nar;
    await backend.putBytes(listingKey(info.path), nar.listing, LISTING_CONTENT_TYPE);
    return { ...nar, listing: 'written' };
  };

  const narInfoBody = async (info: PathInfo, nar: UploadedNar): Promise<Buffer> =>
    Buffer.from(formatNarInfo(await makeNarInfo(info, nar, opts.signingKeys, sign)));

  /** A large path: its NAR streamed, then its narinfo. */
  const upload = async (u: Upload): Promise<void> => {
    const { info } = u;
    const t0 = performance.now();
    // 1. The NAR, complete and durable; then the narinfo, written and durable
    // but not visible (off the chain of references, in parallel).
    let nar: UploadedNar;
    let staged: StagedObject;
    try {
      ({ nar, staged } = await jobs(async () => {
        opts.signal?.throwIfAborted();
        emit({ type: 'started', info });
        const produced = await uploadNar(backend, info, {
          compression: planner.compression(info.narSize),
          threads: opts.threads,
          ...(opts.listing ? { listing: opts.listing } : {}),
          production: streamed(planner.production(info.narSize)),
          ...(opts.signal ? { signal: opts.signal } : {}),
          onProgress: (narBytes, fileBytes) => emit({ type: 'progress', info, narBytes, fileBytes }),
        });
        const done = await writeListing(info, produced);
        return { nar: done, staged: await stageBytes(backend, narInfoKey(info.path), await narInfoBody(info, done), NARINFO_CONTENT_TYPE) };
      }));
    } catch (e) {
      u.shown(false);
      return fail(info, failure(e, info));
    }
    await show(u, nar, staged, t0);
  };

  /** Small paths: step 1 for the whole batch, then each path is shown on its own. */
  const uploadBatch = async (batch: readonly Upload[]): Promise<void> => {
    const t0 = performance.now();
    let done: PromiseSettledResult<{ nar: UploadedNar; staged: StagedObject }>[];
    try {
      done = await batches(async () => {
        opts.signal?.throwIfAborted();
        for (const { info } of batch) emit({ type: 'started', info });
        const nars = await uploadSmallNars(
          backend,
          batch.map((u) => u.info),
          { compression: opts.compression, ...(opts.listing ? { listing: opts.listing } : {}), ...(opts.signal ? { signal: opts.signal } : {}) },
        );
        // Asked for in one tick: the crypto thread gets the batch's signatures in one message.
        // Each listing is written beside its signature, and both before the narinfo is staged.
        const listed: UploadedNar[] = [];
        const bodies = await Promise.allSettled(
          nars.map(async (n, k) => {
            if (n.status === 'rejected') throw n.reason;
            const info = batch[k]!.info;
            emit({ type: 'progress', info, narBytes: n.value.narSize, fileBytes: n.value.fileSize });
            const [nar, body] = await Promise.all([writeListing(info, n.value), narInfoBody(info, n.value)]);
            listed[k] = nar;
            return body;
          }),
        );
        const ok = batch.flatMap((u, k) => (bodies[k]!.status === 'fulfilled' ? [k] : []));
        const staged = await stageBatch(
          backend,
          ok.map((k) => ({
            key: narInfoKey(batch[k]!.info.path),
            body: (bodies[k] as PromiseFulfilledResult<Buffer>).value,
            contentType: NARINFO_CONTENT_TYPE,
          })),
        );
        // `staged` follows `ok`: one entry for each path that got this far.
        let j = 0;
        return bodies.map((b, k): PromiseSettledResult<{ nar: UploadedNar; staged: StagedObject }> => {
          if (b.status === 'rejected') return b;
          const s = staged[j++]!;
          if (s.status === 'rejected') return s;
          return { status: 'fulfilled', value: { nar: listed[k]!, staged: s.value } };
        });
      });
    } catch (e) {
      for (const u of batch) {
        u.shown(false);
        fail(u.info, failure(e, u.info));
      }
      return;
    }
    await Promise.all(
      batch.map((u, k) => {
        const r = done[k]!;
        if (r.status === 'fulfilled') return show(u, r.value.nar, r.value.staged, t0);
        u.shown(false);
        fail(u.info, failure(r.reason, u.info));
        return undefined;
      }),
    );
  };

  const running: Promise<void>[] = [];
  let batch: Upload[] = [];
  let batchBytes = 0;
  for (const info of toUpload) {
    let shown!: (ok: boolean) => void;
    visible.set(info.path.baseName, new Promise<boolean>((resolve) => (shown = resolve)));
    if (planner.production(info.narSize) !== 'memory') {
      running.push(upload({ info, shown }));
      continue;
    }
    if (batch.length > 0 && (batch.length >= batchPaths || batchBytes + info.narSize > SMALL_BATCH_BYTES)) {
      running.push(uploadBatch(batch));
      batch = [];
      batchBytes = 0;
    }
    batch.push({ info, shown });
    batchBytes += info.narSize;
  }
  if (batch.length > 0) running.push(uploadBatch(batch));
  // `upload` and `uploadBatch` record every failure themselves: a rejection here is a bug, raised once all have settled.
  for (const r of await Promise.allSettled(running)) if (r.status === 'rejected') throw r.reason;
  return { uploaded, skipped, upstream, wouldUpload: [], failed, seconds: (performance.now() - started) / 1000 };
}
