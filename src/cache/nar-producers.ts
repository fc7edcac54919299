/**
 * The ways a store path's NAR becomes compressed bytes and digests, behind
 * one interface (ProducedNar); plan.ts picks one per path:
 *  - in memory (`produceInMemory`): the NAR built whole, checked, then
 *    compressed in one call. For small NARs, where a stream and a thread
 *    cost more than the data.
 *  - split (`produceSplit`): streamed; the NAR hash runs on the crypto
 *    thread beside this one, which reads, compresses and hashes the
 *    compressed bytes. For one large NAR: two cores on it finish it sooner.
 *  - inline (`produceInline`): streamed as split, with the NAR hash on this
 *    thread too. For one large NAR where SHA-256 is fast (SHA extensions):
 *    handing the bytes over would cost more than hashing them.
 *  - whole (`produceWhole`): streamed from a worker thread that does all
 *    the CPU work (threads/nar-job.ts); this thread only passes the pieces
 *    on. For several large NARs, one per core.
 * Every producer gives the same bytes and digests for the same NAR and
 * compression (test/cache/nar-producers.test.ts), and none holds more than a
 * small NAR in memory. Asked for one (`listing`), each also lists the NAR
 * (nar/listing.ts) from the same bytes as they pass: the path is read once.
 *
 * The NAR must be what the store recorded: a producer throws
 * NAR_HASH_MISMATCH from `pieces` before its last piece is consumed, so the
 * backend aborts the object instead of publishing it.
 */
import { createHash } from 'node:crypto';
import { Readable, pipeline } from 'node:stream';
import { NarpushError } from '../errors.js';
import { type Hash, formatHash } from '../hash/hash.js';
import { BufferPool } from '../nar/buffer-pool.js';
import { dumpNar, dumpNarSync } from '../nar/dump.js';
import { NarLister, listNar } from '../nar/listing.js';
import { DEFAULT_READ_CHUNK_SIZE } from '../nar/walk.js';
import type { StorePath } from '../store/store-path.js';
import {
  type ChunkCompressor,
  type CompressionOptions,
  compressBuffer,
  compressionLevel,
  createChunkCompressor,
  createCompressor,
} from './compression.js';
import type { ThreadPool } from './threads/thread-pool.js';

/** Chunks of a NAR read uncompressed kept for reading into again (the file backend has up to 8 MiB of them in flight). */
const RECYCLED_CHUNKS_MAX = 8;

export interface NarSource {
  readonly path: StorePath;
  /** What the store recorded: the NAR must hash to this. */
  readonly narHash: Hash;
  readonly narSize: number;
}

export interface NarDigests {
  /** SHA-256 of the NAR, equal to the store's record. */
  readonly narDigest: Buffer;
  readonly narSize: number;
  /** SHA-256 of the compressed file. */
  readonly fileDigest: Buffer;
  readonly fileSize: number;
  /**
   * When a listing was asked for: the `.ls` JSON, or 'too-large' when it was
   * longer than the cap (ListingOptions.maxBytes) and was given up.
   */
  readonly listing?: Buffer | 'too-large';
}

/** One NAR being produced. */
export interface ProducedNar {
  /**
   * The compressed pieces, in order, each the consumer's to keep (unless
   * ProduceOptions.lendPieces: then only until it asks for the next). Throws
   * (before the last piece ends) when the NAR is not what the store
   * recorded or the work failed; returning early cancels the work.
   */
  readonly pieces: AsyncIterable<Buffer>;
  /** Once `pieces` has ended: the digests. */
  digests(): NarDigests;
  /** Let go of what the work holds (a thread's hash); harmless once it ended. */
  release(): void;
  /**
   * Where a producer can fill a piece's memory again: give the piece back
   * once the consumer is done with it (see ChunkCompressor.recycle). A
   * consumer that lends (ProduceOptions.lendPieces) need not: the producer
   * takes each piece back when the next is asked for.
   */
  readonly recycle?: (piece: Uint8Array) => void;
}

/** A NAR listing to build beside the NAR (`write-nar-listing`). */
export interface ListingOptions {
  /** Listings longer than this are given up (nar/listing.ts MAX_LISTING_BYTES). */
  readonly maxBytes: number;
}

export interface ProduceOptions {
  readonly compression: CompressionOptions;
  readonly listing?: ListingOptions;
  /** Called as bytes flow, with totals so far (uncompressed, compressed). */
  readonly onProgress?: (narBytes: number, fileBytes: number) => void;
  /**
   * The consumer is done with each piece before it asks for the next
   * (CacheBackend.putStreamCopies): uncompressed pieces may then be the NAR
   * reader's reused buffers rather than fresh ones. Streamed producers only.
   */
  readonly lendPieces?: boolean;
}

/** Whether `produceWhole` can take this compression (zstd on one encoder thread is what a NAR job runs). */
export function canProduceWhole(c: CompressionOptions): boolean {
  return c.method === 'zstd' && (c.threads ?? 1) <= 1;
}

