/**
 * The NAR of a path on disk, as `nix-store --dump` writes it: the walker
 * (walk.ts) piped into the encoder (encode.ts). This is the entry point the
 * CLI and the upload pipeline use; it streams, so memory stays constant
 * whatever the size of the tree, and reading stops when the consumer does.
 * It never resolves store paths or symlinks: callers decide what to dump.
 */
import { Readable } from 'node:stream';
import { encodeNar, type EncodeOptions } from './encode.js';
import { walkNar, type WalkOptions } from './walk.js';

export type DumpOptions = WalkOptions & EncodeOptions;

/**
 * The NAR bytes of `fsPath` (a symlink is dumped as a symlink, not followed).
 * With `reuseBuffers`, each chunk is valid only until the next is requested.
 */
export function dumpNar(fsPath: string | Buffer, opts: DumpOptions = {}): AsyncGenerator<Buffer, void, undefined> {
  return encodeNar(walkNar(fsPath, opts), opts);
}

/** The same bytes as a Node Readable (fresh buffers, so any consumer may keep them). */
export function narStream(fsPath: string | Buffer, opts: Omit<DumpOptions, 'reuseBuffers'> = {}): Readable {
  return Readable.from(dumpNar(fsPath, { ...opts, reuseBuffers: false }), { objectMode: false, highWaterMark: 1 << 20 });
}
