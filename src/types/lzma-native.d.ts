// The parts of lzma-native (which ships no types) that narpush uses.
declare module 'lzma-native' {
  import type { Transform } from 'node:stream';

  export interface LzmaOptions {
    /** 0 (fastest) to 9; may be OR'ed with PRESET_EXTREME. */
    preset?: number;
    /** liblzma's multi-threaded encoder with this many threads; 0 means one per core. */
    threads?: number;
    /** Maximum uncompressed bytes per block in multi-threaded mode. */
    blockSize?: number;
    check?: number;
    /** Run on the libuv thread pool (the default) rather than the calling thread. */
    synchronous?: boolean;
  }

  export function createCompressor(options?: LzmaOptions): Transform;
  export function createDecompressor(options?: { synchronous?: boolean }): Transform;
  /** liblzma's raw encoder: bare LZMA2 data, no container (xz-encoder.ts writes that). */
  export function createStream(coder: 'rawEncoder', options: { filters: { id: string; options: Record<string, number> }[] }): Transform;
  export const FILTER_LZMA2: string;
  export const CHECK_CRC64: number;
  export const PRESET_EXTREME: number;
  const lzma: {
    createCompressor: typeof createCompressor;
    createDecompressor: typeof createDecompressor;
    createStream: typeof createStream;
    FILTER_LZMA2: string;
    CHECK_CRC64: number;
    PRESET_EXTREME: number;
  };
  export default lzma;
}
