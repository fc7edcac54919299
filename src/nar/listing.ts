/**
 * A NAR's listing (`<hashpart>.ls` in a binary cache), built from the NAR's
 * bytes as they pass: push chunks in (split anywhere, lent or not), get
 * the JSON out at the end. What `nix copy --to '…?write-nar-listing=true'`
 * (Nix 2.8, nar-accessor.cc listNar with libutil/json.cc) writes, byte for
 * byte:
 *
 *   {"version":1,"root":NODE}
 *   NODE = {"type":"regular","size":N[,"executable":true],"narOffset":OFFSET}
 *        | {"type":"symlink","target":"…"}
 *        | {"type":"directory","entries":{"NAME":NODE,…}}
 *
 * keys in that order, entries in the NAR's (byte) order, no spaces.
 * `narOffset` is where the file's contents start in the uncompressed NAR.
 * Strings are escaped as Nix 2.8 escapes them: `"` and `\`, `\n` `\r` `\t`,
 * other bytes below 0x20 as `\u00xx`; every other byte, including bytes
 * that are not UTF-8, is copied as it is (so such a listing is not valid
 * UTF-8: Nix wrote it that way, and Nix reads it back).
 *
 * Memory: the JSON (about 60 bytes per entry) and at most one name or
 * target; file contents are counted, never kept. A listing longer than
 * `maxBytes` is given up (`finish` returns undefined) rather than grown
 * without bound. Pure: no I/O. A NAR outside the grammar throws BAD_NAR;
 * the order and legality of names are the encoder's and the strict
 * decoder's business, not checked again here.
 */
import { NarpushError } from '../errors.js';
import { MAX_DEPTH, MAX_NAME_LENGTH, MAX_TARGET_LENGTH, MAX_WORD_LENGTH, WORDS, padLength, readU64 } from './wire.js';

/** Listings longer than this are not written (about a million entries). */
export const MAX_LISTING_BYTES = 64 << 20;

/** What the grammar asks of the driver: `n` bytes to read, or to skip (file contents). */
interface Want {
  readonly n: number;
  readonly skip: boolean;
}

type Grammar = Generator<Want, void, Buffer>;

function bad(message: string, offset: number): NarpushError {
  return new NarpushError('BAD_NAR', `invalid NAR (while listing it): ${message} at byte ${offset}`);
}

const ESCAPES: Record<number, string> = { 0x22: '\\"', 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t' };

/** A JSON string of raw bytes as Nix 2.8 writes it, as a latin1 string (one char per byte). */
export function jsonBytes(b: Uint8Array): string {
  let s = '"';
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) s += String.fromCharCode(c);
    else s += ESCAPES[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
  }
  return `${s}"`;
}

export class NarLister {
  private readonly grammar: Grammar;
  private want: Want;
  /** Bytes gathered towards `want` when it is a read split across chunks. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** Absolute offset in the NAR of the next byte to be consumed. */
  private pos = 0;
  private done = false;
  /** The JSON so far, as latin1 strings; undefined once over the cap. */
  private out: string[] | undefined = [];
  private outBytes = 0;

  constructor(private readonly maxBytes: number = MAX_LISTING_BYTES) {
    this.grammar = this.nar();
    this.want = this.grammar.next().value as Want;
  }

  /** Whether the listing was given up for being over the cap. */
  get tooLarge(): boolean {
    return this.out === undefined;
  }

