/**
 * Store paths' NARs into the cache. A large one (`uploadNar`) in one pass:
 * NAR stream -> SHA-256 and size (NarHash, NarSize) -> compressor -> SHA-256
 * and size (FileHash, FileSize) -> backend, with no temporary file and no
 * whole NAR in memory. Small ones (`uploadSmallNars`) in batches, each built
 * in memory.
 *
 * The object's key is derived from the NarHash the store recorded, so it is
 * known before the bytes are read; when the stream ends the computed NarHash
 * is compared with it and, on a mismatch, the body throws before it
 * completes: the backend then aborts the upload and nothing is published.
 */
import { createHash } from 'node:crypto';
import { Readable, pipeline } from 'node:stream';
import { NarpushError } from '../errors.js';
import { type Hash, formatHash } from '../hash/hash.js';
import { nix32Encode } from '../hash/nix32.js';
import { dumpNar, dumpNarSync } from '../nar/dump.js';
import type { StorePath } from '../store/store-path.js';
import { type CacheBackend, stageBatch } from './backend.js';
import type { ThreadPool } from './threads/thread-pool.js';
import {
  type ChunkCompressor,
  type CompressionOptions,
  compressBuffer,
  compressionLevel,
  createChunkCompressor,
  createCompressor,
  narExtension,
} from './compression.js';

export const NAR_CONTENT_TYPE = 'application/x-nix-nar';

export interface NarSource {
  readonly path: StorePath;
  /** What the store recorded: the NAR must hash to this. */
  readonly narHash: Hash;
  readonly narSize: number;
}

export interface UploadedNar {
  /** Key of the compressed NAR, relative to the cache root (the narinfo's URL). */
  readonly url: string;
  readonly compression: CompressionOptions['method'];
  readonly fileHash: Hash;
  readonly fileSize: number;
  readonly narHash: Hash;
  readonly narSize: number;
}

/**
 * NARs up to this size are built in memory, compressed in one call and put in
 * one request: for the many tiny paths of a typical closure, a stream, a
 * compressor thread and a multipart upload per path cost more than the data.
 */
export const SMALL_NAR_BYTES = 512 * 1024;

export interface NarUploadOptions {
  readonly compression: CompressionOptions;
  /** The threads that hash beside this one, or take the NAR's work whole. */
  readonly threads: ThreadPool;
  readonly signal?: AbortSignal;
  /** Called as bytes flow, with totals so far (uncompressed, compressed). */
  readonly onProgress?: (narBytes: number, fileBytes: number) => void;
  /**
   * Do the NAR's CPU work whole on one crypto thread (see threads/nar-job.ts): for
   * an upload of several large NARs, which then take one thread each. Only
   * zstd on one encoder thread does this; otherwise it is ignored.
   */
  readonly wholeOnThread?: boolean;
}

/** Whether `uploadNar` can hand this compression to a crypto thread whole. */
export function canRunWholeOnThread(c: CompressionOptions): boolean {
  return c.method === 'zstd' && (c.threads ?? 1) <= 1;
}

/** The cache key of a NAR: content-addressed by its NarHash, so it is known before streaming. */
export function narKey(narHash: Hash, compression: CompressionOptions['method']): string {
  if (narHash.algo !== 'sha256') {
    throw new NarpushError('BAD_HASH', `NAR hash must be sha256, not ${narHash.algo}`);
  }
  return `nar/${nix32Encode(narHash.digest)}${narExtension(compression)}`;
}