export function narMismatch(src: NarSource, digest: Buffer, narSize: number): NarpushError {
  return new NarpushError(
    'NAR_HASH_MISMATCH',
    `path '${src.path.path}' is corrupted: its NAR has hash ${formatHash({ algo: 'sha256', digest })} and ` +
      `size ${narSize}, but the store recorded ${formatHash(src.narHash)} and size ${src.narSize} ` +
      `(run 'nix-store --verify-path ${src.path.path}' or 'nix-store --repair-path')`,
  );
}

function grown(src: NarSource): NarpushError {
  return new NarpushError(
    'NAR_HASH_MISMATCH',
    `path '${src.path.path}' is corrupted: its NAR is larger than the ${src.narSize} bytes the store recorded ` +
      `(run 'nix-store --verify-path ${src.path.path}' or 'nix-store --repair-path')`,
  );
}

/** The digests of a NAR once its hash is known: checked against the store's record. */
function checked(
  src: NarSource,
  narDigest: Buffer,
  narSize: number,
  fileDigest: Buffer,
  fileSize: number,
  listing: Buffer | 'too-large' | undefined,
): NarDigests {
  if (narSize !== src.narSize || !narDigest.equals(src.narHash.digest)) throw narMismatch(src, narDigest, narSize);
  return { narDigest, narSize, fileDigest, fileSize, ...(listing !== undefined ? { listing } : {}) };
}

/** The lister's result as NarDigests carries it. */
function listed(lister: NarLister | undefined): Buffer | 'too-large' | undefined {
  return lister === undefined ? undefined : (lister.finish() ?? 'too-large');
}

function ended(digests: NarDigests | undefined): NarDigests {
  if (!digests) throw new NarpushError('UPLOAD_FAILED', 'the NAR was not produced to its end');
  return digests;
}

/**
 * Built in memory: at most the store's NarSize is read (a path that grew is
 * not read whole), checked, then compressed in one call; one piece.
 */
export function produceInMemory(src: NarSource, opts: ProduceOptions): ProducedNar {
  let digests: NarDigests | undefined;
  async function* pieces(): AsyncGenerator<Buffer> {
    const nar = dumpNarSync(src.path.path, src.narSize);
    if (nar === undefined) throw grown(src);
    const narDigest = createHash('sha256').update(nar).digest();
    if (nar.length !== src.narSize || !narDigest.equals(src.narHash.digest)) throw narMismatch(src, narDigest, nar.length);
    const listing = opts.listing ? (listNar(nar, opts.listing.maxBytes) ?? 'too-large') : undefined;
    const file = await compressBuffer(opts.compression, nar);
    digests = {
      narDigest,
      narSize: nar.length,
      fileDigest: createHash('sha256').update(file).digest(),
      fileSize: file.length,
      ...(listing !== undefined ? { listing } : {}),
    };
    opts.onProgress?.(nar.length, file.length);
    yield file;
  }
  return { pieces: pieces(), digests: () => ended(digests), release: () => {} };
}

/**
 * Split with the crypto thread: it hashes the NAR; this thread reads,
 * compresses and hashes the compressed bytes (moving that hash too would
 * make the crypto thread the bottleneck). Uncompressed, the file is the
 * NAR: its hash is the NAR hash.
 */
export function produceSplit(src: NarSource, opts: ProduceOptions & { readonly threads: ThreadPool }): ProducedNar {
  return produceStreamed(src, opts, opts.threads.hash('sha256'));
}

/**
 * Streamed like `produceSplit`, with the NAR hash on this thread too: where
 * SHA-256 is fast (SHA extensions), hashing costs this thread less than
 * copying the bytes to another one (see hash/hash-speed.ts), and no thread
 * has to start.
 */
export function produceInline(src: NarSource, opts: ProduceOptions): ProducedNar {
  const h = createHash('sha256');
  return produceStreamed(src, opts, {
    update: (chunk) => void h.update(chunk),
    digest: async () => h.digest(),
    drop: () => {},
  });
}

/** The NAR hash of a streamed producer: on a thread (BackgroundHash) or here. */
interface NarHasher {
  /** A promise to wait on before the next update, when the hasher is behind. */
  update(chunk: Uint8Array): Promise<void> | undefined;
  digest(): Promise<Buffer>;
  drop(): void;
}

