/**
 * The NAR of a path on disk, as `nix-store --dump` writes it: the walker
 * (walk.ts) piped into the encoder (encode.ts). This is the entry point the
 * CLI and the upload pipeline use; it streams, so memory stays constant
 * whatever the size of the tree, and reading stops when the consumer does.
 * It never resolves store paths or symlinks: callers decide what to dump.
 */
import { Readable } from 'node:stream';
import { encodeNar, NarWriter, type EncodeOptions } from './encode.js';
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

/**
 * The NAR of a small tree in one Buffer, built synchronously: every file is
 * read in one call and the bytes go into one buffer, with no generator or
 * promise per chunk (the pipeline's path for the many tiny paths of a
 * closure). Returns undefined when the NAR is larger than `maxBytes`; once
 * the files alone are larger, without reading further.
 */
export function dumpNarSync(fsPath: string | Buffer, maxBytes: number): Buffer | undefined {
  // One batch of maxBytes (plus a token's worth); larger contents are kept as read, not copied.
  const w = new NarWriter(maxBytes + 1024);
  let files = 0;
  for (const ev of walkNar(fsPath, { smallFileSize: maxBytes })) {
    if (ev.type === 'regular') {
      files += ev.size;
      // Larger files' contents are read lazily; they do not fit anyway.
      if (files > maxBytes || !Array.isArray(ev.contents)) return undefined;
      w.beginFile(ev);
      for (const piece of ev.contents as readonly Uint8Array[]) w.contents(piece);
      w.endFile();
    } else {
      w.write(ev);
    }
  }
  w.end();
  w.flush();
  const out = w.take();
  const nar = out.length === 1 ? out[0]! : Buffer.concat(out);
  return nar.length > maxBytes ? undefined : nar;
}