function mismatch(src: NarSource, digest: Buffer, narSize: number): NarpushError {
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

/** Stream one NAR of any size (upload.ts uses it for those above SMALL_NAR_BYTES). */
export async function uploadNar(backend: CacheBackend, src: NarSource, opts: NarUploadOptions): Promise<UploadedNar> {
  const url = narKey(src.narHash, opts.compression.method);
  const whole = opts.wholeOnThread === true && canRunWholeOnThread(opts.compression);
  // Otherwise the work is split: the NAR hash runs on the crypto thread,
  // beside this one (see threads/thread-pool.ts). The file hash stays on this
  // thread (moving it too made the crypto thread the bottleneck).
  // Uncompressed, the file is the NAR: its hash is the NAR hash.
  const narHasher = whole ? undefined : opts.threads.hash('sha256');
  const fileHasher = whole || opts.compression.method === 'none' ? undefined : createHash('sha256');
  let narSize = 0;
  let fileSize = 0;
  let narDigest: Buffer | undefined;
  let fileDigest: Buffer | undefined;

  async function* tappedNar(): AsyncGenerator<Buffer> {
    for await (const chunk of dumpNar(src.path.path)) {
      const wait = narHasher!.update(chunk);
      if (wait) await wait;
      narSize += chunk.length;
      yield chunk;
    }
  }

  // zstd: compressed on this thread by direct calls, from lent buffers (see ChunkCompressor).
  async function* chunkBody(compressor: ChunkCompressor): AsyncGenerator<Buffer> {
    const out = function* (pieces: Buffer[]): Generator<Buffer> {
      for (const piece of pieces) {
        fileHasher!.update(piece);
        fileSize += piece.length;
        opts.onProgress?.(narSize, fileSize);
        yield piece;
      }
    };
    for await (const chunk of dumpNar(src.path.path, { reuseBuffers: true })) {
      // Both calls are done with the lent chunk when they return: the hash copies it, zstd consumes it.
      const wait = narHasher!.update(chunk);
      narSize += chunk.length;
      yield* out(compressor.update(chunk));
      if (wait) await wait;
    }
    yield* out(compressor.end());
    await finish();
  }

  // The NAR must be what the store recorded; only then is the file's hash taken.
  function checkNar(digest: Buffer): void {
    if (narSize !== src.narSize || !digest.equals(src.narHash.digest)) throw mismatch(src, digest, narSize);
    narDigest = digest;
  }

  async function finish(): Promise<void> {
    checkNar(await narHasher!.digest());
    fileDigest = fileHasher ? fileHasher.digest() : narDigest;
  }

  // Whole on a crypto thread: this thread only passes the pieces on.
  async function* threadBody(): AsyncGenerator<Buffer> {
    const job = opts.threads.narJob({ path: src.path.path, level: compressionLevel('zstd', opts.compression.level), narSize: src.narSize });
    try {
      for (;;) {
        const next = await job.next();
        if (next.done === true) {
          const r = next.value;
          narSize = r.narSize;
          fileSize = r.fileSize;
          checkNar(Buffer.from(r.narDigest));
          fileDigest = Buffer.from(r.fileDigest);
          return;
        }
        fileSize += next.value.bytes.length;
        opts.onProgress?.(next.value.narBytes, fileSize);
        yield next.value.bytes;
      }
    } finally {
      // Cancels the job when the upload stopped first; nothing otherwise.
      await job.return(undefined as never);
    }
  }

  async function* body(): AsyncGenerator<Buffer> {
    if (whole) {
      yield* threadBody();
      return;
    }
    const direct = await createChunkCompressor(opts.compression, src.narSize);
    if (direct) {
      yield* chunkBody(direct);
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

  try {
    await backend.putStream(url, body(), NAR_CONTENT_TYPE, {
      sizeHint: src.narSize,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } finally {
    narHasher?.drop();
  }
  return {
    url,
    compression: opts.compression.method,
    fileHash: { algo: 'sha256', digest: fileDigest! },
    fileSize,
    narHash: src.narHash,
    narSize,
  };
}

/**
 * Small NARs (each at most SMALL_NAR_BYTES) as one batch: each is built in
 * memory and checked against the store's record (nothing is sent for one
 * that does not match: a path that grew is not even read whole), compressed
 * in one call, and then all are staged together (see `stageBatch`) and
 * published. Each NAR succeeds or fails alone: one result per source, in
 * order. Throws only when `signal` aborts before anything is sent.
 */
export async function uploadSmallNars(
  backend: CacheBackend,
  srcs: readonly NarSource[],
  opts: Pick<NarUploadOptions, 'compression' | 'signal'>,
): Promise<PromiseSettledResult<UploadedNar>[]> {
  const results: PromiseSettledResult<UploadedNar>[] = new Array(srcs.length);
  const built: { i: number; url: string; nar: Buffer }[] = [];
  for (const [i, src] of srcs.entries()) {
    try {
      const url = narKey(src.narHash, opts.compression.method);
      const nar = dumpNarSync(src.path.path, src.narSize);
      if (nar === undefined) throw grown(src);
      const digest = createHash('sha256').update(nar).digest();
      if (nar.length !== src.narSize || !digest.equals(src.narHash.digest)) throw mismatch(src, digest, nar.length);
      built.push({ i, url, nar });
    } catch (e) {
      results[i] = { status: 'rejected', reason: e };
    }
  }
  opts.signal?.throwIfAborted();
  const compressed = await Promise.allSettled(built.map((b) => compressBuffer(opts.compression, b.nar)));
  const ready: { i: number; nar: UploadedNar; file: Buffer }[] = [];
  for (const [k, c] of compressed.entries()) {
    const { i, url, nar } = built[k]!;
    if (c.status === 'rejected') {
      results[i] = c;
      continue;
    }
    const file = c.value;
    ready.push({
      i,
      file,
      nar: {
        url,
        compression: opts.compression.method,
        fileHash: { algo: 'sha256', digest: createHash('sha256').update(file).digest() },
        fileSize: file.length,
        narHash: srcs[i]!.narHash,
        narSize: nar.length,
      },
    });
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
