/**
 * Step 1 of each path's upload, before anything about it is shown: its NAR
 * written, complete and durable; then its listing (`<hashpart>.ls`, with
 * `listing`) written; then its narinfo signed and staged (written, not
 * shown: showing it is the publisher's decision, publisher.ts). For one large
 * path (its NAR streamed, nar-upload.ts `uploadNar`) or a batch of small
 * ones (built in memory, written together, signed together, staged together;
 * each still succeeds or fails alone). Never stages a narinfo whose NAR or
 * listing failed, never shows one.
 */
import type { NarInfo } from '../narinfo/narinfo.js';
import { formatNarInfo } from '../narinfo/narinfo.js';
import type { SecretKey } from '../signing/keys.js';
import { signNarInfoWith } from '../signing/sign.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import { type CacheBackend, type SmallObject, stageBatch, stageBytes } from './backend.js';
import type { CompressionOptions } from './compression.js';
import { type MetadataCompression, encodeContent } from './content-encoding.js';
import type { ListingOptions } from './nar-producers.js';
import { type UploadedNar, uploadNar, uploadSmallNars } from './nar-upload.js';
import { type UploadPlanner, streamed } from './plan.js';
import type { StagedPath } from './publisher.js';
import type { ThreadPool } from './threads/thread-pool.js';

export const NARINFO_CONTENT_TYPE = 'text/x-nix-narinfo';
/** What Nix 2.8 gives `.ls` listings (uncompressed, as on a file:// cache). */
export const LISTING_CONTENT_TYPE = 'application/json';

export function narInfoKey(path: StorePath): string {
  return `${path.hashPart}.narinfo`;
}

export function listingKey(path: StorePath): string {
  return `${path.hashPart}.ls`;
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
 * s3:// `narinfo-compression` and `ls-compression`: narinfos and listings
 * stored compressed, with that Content-Encoding (none when unset).
 */
export interface MetadataCompressions {
  readonly narinfo?: MetadataCompression;
  readonly listing?: MetadataCompression;
}

/** `body` as stored under `compression`: the bytes and the Content-Encoding that says so. */
async function encoded(body: Buffer, compression: MetadataCompression | undefined): Promise<{ body: Buffer; contentEncoding?: string }> {
  if (compression === undefined || compression === 'none') return { body };
  return { body: await encodeContent(body, compression), contentEncoding: compression };
}

export interface StageContext {
  readonly backend: CacheBackend;
  readonly compression: CompressionOptions;
  readonly listing?: ListingOptions;
  readonly metadataCompression?: MetadataCompressions;
  readonly threads: ThreadPool;
  /** How each NAR is produced, and with which compression: see plan.ts. */
  readonly planner: UploadPlanner;
  readonly signingKeys: readonly SecretKey[];
  readonly sign: Signer;
  readonly signal?: AbortSignal;
  readonly onStarted: (info: PathInfo) => void;
  readonly onProgress: (info: PathInfo, narBytes: number, fileBytes: number) => void;
}

/** The listing, before the narinfo is staged; the NAR record keeps only whether it was written. */
async function writeListing(ctx: StageContext, info: PathInfo, nar: UploadedNar): Promise<UploadedNar> {
  if (!Buffer.isBuffer(nar.listing)) return nar;
  const { body, contentEncoding } = await encoded(nar.listing, ctx.metadataCompression?.listing);
  await ctx.backend.putBytes(listingKey(info.path), body, LISTING_CONTENT_TYPE, contentEncoding === undefined ? undefined : { contentEncoding });
  return { ...nar, listing: 'written' };
}

/** The narinfo of an uploaded path, signed, as the object to stage. */
async function narInfoObject(ctx: StageContext, info: PathInfo, nar: UploadedNar): Promise<SmallObject> {
  const text = Buffer.from(formatNarInfo(await makeNarInfo(info, nar, ctx.signingKeys, ctx.sign)));
  return { key: narInfoKey(info.path), contentType: NARINFO_CONTENT_TYPE, ...(await encoded(text, ctx.metadataCompression?.narinfo)) };
}

/** A large path: its NAR streamed, its listing written, its narinfo staged. Throws if any step fails. */
export async function stageLarge(ctx: StageContext, info: PathInfo): Promise<StagedPath> {
  ctx.signal?.throwIfAborted();
  ctx.onStarted(info);
  const produced = await uploadNar(ctx.backend, info, {
    compression: ctx.planner.compression(info.narSize),
    threads: ctx.threads,
    ...(ctx.listing ? { listing: ctx.listing } : {}),
    production: streamed(ctx.planner.production(info.narSize)),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
    onProgress: (narBytes, fileBytes) => ctx.onProgress(info, narBytes, fileBytes),
  });
  const nar = await writeListing(ctx, info, produced);
  return { nar, staged: await stageBytes(ctx.backend, await narInfoObject(ctx, info, nar)) };
}

/** One path of a batch: its info, how far it got, and its result once known. */
interface BatchItem {
  readonly info: PathInfo;
  nar?: UploadedNar;
  narinfo?: SmallObject;
  result?: PromiseSettledResult<StagedPath>;
}

export interface BatchOutcome {
  readonly info: PathInfo;
  readonly result: PromiseSettledResult<StagedPath>;
}

/**
 * Small paths: their NARs built and written together, then each one's
 * listing and narinfo, the narinfos staged together. Throws only when the
 * whole batch fails; otherwise one outcome per path, in order.
 */
export async function stageSmall(ctx: StageContext, infos: readonly PathInfo[]): Promise<BatchOutcome[]> {
  ctx.signal?.throwIfAborted();
  for (const info of infos) ctx.onStarted(info);
  const items: BatchItem[] = infos.map((info) => ({ info }));
  const nars = await uploadSmallNars(ctx.backend, infos, {
    compression: ctx.compression,
    ...(ctx.listing ? { listing: ctx.listing } : {}),
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  });
  // Asked for in one tick: the crypto thread gets the batch's signatures in one message.
  // Each listing is written beside its signature, and both before the narinfo is staged.
  await Promise.all(
    items.map(async (item, k) => {
      const n = nars[k]!;
      try {
        if (n.status === 'rejected') throw n.reason;
        ctx.onProgress(item.info, n.value.narSize, n.value.fileSize);
        [item.nar, item.narinfo] = await Promise.all([writeListing(ctx, item.info, n.value), narInfoObject(ctx, item.info, n.value)]);
      } catch (e) {
        item.result = { status: 'rejected', reason: e };
      }
    }),
  );
  const ready = items.filter((i) => i.result === undefined);
  const staged = await stageBatch(ctx.backend, ready.map((i) => i.narinfo!));
  // `staged` follows `ready`: one entry for each path that got this far.
  ready.forEach((item, j) => {
    const s = staged[j]!;
    item.result = s.status === 'rejected' ? s : { status: 'fulfilled', value: { nar: item.nar!, staged: s.value } };
  });
  return items.map(({ info, result }) => ({ info, result: result! }));
}
