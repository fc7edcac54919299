/**
 * The compressors narpush writes NARs with: xz (Nix's default; see
 * xz-encoder.ts), zstd, and none. Each is a Transform stream, so the
 * pipeline can hash the bytes as they stream past; nothing here buffers a
 * whole NAR. The native bindings are loaded lazily (addons.ts): a command that
 * does not compress never loads them.
 */
import { PassThrough, type Transform } from 'node:stream';
import { availableParallelism } from 'node:os';
import { NarpushError } from '../errors.js';
import { BufferPool } from '../nar/buffer-pool.js';
import { lzmaNative, zstdBinding, zstdNapi } from './addons.js';
import { XzEncoder, xzCompressBuffer } from './xz-encoder.js';

export type Compression = 'xz' | 'zstd' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['xz', 'zstd', 'none'];

export interface CompressionOptions {
  readonly method: Compression;
  /** xz: preset 0-9 (default 6, as Nix); zstd: level 1-22 (default 3, as Nix). */
  readonly level?: number;
  /** Encoder threads for one stream (xz: blocks encoded at once); default one, as in Nix (see createCompressor; always one for NARs under SINGLE_THREAD_BELOW). The bytes never depend on it. */
  readonly threads?: number;
  /** xz block size in bytes (uncompressed); default from the NAR size (see xzBlockSize). */
  readonly xzBlockSize?: number;
}

export const LEVEL_RANGES: Readonly<Record<Compression, { min: number; max: number; fallback: number }>> = {
  xz: { min: 0, max: 9, fallback: 6 },
  zstd: { min: 1, max: 22, fallback: 3 },
  none: { min: 0, max: 0, fallback: 0 },
};

export function parseCompression(s: string): Compression {
  if ((COMPRESSIONS as readonly string[]).includes(s)) return s as Compression;
  throw new NarpushError('BAD_COMPRESSION', `unknown compression '${s}' (use one of: ${COMPRESSIONS.join(', ')})`);
}

/** Validate a level for a method; undefined means the method's default. */
export function compressionLevel(method: Compression, level: number | undefined): number {
  const range = LEVEL_RANGES[method];
  if (level === undefined) return range.fallback;
  if (method === 'none') {
    throw new NarpushError('BAD_COMPRESSION', `--compression-level makes no sense with compression 'none'`);
  }
  if (!Number.isInteger(level) || level < range.min || level > range.max) {
    throw new NarpushError(
      'BAD_COMPRESSION',
      `compression level ${level} is out of range for ${method} (${range.min}-${range.max})`,
    );
  }
  return level;
}

/** The file name extension Nix gives a NAR with this compression. */
export function narExtension(method: Compression): string {
  return method === 'none' ? '.nar' : `.nar.${method === 'xz' ? 'xz' : 'zst'}`;
}

/** Parallel compression on (every core), off (one thread), or the method's default. */
export function compressionThreads(parallel: boolean | undefined): { threads?: number } {
  if (parallel === undefined) return {};
  return { threads: parallel ? availableParallelism() : 1 };
}

/**
 * zstd compresses a NAR from this size in its multithreaded format: the
 * input is cut into jobs of ZSTD_JOB_BYTES, each compressed on one of zstd's
 * own native threads (nbWorkers, at least one), while this JavaScript thread
 * goes on reading and hashing (ZSTD_compressStream2 copies a job's input and
 * returns). No Node thread has to start for it (40-65 ms each here). The
 * format, and so the bytes, depend on the NAR's size and level alone, never
 * on how many workers run: zstd gives the same output for any nbWorkers from
 * 1 (test/cache/compression.test.ts), so the same NAR gives the same object
 * whatever else is uploaded beside it. Measured on two cores, alternating
 * with one thread: a 99 MiB NAR 0.84-0.89x the time; a 13 MiB one 0.95x and
 * 4 MiB ones 1.0-1.08x (each NAR's last job is waited for), where a Node worker
 * thread per NAR does better (plan.ts); 2 MiB jobs cost no ratio measurably
 * (docs/performance.md).
 */
