/**
 * Store paths' NARs into the cache. A large one (`uploadNar`) streams from
 * its producer (nar-producers.ts: split with the crypto thread, inline, or
 * whole on a worker, as plan.ts chose) straight to the backend, with no temporary
 * file and no whole NAR in memory. Small ones (`uploadSmallNars`) are
 * produced in memory and written as a batch.
 *
 * The object's key is derived from the NarHash the store recorded, so it is
 * known before the bytes are read; when the stream ends the computed NarHash
 * is compared with it and, on a mismatch, the body throws before it
 * completes: the backend then aborts the upload and nothing is published.
 */
import { NarpushError } from '../errors.js';
import type { Hash } from '../hash/hash.js';
import { nix32Encode } from '../hash/nix32.js';
import { type CacheBackend, stageBatch } from './backend.js';
import { type CompressionOptions, narExtension } from './compression.js';
import { type ListingOptions, type NarSource, type ProducedNar, produceInMemory, produceInline, produceSplit, produceWhole } from './nar-producers.js';
import type { ThreadPool } from './threads/thread-pool.js';

export const NAR_CONTENT_TYPE = 'application/x-nix-nar';

export interface UploadedNar {
  /** Key of the compressed NAR, relative to the cache root (the narinfo's URL). */
  readonly url: string;
  readonly compression: CompressionOptions['method'];
  readonly fileHash: Hash;
  readonly fileSize: number;
  readonly narHash: Hash;
  readonly narSize: number;
  /**
   * When a listing was asked for: its JSON, not yet written, or 'too-large'
   * (see ListingOptions); 'written' once upload.ts has put it in the cache.
   */
  readonly listing?: Buffer | 'too-large' | 'written';
}

export interface NarUploadOptions {
  readonly compression: CompressionOptions;
  /** List the NAR as it passes (`write-nar-listing`); the caller writes the listing. */
  readonly listing?: ListingOptions;
  /** The threads that hash beside this one, or take the NAR's work whole. */
  readonly threads: ThreadPool;
  /** How the NAR is produced (plan.ts decides; 'whole' needs canProduceWhole). */
  readonly production: 'split' | 'inline' | 'whole';
  readonly signal?: AbortSignal;
  /** Called as bytes flow, with totals so far (uncompressed, compressed). */
  readonly onProgress?: (narBytes: number, fileBytes: number) => void;
}

/** The cache key of a NAR: content-addressed by its NarHash, so it is known before streaming. */
export function narKey(narHash: Hash, compression: CompressionOptions['method']): string {
  if (narHash.algo !== 'sha256') {
    throw new NarpushError('BAD_HASH', `NAR hash must be sha256, not ${narHash.algo}`);
  }
  return `nar/${nix32Encode(narHash.digest)}${narExtension(compression)}`;
}

function uploaded(src: NarSource, url: string, compression: CompressionOptions['method'], produced: ProducedNar): UploadedNar {
  const d = produced.digests();
  return {
    url,
    compression,
    fileHash: { algo: 'sha256', digest: d.fileDigest },
    fileSize: d.fileSize,
    narHash: src.narHash,
    narSize: d.narSize,
    ...(d.listing !== undefined ? { listing: d.listing } : {}),
  };
}

/** Stream one NAR of any size (upload.ts uses it for those above the planner's small size). */
export async function uploadNar(backend: CacheBackend, src: NarSource, opts: NarUploadOptions): Promise<UploadedNar> {
  const url = narKey(src.narHash, opts.compression.method);
  const produce = opts.production === 'whole' ? produceWhole : opts.production === 'inline' ? produceInline : produceSplit;
  const produced = produce(src, {
    compression: opts.compression,
    threads: opts.threads,
    ...(opts.listing ? { listing: opts.listing } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    lendPieces: backend.putStreamCopies === true,
  });
  try {
    await backend.putStream(url, produced.pieces, NAR_CONTENT_TYPE, {
      sizeHint: src.narSize,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(produced.recycle ? { chunkDone: produced.recycle } : {}),
    });
  } finally {
    produced.release();
  }
  return uploaded(src, url, opts.compression.method, produced);
}

/** All the pieces of a producer (one, in memory). */
async function whole(produced: ProducedNar): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const p of produced.pieces) pieces.push(p);
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
}

/**
 * Small NARs as one batch: each is produced in memory and checked against
 * the store's record (nothing is sent for one that does not match: a path
 * that grew is not even read whole), compressed in one call, and then all
 * are staged together (see `stageBatch`) and published. Each NAR succeeds or
 * fails alone: one result per source, in order. Throws only when `signal`
 * aborts before anything is sent.
 */
export async function uploadSmallNars(
  backend: CacheBackend,
  srcs: readonly NarSource[],
  opts: Pick<NarUploadOptions, 'compression' | 'signal' | 'listing'>,
): Promise<PromiseSettledResult<UploadedNar>[]> {
  const results: PromiseSettledResult<UploadedNar>[] = new Array(srcs.length);
  // Each is built here before its compression starts; the compressions overlap.
  const made = await Promise.allSettled(
    srcs.map(async (src) => {
      const url = narKey(src.narHash, opts.compression.method);
      const produced = produceInMemory(src, { compression: opts.compression, ...(opts.listing ? { listing: opts.listing } : {}) });
      const file = await whole(produced);
      return { file, nar: uploaded(src, url, opts.compression.method, produced) };
    }),
  );
  const ready: { i: number; nar: UploadedNar; file: Buffer }[] = [];
  for (const [i, m] of made.entries()) {
    if (m.status === 'rejected') results[i] = m;
    else ready.push({ i, ...m.value });
  }
  opts.signal?.throwIfAborted();
  const staged = await stageBatch(backend, ready.map((r) => ({ key: r.nar.url, body: r.file, contentType: NAR_CONTENT_TYPE })));
  await Promise.all(
    staged.map(async (s, k) => {
      const { i, nar } = ready[k]!;
      try {
        if (s.status === 'rejected') throw s.reason;
        await s.value.publish();
        await s.value.durable();
        results[i] = { status: 'fulfilled', value: nar };
      } catch (e) {
        results[i] = { status: 'rejected', reason: e };
      }
    }),
  );
  return results;
}
