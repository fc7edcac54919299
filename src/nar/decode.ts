/**
 * Strict streaming NAR decoder: chunks in (split anywhere, down to one byte
 * each), events (events.ts) out, file contents streamed rather than buffered.
 *
 * It accepts exactly what the grammar in wire.ts allows and what current Nix
 * accepts: exact token order, sorted unique legal names, symlink targets of
 * 1..4095 bytes without NUL, depth below MAX_DEPTH, zero padding, nothing
 * after the root node. Every length field is checked against its cap before
 * anything is allocated, so a hostile NAR cannot force unbounded allocation.
 * Each defect throws NarpushError('BAD_NAR') with its own message naming the
 * byte offset. It never does I/O beyond pulling from the given source.
 */
import { NarpushError } from '../errors.js';
import type { NarEvent } from './events.js';
import {
  MAX_CONTENTS_LENGTH,
  MAX_DEPTH,
  MAX_NAME_LENGTH,
  MAX_TARGET_LENGTH,
  MAX_WORD_LENGTH,
  WORDS,
  entryNameError,
  padLength,
  readU64,
  showBytes,
  symlinkTargetError,
} from './wire.js';

type Source = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

const EMPTY = Buffer.alloc(0);

function bad(message: string, offset: number): NarpushError {
  return new NarpushError('BAD_NAR', `invalid NAR: ${message} at byte ${offset}`);
}

function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length);
}

/** Pulls chunks on demand and hands out exact byte counts, tracking the absolute offset. */
class Reader {
  private readonly it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  private readonly sync: boolean;
  private buf: Buffer = EMPTY;
  private pos = 0;
  /** Absolute offset of buf[0]. */
  private base = 0;
  private eof = false;