export const ZSTD_ASYNC_FROM = 32 * (1 << 20);
export const ZSTD_JOB_BYTES = 2 * (1 << 20);

/** zstd's threading for a NAR of `sizeHint` bytes: see ZSTD_ASYNC_FROM. */
function zstdThreading(threads: number, sizeHint: number | undefined): { nbWorkers: number; jobSize?: number } {
  if (sizeHint === undefined || sizeHint < ZSTD_ASYNC_FROM) return { nbWorkers: 0 };
  return { nbWorkers: Math.max(1, threads), jobSize: ZSTD_JOB_BYTES };
}

/** Below this size a NAR is compressed on one thread: starting encoder threads costs more than it saves. */
export const SINGLE_THREAD_BELOW = 1 << 20;
const MIB = 1 << 20;
/** xz blocks: at least this large where the NAR allows (smaller ones lose ratio), at most this large (memory: see xzBlockSize). */
export const MIN_XZ_BLOCK = 8 * MIB;
export const MAX_XZ_BLOCK = 32 * MIB;

/**
 * Uncompressed bytes per xz block of a NAR of `narSize` bytes. Blocks are
 * independent, so their encoders can run at once on idle cores (see
 * XzEncoder's maxBlocks); each block starts with an empty dictionary, which
 * costs ratio, so they are as large as a parallel encoder can use: an even
 * number of equal blocks (two cores finish together), each at most
 * MAX_XZ_BLOCK (a block's input waits in memory while it is encoded), and
 * one block for a NAR under twice MIN_XZ_BLOCK. Depends on the size alone,
 * never on the threads: the same NAR always gives the same bytes, whatever
 * else is uploaded beside it (two paths with one NAR share its object).
 */
export function xzBlockSize(narSize: number): number {
  if (narSize < 2 * MIN_XZ_BLOCK) return Math.max(MIB, Math.ceil(narSize / MIB) * MIB);
  let blocks = Math.ceil(narSize / MAX_XZ_BLOCK);
  blocks += blocks % 2;
  return Math.ceil(narSize / blocks / MIB) * MIB;
}

/** Encoder threads for one NAR: one unless `opts.threads` says otherwise, and always one below SINGLE_THREAD_BELOW. */
function encoderThreads(opts: CompressionOptions, sizeHint: number | undefined): number {
  const small = sizeHint !== undefined && sizeHint < SINGLE_THREAD_BELOW;
  return small ? 1 : Math.max(1, opts.threads ?? 1);
}

/**
 * A fresh compressing Transform stream. One thread per NAR unless
 * `opts.threads` says otherwise (Nix's `parallel-compression`): paths
 * compress in parallel anyway. zstd uses its own threads for a NAR from
 * ZSTD_ASYNC_FROM (at least one, `threads` if more), never below. xz is
 * narpush's own encoder (xz-encoder.ts), which skips incompressible data
 * and caps liblzma encoders at one per core; its blocks (xzBlockSize) are
 * encoded up to `threads` at once, which the planner sets from idle cores
 * (plan.ts). `sizeHint` (the NAR size) keeps
 * small NARs on one thread and sizes xz's dictionary and blocks.
 */
export async function createCompressor(opts: CompressionOptions, sizeHint?: number): Promise<Transform> {
  const level = compressionLevel(opts.method, opts.level);
  const threads = encoderThreads(opts, sizeHint);
  switch (opts.method) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'xz': {
      const blockBytes = opts.xzBlockSize ?? (sizeHint !== undefined ? xzBlockSize(sizeHint) : MAX_XZ_BLOCK);
      return new XzEncoder({ preset: level, ...(sizeHint !== undefined ? { sizeHint } : {}), blockBytes, maxBlocks: threads });
    }
    case 'zstd': {
      const zstd = zstdNapi();
      return new zstd.CompressStream({ compressionLevel: level, ...zstdThreading(threads, sizeHint), checksumFlag: true });
    }
  }
}