  /** The next bytes of the NAR. Nothing of `chunk` is kept after this returns. */
  update(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.done) throw bad('bytes after the end of the archive', this.pos);
      const take = Math.min(this.want.n - this.partialBytes, chunk.length - at);
      if (!this.want.skip) {
        // Copied: the chunk may be lent and reused once this returns.
        this.partial.push(Buffer.from(chunk.subarray(at, at + take)));
      }
      this.partialBytes += take;
      this.pos += take;
      at += take;
      if (this.partialBytes === this.want.n) this.advance();
    }
  }

  /** The listing once the whole NAR went through `update`; undefined when it was over the cap. */
  finish(): Buffer | undefined {
    if (!this.done) throw bad('the archive ends early', this.pos);
    return this.out === undefined ? undefined : Buffer.from(this.out.join(''), 'latin1');
  }

  private advance(): void {
    const got = this.want.skip ? Buffer.alloc(0) : this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial);
    this.partial = [];
    this.partialBytes = 0;
    for (;;) {
      const r = this.grammar.next(got);
      if (r.done === true) {
        this.done = true;
        return;
      }
      this.want = r.value;
      // Zero-byte wants (empty strings, no padding) are answered at once.
      if (r.value.n !== 0) return;
    }
  }

  private emit(s: string): void {
    if (this.out === undefined) return;
    this.outBytes += s.length;
    if (this.outBytes > this.maxBytes) {
      this.out = undefined;
      return;
    }
    this.out.push(s);
  }

  private *str(max: number, what: string): Generator<Want, Buffer, Buffer> {
    const at = this.pos;
    const n = readU64(yield { n: 8, skip: false }, 0);
    if (n > max) throw bad(`${what} is ${n} bytes long, more than ${max}`, at);
    const s = n === 0 ? Buffer.alloc(0) : yield { n, skip: false };
    const pad = padLength(n);
    if (pad > 0) yield { n: pad, skip: true };
    return s;
  }

  private *word(expected: readonly string[], what: string): Generator<Want, string, Buffer> {
    const at = this.pos;
    const s = (yield* this.str(MAX_WORD_LENGTH, what)).toString('latin1');
    if (!expected.includes(s)) throw bad(`expected ${expected.map((w) => `'${w}'`).join(' or ')} (${what})`, at);
    return s;
  }

  private *nar(): Grammar {
    yield* this.word([WORDS.magic], 'the magic');
    this.emit('{"version":1,"root":');
    yield* this.node(0);
    this.emit('}');
  }

  private *node(depth: number): Generator<Want, void, Buffer> {
    if (depth >= MAX_DEPTH) throw bad(`directories nested ${MAX_DEPTH} deep`, this.pos);
    yield* this.word([WORDS.open], "a node's '('");
    yield* this.word([WORDS.type], "a node's 'type'");
    const type = yield* this.word([WORDS.regular, WORDS.symlink, WORDS.directory], "a node's type");
    if (type === WORDS.regular) {
      const executable = (yield* this.word([WORDS.executable, WORDS.contents], "'executable' or 'contents'")) === WORDS.executable;
      if (executable) {
        yield* this.str(0, "the 'executable' marker's value");
        yield* this.word([WORDS.contents], "'contents'");
      }
      const at = this.pos;
      const size = readU64(yield { n: 8, skip: false }, 0);
      if (size === Infinity) throw bad("a file's contents are over 2^53 bytes long", at);
      this.emit(`{"type":"regular","size":${size}${executable ? ',"executable":true' : ''},"narOffset":${this.pos}}`);
      const skip = size + padLength(size);
      if (skip > 0) yield { n: skip, skip: true };
    } else if (type === WORDS.symlink) {
      yield* this.word([WORDS.target], "a symlink's 'target'");
      const target = yield* this.str(MAX_TARGET_LENGTH, "a symlink's target");
      this.emit(`{"type":"symlink","target":${jsonBytes(target)}}`);
    } else {
      this.emit('{"type":"directory","entries":{');
      let first = true;
      for (;;) {
        if ((yield* this.word([WORDS.entry, WORDS.close], "'entry' or ')'")) === WORDS.close) {
          this.emit('}}');
          return;
        }
        yield* this.word([WORDS.open], "an entry's '('");
        yield* this.word([WORDS.name], "an entry's 'name'");
        const name = yield* this.str(MAX_NAME_LENGTH, "an entry's name");
        yield* this.word([WORDS.node], "an entry's 'node'");
        this.emit(`${first ? '' : ','}${jsonBytes(name)}:`);
        first = false;
        yield* this.node(depth + 1);
        yield* this.word([WORDS.close], "an entry's ')'");
      }
    }
    yield* this.word([WORDS.close], "a node's ')'");
  }
}

/** The listing of a whole NAR held in memory; undefined when over `maxBytes`. */
export function listNar(nar: Uint8Array, maxBytes: number = MAX_LISTING_BYTES): Buffer | undefined {
  const lister = new NarLister(maxBytes);
  lister.update(nar);
  return lister.finish();
}
