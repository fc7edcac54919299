/**
 * Streaming NAR encoder: events (events.ts) in, Buffer chunks out, exactly
 * the bytes `nix-store --dump` writes for the same tree.
 *
 * Memory is constant whatever the file sizes: small tokens, names and small
 * contents are batched into chunks of about `chunkSize` bytes; large content
 * chunks are passed through without a copy. It is a pull-based async
 * generator, so a consumer that stops reading stops the producer of the
 * events too (the walker only touches the filesystem when pulled).
 *
 * The encoder checks what it is given (order, sorted unique legal names,
 * contents length equal to `size`) and throws NarpushError('BAD_NAR_EVENT')
 * rather than write a NAR that Nix would refuse. It never does I/O itself.
 */
import type { NarEvent, NarEvents, RegularEvent } from './events.js';
import { DEFAULT_CHUNK_SIZE, NarWriter, bad } from './writer.js';

export { DEFAULT_CHUNK_SIZE, NarWriter };

export interface EncodeOptions {
  /** Target size of the chunks made from small pieces (default 256 KiB). Memory stays within a few of these. */
  readonly chunkSize?: number;
  /**
   * Lend chunks instead of giving them away: each chunk is then valid only
   * until the next one is requested, and the encoder reuses two buffers
   * (fresh ones cost a page fault per 4 KiB). For consumers that write or
   * copy each chunk before pulling the next, such as `narpush dump-path`.
   */
  readonly reuseBuffers?: boolean;
}

function isSync<T>(x: Iterable<T> | AsyncIterable<T>): x is Iterable<T> {
  return typeof (x as Iterable<T>)[Symbol.iterator] === 'function';
}

const FED_END = 0;
const FED_OUT = 1;

/**
 * Write events from a synchronous source until a chunk is ready, the source
 * ends, or a file whose contents must be iterated one chunk at a time comes
 * (returned to the caller). This is the hot loop for the walker; it is kept
 * out of the async generator, which V8 optimises poorly and slowly.
 * Contents given as arrays are written at once: their pieces all exist
 * already, so none can be a lent buffer that the next piece overwrites.
 */
function feed(w: NarWriter, it: Iterator<NarEvent>): RegularEvent | typeof FED_END | typeof FED_OUT {
  for (;;) {
    const r = it.next();
    if (r.done === true) return FED_END;
    const ev = r.value;
    if (ev.type !== 'regular') {
      w.write(ev);
    } else if (Array.isArray(ev.contents)) {
      const pieces = ev.contents as readonly Uint8Array[];
      w.beginFile(ev);
      for (let i = 0; i < pieces.length; i++) w.contents(pieces[i]!);
      w.endFile();
    } else {
      return ev;
    }
    if (w.pending) return FED_OUT;
  }
}

/**
 * Encode events into NAR bytes, pulling events only as the chunks are read.
 * Stopping early (break, return) closes the event source.
 */
export async function* encodeNar(events: NarEvents, opts: EncodeOptions = {}): AsyncGenerator<Buffer, void, undefined> {
  const w = new NarWriter(opts.chunkSize, opts.reuseBuffers === true);
  const sync = isSync(events);
  const it = sync ? events[Symbol.iterator]() : events[Symbol.asyncIterator]();
  let exhausted = false;
  try {
    for (;;) {
      let file: RegularEvent;
      if (sync) {
        const fed = feed(w, it as Iterator<NarEvent>);
        if (fed === FED_END) break;
        if (fed === FED_OUT) {
          yield* w.take();
          w.recycle();
          continue;
        }
        file = fed;
      } else {
        const r = await (it as AsyncIterator<NarEvent>).next();
        if (r.done === true) break;
        if (r.value.type !== 'regular') {
          w.write(r.value);
          if (w.pending) {
            yield* w.take();
            w.recycle();
          }
          continue;
        }
        file = r.value;
      }
      // A file whose contents arrive one chunk at a time: hand each on before pulling the next.
      w.beginFile(file);
      const contents = file.contents;
      if (isSync(contents)) {
        for (const chunk of contents) {
          w.contents(chunk);
          if (w.pending) {
            yield* w.take();
            w.recycle();
          }
        }
      } else {
        for await (const chunk of contents) {
          w.contents(chunk);
          if (w.pending) {
            yield* w.take();
            w.recycle();
          }
        }
      }
      w.endFile();
      if (w.pending) {
        yield* w.take();
        w.recycle();
      }
    }
    exhausted = true;
    w.end();
    w.flush();
    yield* w.take();
  } finally {
    if (!exhausted) await it.return?.();
  }
}

/** Encode an in-memory tree's events (contents as sync iterables) into one Buffer. For tests and small NARs. */
export function encodeNarSync(events: Iterable<NarEvent>): Buffer {
  const w = new NarWriter();
  for (const ev of events) {
    if (ev.type !== 'regular') {
      w.write(ev);
      continue;
    }
    if (!isSync(ev.contents)) throw bad('encodeNarSync needs contents as a synchronous iterable');
    w.beginFile(ev);
    for (const chunk of ev.contents) w.contents(chunk);
    w.endFile();
  }
  w.end();
  w.flush();
  return Buffer.concat(w.take());
}