/**
 * A compressor driven by direct calls instead of a stream: each call
 * consumes all of its input before it returns (so the input may be a lent
 * buffer, reused right after) and returns the compressed bytes finished so
 * far, in pieces of COMPRESSED_PIECE_BYTES (the last one shorter). For a
 * NAR streamed through zstd this saves a Transform's hand-offs, one copy of
 * every input chunk and a fresh output buffer per 128 KiB.
 *
 * A piece given back with `recycle` once its consumer is done with it is
 * filled again instead of a fresh buffer: the kernel zeroes every new page
 * of a fresh one on first touch, which cost a third of zstd's own time
 * (33 ms for the 50 MiB of a 100 MiB NAR's output, docs/performance.md).
 */
export interface ChunkCompressor {
  update(chunk: Uint8Array): Buffer[];
  /** The rest of the output; the compressor is done. */
  end(): Buffer[];
  /**
   * Give back a piece this compressor returned, whose bytes nobody needs any
   * more (see BufferPool: anything else, or a piece given back twice, is
   * ignored).
   */
  recycle(piece: Uint8Array): void;
}

export const COMPRESSED_PIECE_BYTES = 1 << 20;
/** Pieces kept for reuse at most (the file backend has up to 8 MiB of them in flight). */
const RECYCLED_PIECES_MAX = 16;
/**
 * The pieces of every chunk compressor of this thread: a NAR's pieces,
 * given back once written, are filled again by the next NAR's compressor
 * instead of fresh ones (each page of a fresh one faults in: 3.5-4.3 ms of
 * the 24 MiB closure's upload, with a pool per NAR).
 */
const zstdPieces = new BufferPool(COMPRESSED_PIECE_BYTES, RECYCLED_PIECES_MAX);

/**
 * A ChunkCompressor for `opts`, or undefined where only a stream will do
 * (xz, whose encoder works on its own threads; none, which has nothing to
 * do). The output is the same as createCompressor's.
 */
export async function createChunkCompressor(opts: CompressionOptions, sizeHint?: number): Promise<ChunkCompressor | undefined> {
  if (opts.method !== 'zstd') return undefined;
  const threads = encoderThreads(opts, sizeHint);
  const level = compressionLevel('zstd', opts.level);
  const zstd = zstdBinding();
  const { nbWorkers, jobSize } = zstdThreading(threads, sizeHint);
  // One thread's contexts only: a multithreaded one holds zstd's threads and their buffers (9 MiB more, measured).
  const reusable = nbWorkers === 0 && level <= REUSED_CONTEXT_MAX_LEVEL;
  const newContext = (): ZstdContext => {
    const c = new zstd.CCtx();
    c.setParameter(zstd.CParameter.compressionLevel, level);
    c.setParameter(zstd.CParameter.checksumFlag, 1);
    if (nbWorkers > 0) c.setParameter(zstd.CParameter.nbWorkers, nbWorkers);
    if (jobSize !== undefined) c.setParameter(zstd.CParameter.jobSize, jobSize);
    return c;
  };
  const ctx = (reusable ? takeIdleContext(level) : undefined) ?? newContext();
  let ended = false;
  const pool = zstdPieces;
  let out = pool.take();
  let pos = 0;
  const run = (input: Uint8Array, op: number): Buffer[] => {
    // Its context may be another compressor's by now (see giveBackContext).
    if (ended) throw new Error('this zstd compressor has ended');
    const pieces: Buffer[] = [];
    for (;;) {
      const [left, produced, consumed] = ctx.compressStream2(out.subarray(pos), input, op);
      pos += produced;
      if (pos === out.length) {
        pieces.push(out);
        pool.handOut(out, out);
        out = pool.take();
        pos = 0;
      }
      input = input.subarray(consumed);
      // Done once the input is consumed and, when ending, zstd has nothing left to write.
      if (input.length === 0 && (op === zstd.EndDirective.continue || left === 0)) return pieces;
    }
  };
  return {
    update: (chunk) => run(chunk, zstd.EndDirective.continue),
    end: () => {
      const pieces = run(new Uint8Array(0), zstd.EndDirective.end);
      if (pos > 0) {
        const last = out.subarray(0, pos);
        pool.handOut(last, out);
        pieces.push(last);
      }
      ended = true;
      // Only a context whose frame is complete: one left mid-frame (an error, a cancel) is dropped.
      if (reusable) giveBackContext(level, ctx);
      return pieces;
    },
    recycle: (piece) => pool.give(piece),
  };
}