function produceStreamed(src: NarSource, opts: ProduceOptions, narHasher: NarHasher): ProducedNar {
  const fileHasher = opts.compression.method === 'none' ? undefined : createHash('sha256');
  const lister = opts.listing ? new NarLister(opts.listing.maxBytes) : undefined;
  let narSize = 0;
  let fileSize = 0;
  let digests: NarDigests | undefined;

  async function finish(): Promise<void> {
    const narDigest = await narHasher.digest();
    const fileDigest = fileHasher ? fileHasher.digest() : narDigest;
    digests = checked(src, narDigest, narSize, fileDigest, fileSize, listed(lister));
  }

  // Lent chunks are valid until the next is asked for: the hashers and the lister copy what they keep before that.
  async function* tappedNar(lend = false, pool?: BufferPool): AsyncGenerator<Buffer> {
    for await (const chunk of dumpNar(src.path.path, lend ? { reuseBuffers: true } : pool ? { pool } : {})) {
      const wait = narHasher.update(chunk);
      lister?.update(chunk);
      if (wait) await wait;
      narSize += chunk.length;
      yield chunk;
    }
  }

  // zstd: compressed on this thread by direct calls, from lent buffers (see ChunkCompressor).
  async function* chunkPieces(compressor: ChunkCompressor): AsyncGenerator<Buffer> {
    recycler = compressor;
    const out = function* (pieces: Buffer[]): Generator<Buffer> {
      for (const piece of pieces) {
        fileHasher!.update(piece);
        fileSize += piece.length;
        opts.onProgress?.(narSize, fileSize);
        yield piece;
        // The consumer asked for the next piece: one that lends is done with this one.
        if (opts.lendPieces === true) compressor.recycle(piece);
      }
    };
    for await (const chunk of dumpNar(src.path.path, { reuseBuffers: true })) {
      // These calls are done with the lent chunk when they return: the hash copies it, zstd consumes it, the lister copies what it keeps.
      const wait = narHasher.update(chunk);
      lister?.update(chunk);
      narSize += chunk.length;
      yield* out(compressor.update(chunk));
      if (wait) await wait;
    }
    yield* out(compressor.end());
    await finish();
  }

  // Uncompressed, the pieces are the NAR's own chunks: no stream to pass them through. Fresh buffers, the
  // consumer's to keep, unless it copies them anyway (lendPieces): then the reader's reused ones, not copied twice.
  async function* narPieces(): AsyncGenerator<Buffer> {
    // A consumer that does not lend may give the file contents' chunks back (ProducedNar.recycle) to be read into again.
    const pool = opts.lendPieces === true ? undefined : new BufferPool(DEFAULT_READ_CHUNK_SIZE, RECYCLED_CHUNKS_MAX);
    recycler = pool && { recycle: (piece) => pool.give(piece) };
    for await (const chunk of tappedNar(opts.lendPieces === true, pool)) {
      fileSize += chunk.length;
      opts.onProgress?.(narSize, fileSize);
      yield chunk;
    }
    await finish();
  }

  async function* pieces(): AsyncGenerator<Buffer> {
    if (opts.compression.method === 'none') {
      yield* narPieces();
      return;
    }
    const direct = await createChunkCompressor(opts.compression, src.narSize);
    if (direct) {
      yield* chunkPieces(direct);
      return;
    }
    const compressor = await createCompressor(opts.compression, src.narSize);
    // Errors anywhere in the chain destroy `compressed` with that error, so
    // the loop below throws it and the backend aborts the upload.
    const compressed = pipeline(Readable.from(tappedNar(), { objectMode: false }), compressor, () => {});
    for await (const chunk of compressed as AsyncIterable<Buffer>) {
      fileHasher?.update(chunk);
      fileSize += chunk.length;
      opts.onProgress?.(narSize, fileSize);
      yield chunk;
    }
    await finish();
  }

  let recycler: Pick<ChunkCompressor, 'recycle'> | undefined;
  return {
    pieces: pieces(),
    digests: () => ended(digests),
    release: () => narHasher.drop(),
    recycle: (piece) => recycler?.recycle(piece),
  };
}

/** Whole on a worker thread (see canProduceWhole): this thread only passes the pieces on. */
export function produceWhole(src: NarSource, opts: ProduceOptions & { readonly threads: ThreadPool }): ProducedNar {
  let fileSize = 0;
  let digests: NarDigests | undefined;
  async function* pieces(): AsyncGenerator<Buffer> {
    const job = opts.threads.narJob({
      path: src.path.path,
      level: compressionLevel('zstd', opts.compression.level),
      narSize: src.narSize,
      ...(opts.listing ? { listingMaxBytes: opts.listing.maxBytes } : {}),
    });
    try {
      for (;;) {
        const next = await job.next();
        if (next.done === true) {
          const r = next.value;
          const listing = r.listing === undefined ? undefined : r.listing === null ? 'too-large' : Buffer.from(r.listing);
          digests = checked(src, Buffer.from(r.narDigest), r.narSize, Buffer.from(r.fileDigest), r.fileSize, listing);
          return;
        }
        fileSize += next.value.bytes.length;
        opts.onProgress?.(next.value.narBytes, fileSize);
        yield next.value.bytes;
      }
    } finally {
      // Cancels the job when the consumer stopped first; nothing otherwise.
      await job.return(undefined as never);
    }
  }
  return { pieces: pieces(), digests: () => ended(digests), release: () => {} };
}
