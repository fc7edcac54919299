/**
 * The compressors narpush writes NARs with: xz (Nix's default; liblzma's
 * multi-threaded encoder), zstd, and none. Each is a Transform stream, so the
 * pipeline can hash the bytes as they stream past; nothing here buffers a
 * whole NAR. The native bindings are imported lazily: a command that does not
 * compress never loads them.
 */
import { PassThrough, type Transform } from 'node:stream';
import { availableParallelism } from 'node:os';
import { NarpushError } from '../errors.js';

export type Compression = 'xz' | 'zstd' | 'none';

export const COMPRESSIONS: readonly Compression[] = ['xz', 'zstd', 'none'];

export interface CompressionOptions {
  readonly method: Compression;
  /** xz: preset 0-9 (default 6, as Nix); zstd: level 1-22 (default 3, as Nix). */
  readonly level?: number;
  /** Encoder threads for one stream; default one per core. */
  readonly threads?: number;
  /** xz multi-threaded block size in bytes: smaller blocks use more cores on small NARs. */
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

/** A fresh compressing Transform stream. */
export async function createCompressor(opts: CompressionOptions): Promise<Transform> {
  const level = compressionLevel(opts.method, opts.level);
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  switch (opts.method) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'xz': {
      const lzma = (await import('lzma-native')).default;
      return lzma.createCompressor({
        preset: level,
        check: lzma.CHECK_CRC64,
        threads,
        ...(opts.xzBlockSize ? { blockSize: opts.xzBlockSize } : {}),
      });
    }
    case 'zstd': {
      const zstd = await import('zstd-napi');
      // nbWorkers > 0 moves compression off the JavaScript thread into zstd's own workers.
      return new zstd.CompressStream({ compressionLevel: level, nbWorkers: threads, checksumFlag: true });
    }
  }
}

/** A decompressing Transform stream for what narpush writes (and what Nix writes with these methods). */
export async function createDecompressor(method: Compression): Promise<Transform> {
  switch (method) {
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    case 'xz':
      return (await import('lzma-native')).default.createDecompressor();
    case 'zstd':
      return new (await import('zstd-napi')).DecompressStream();
  }
}