/**
 * zstd contexts of chunk compressors that ended, kept for the next NAR of
 * the same level. A new context faults in its window and tables afresh
 * (about 3 MiB at level 3) for every NAR; a reused one does not. Measured:
 * 1,500 fewer page faults for the 24 MiB closure of the benchmark (its time
 * within the noise), and 1.9% and 2.6% less time for its 103 MiB closure in
 * two alternating runs (docs/performance.md). Kept:
 * single-threaded contexts up to REUSED_CONTEXT_MAX_LEVEL (higher levels
 * hold tens of MiB), at most IDLE_CONTEXTS_MAX, in this JavaScript thread
 * (each worker thread has its own). Reuse changes no byte of the output:
 * a context is reset to a new frame with its parameters kept.
 */
const REUSED_CONTEXT_MAX_LEVEL = 6;
const IDLE_CONTEXTS_MAX = 2;
type ZstdContext = InstanceType<ReturnType<typeof zstdBinding>['CCtx']>;
const idleContexts: { level: number; cctx: ZstdContext }[] = [];

function takeIdleContext(level: number): ZstdContext | undefined {
  const i = idleContexts.findIndex((c) => c.level === level);
  return i < 0 ? undefined : idleContexts.splice(i, 1)[0]!.cctx;
}

function giveBackContext(level: number, cctx: ZstdContext): void {
  cctx.reset(zstdBinding().ResetDirective.sessionOnly);
  idleContexts.push({ level, cctx });
  if (idleContexts.length > IDLE_CONTEXTS_MAX) idleContexts.shift();
}

/** A decompressing Transform stream for what narpush writes (and what Nix writes with these methods). */
export async function createDecompressor(method: Compression): Promise<Transform> {
  switch (method) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'xz':
      return lzmaNative().createDecompressor();
    case 'zstd':
      return new (zstdNapi().DecompressStream)();
  }
}

// A zstd context is costly to make and cheap to reuse; one per level, used one call at a time (calls are synchronous).
// Driven through zstd-napi's binding, not its Compressor class: the package's
// index also loads node:assert and its stream classes (about 5 ms of a small
// job's start-up) for nothing a one-shot call needs.
const zstdContexts = new Map<number, ZstdContext>();
// Where a NAR is compressed before its bytes are copied out: one buffer, grown to the largest bound seen.
let zstdScratch: Buffer | undefined;
const ZSTD_SCRATCH_MAX = 1 << 20;

/**
 * Compress a whole (small) buffer in one call: for NARs small enough to hold
 * in memory, this avoids a stream and an encoder thread per path. The output
 * is an ordinary xz or zstd file, readable by the same decompressors.
 */
export async function compressBuffer(opts: CompressionOptions, data: Buffer): Promise<Buffer> {
  const level = compressionLevel(opts.method, opts.level);
  switch (opts.method) {
    case 'none':
      return data;
    case 'xz':
      return xzCompressBuffer(data, level);
    case 'zstd': {
      const zstd = zstdBinding();
      let ctx = zstdContexts.get(level);
      if (!ctx) {
        ctx = new zstd.CCtx();
        ctx.setParameter(zstd.CParameter.compressionLevel, level);
        ctx.setParameter(zstd.CParameter.checksumFlag, 1);
        zstdContexts.set(level, ctx);
      }
      const bound = zstd.compressBound(data.length);
      if (bound > ZSTD_SCRATCH_MAX) {
        const dest = Buffer.allocUnsafe(bound);
        return dest.subarray(0, ctx.compress2(dest, data));
      }
      if (!zstdScratch || zstdScratch.length < bound) zstdScratch = Buffer.allocUnsafeSlow(bound);
      return Buffer.from(zstdScratch.subarray(0, ctx.compress2(zstdScratch, data)));
    }
  }
}