  constructor(source: Source) {
    this.sync = typeof (source as Iterable<Uint8Array>)[Symbol.iterator] === 'function';
    this.it = this.sync
      ? (source as Iterable<Uint8Array>)[Symbol.iterator]()
      : (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  }

  get offset(): number {
    return this.base + this.pos;
  }

  /** Offset just past the last byte received (where a truncated input ends). */
  get end(): number {
    return this.base + this.buf.length;
  }

  private async pull(): Promise<Buffer | undefined> {
    if (this.eof) return undefined;
    for (;;) {
      const r = this.sync
        ? (this.it as Iterator<Uint8Array>).next()
        : await (this.it as AsyncIterator<Uint8Array>).next();
      if (r.done) {
        this.eof = true;
        return undefined;
      }
      if (r.value.length !== 0) return toBuffer(r.value);
    }
  }

  /** Make at least `n` bytes available (n is small: a token, name or target); false at end of input. */
  async fill(n: number): Promise<boolean> {
    while (this.buf.length - this.pos < n) {
      const chunk = await this.pull();
      if (chunk === undefined) return false;
      const rest = this.buf.length - this.pos;
      this.base += this.pos;
      this.buf = rest === 0 ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
      this.pos = 0;
    }
    return true;
  }

  /** The next `n` bytes; only after fill(n) returned true. A view: copy what must outlive the source. */
  take(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** Up to `max` bytes (at least one), as a view, without copying; undefined at end of input. */
  async some(max: number): Promise<Buffer | undefined> {
    if (this.pos === this.buf.length) {
      const chunk = await this.pull();
      if (chunk === undefined) return undefined;
      this.base += this.buf.length;
      this.buf = chunk;
      this.pos = 0;
    }
    const n = Math.min(max, this.buf.length - this.pos);
    return this.take(n);
  }

  async close(): Promise<void> {
    if (!this.eof) await this.it.return?.();
  }
}

/** Grammar-level reads on top of Reader; every method checks what it reads. */
class Parser {
  constructor(readonly r: Reader) {}

  truncated(what: string): NarpushError {
    return bad(`the input ends in ${what}`, this.r.end);
  }

  async length(what: string): Promise<number> {
    if (!(await this.r.fill(8))) throw this.truncated(`the length of ${what}`);
    return readU64(this.r.take(8), 0);
  }

  async padding(n: number, what: string): Promise<void> {
    const pad = padLength(n);
    if (pad === 0) return;
    if (!(await this.r.fill(pad))) throw this.truncated(`the padding of ${what}`);
    const at = this.r.offset;
    const p = this.r.take(pad);
    for (let i = 0; i < pad; i++) if (p[i] !== 0) throw bad(`non-zero padding after ${what}`, at + i);
  }

  /** A string of at most `max` bytes; the cap is checked before reading it. */
  async str(max: number, what: string): Promise<Buffer> {
    const at = this.r.offset;
    const n = await this.length(what);
    if (n > max) throw bad(`${what} is ${n === Infinity ? 'over 2^53' : n} bytes long, more than the limit of ${max}`, at);
    if (!(await this.r.fill(n))) throw this.truncated(what);
    const s = this.r.take(n);
    await this.padding(n, what);
    return s;
  }

  /** A short string where the grammar has a word; longer ones are refused unread. */
  async token(want: string, what: string): Promise<Buffer> {
    const at = this.r.offset;
    const n = await this.length(what);
    if (n > MAX_WORD_LENGTH) {
      throw bad(`expected ${want} (${what}), found a string of ${n === Infinity ? 'over 2^53' : n} bytes`, at);
    }
    if (!(await this.r.fill(n))) throw this.truncated(what);
    const s = this.r.take(n);
    await this.padding(n, what);
    return s;
  }

  /** One of the grammar's words; `what` names the position for messages. */
  async word<W extends string>(expected: readonly W[], what: string): Promise<W> {
    const at = this.r.offset;
    const want = expected.map((w) => `'${w}'`).join(' or ');
    const s = await this.token(want, what);
    const found = expected.find((w) => w.length === s.length && s.toString('latin1') === w);
    if (found === undefined) throw bad(`expected ${want} (${what}), found ${showBytes(s)}`, at);
    return found;
  }

  async expect(w: string, what: string): Promise<void> {
    await this.word([w], what);
  }
}

interface Frame {
  prev: Buffer | undefined;
}

/** A regular file, from after its type to its ')': one event whose contents stream from the input. */
async function* regular(p: Parser, name: Buffer | undefined): AsyncGenerator<NarEvent, void, undefined> {
  const r = p.r;
  let executable = false;
  if ((await p.word([WORDS.executable, WORDS.contents], "a file's 'executable' or 'contents'")) === WORDS.executable) {
    executable = true;
    const at = r.offset;
    const n = await p.length("the 'executable' marker's value");
    if (n !== 0) {
      throw bad(`the 'executable' marker must be followed by an empty string, not one of ${n === Infinity ? 'over 2^53' : n} bytes`, at);
    }
    await p.expect(WORDS.contents, "a file's 'contents'");
  }
  const at = r.offset;
  const size = await p.length("a file's contents");
  if (size > MAX_CONTENTS_LENGTH) throw bad("a file's contents are over 2^53 bytes long, more than narpush handles", at);
  let left = size;
  let started = false;
  let moved = false;
  const contents: AsyncIterable<Buffer> = {
    async *[Symbol.asyncIterator]() {
      if (started || moved) throw new NarpushError('BAD_NAR_USE', 'NAR file contents can be read only once, before the next event');
      started = true;
      while (left > 0) {
        const b = await r.some(left);
        if (moved) throw new NarpushError('BAD_NAR_USE', 'NAR file contents were read after the decoder moved on');
        if (b === undefined) throw p.truncated(`a file's contents (${left} bytes missing)`);
        left -= b.length;
        yield b;
      }
    },
  };
  yield name === undefined ? { type: 'regular', executable, size, contents } : { type: 'regular', name, executable, size, contents };
  moved = true;
  while (left > 0) {
    const b = await r.some(left);
    if (b === undefined) throw p.truncated(`a file's contents (${left} bytes missing)`);
    left -= b.length;
  }
  await p.padding(size, "a file's contents");
  await p.expect(WORDS.close, "the ')' after a file");
}

/**
 * Decode a NAR. A regular event's `contents` must be read (or skipped) before
 * the next event is requested; whatever is left is skipped and checked.
 * Stopping early closes the source.
 */
export async function* decodeNar(source: Source): AsyncGenerator<NarEvent, void, undefined> {
  const r = new Reader(source);
  const p = new Parser(r);
  let finished = false;
  try {
    const n = await p.length('the magic');
    if (n !== WORDS.magic.length) throw bad(`not a NAR (no '${WORDS.magic}' magic)`, 0);
    if (!(await r.fill(n))) throw p.truncated('the magic');
    if (r.take(n).toString('latin1') !== WORDS.magic) throw bad(`not a NAR (no '${WORDS.magic}' magic)`, 0);
    await p.padding(n, 'the magic');
    await p.expect(WORDS.open, "the root node's '('");
    await p.expect(WORDS.type, "the root node's 'type'");
    const stack: Frame[] = [];
    let name: Buffer | undefined;
    let done = false;
    while (!done) {
      // At a node's type; `name` is its entry name (undefined for the root).
      const typeAt = r.offset;
      const t = await p.token("'regular', 'symlink' or 'directory'", 'a node type');
      const type = t.toString('latin1');
      if (type === WORDS.directory) {
        yield name === undefined ? { type: 'directory' } : { type: 'directory', name };
        stack.push({ prev: undefined });
      } else if (type === WORDS.symlink) {
        await p.expect(WORDS.target, "a symlink's 'target'");
        const at = r.offset;
        const target = Buffer.from(await p.str(MAX_TARGET_LENGTH, 'a symlink target'));
        const why = symlinkTargetError(target);
        if (why) throw bad(`symlink target ${showBytes(target)} ${why}`, at);
        await p.expect(WORDS.close, "the ')' after a symlink");
        yield name === undefined ? { type: 'symlink', target } : { type: 'symlink', name, target };
      } else if (type === WORDS.regular) {
        yield* regular(p, name);
      } else {
        throw bad(`unknown node type ${showBytes(t)}`, typeAt);
      }
      // A node ended unless it opened a directory: close entries and read the next
      // entry (or the ')' of a directory) until a new node starts or the root ends.
      let closed = type !== WORDS.directory;
      for (;;) {
        if (closed) {
          if (stack.length === 0) {
            done = true;
            break;
          }
          await p.expect(WORDS.close, "the ')' closing an entry");
        }
        const top = stack[stack.length - 1]!;
        const w = await p.word([WORDS.entry, WORDS.close], "a directory's 'entry' or ')'");
        if (w === WORDS.close) {
          stack.pop();
          yield { type: 'end-directory' };
          closed = true;
          continue;
        }
        await p.expect(WORDS.open, "an entry's '('");
        await p.expect(WORDS.name, "an entry's 'name'");
        const at = r.offset;
        name = Buffer.from(await p.str(MAX_NAME_LENGTH, 'an entry name'));
        const why = entryNameError(name);
        if (why) throw bad(`entry name ${showBytes(name)} ${why}`, at);
        if (top.prev !== undefined) {
          const c = Buffer.compare(top.prev, name);
          if (c === 0) throw bad(`duplicate entry name ${showBytes(name)}`, at);
          if (c > 0) throw bad(`entry name ${showBytes(name)} is not sorted after ${showBytes(top.prev)}`, at);
        }
        top.prev = name;
        await p.expect(WORDS.node, "an entry's 'node'");
        const nodeAt = r.offset;
        if (stack.length >= MAX_DEPTH) throw bad(`directories are nested ${MAX_DEPTH} or more deep`, nodeAt);
        await p.expect(WORDS.open, "an entry node's '('");
        await p.expect(WORDS.type, "an entry node's 'type'");
        break;
      }
    }
    if (await r.fill(1)) throw bad('trailing data after the end of the NAR', r.offset);
    finished = true;
  } finally {
    if (!finished) await r.close();
  }
}
