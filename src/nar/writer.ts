/**
 * The synchronous core of the NAR encoder: turns events (events.ts) into NAR
 * bytes, batching small pieces into chunks and passing large content chunks
 * through untouched. Pure and I/O-free, like snix's nar/writer: the
 * streaming encoder (encode.ts) drives it, and tests can use it directly.
 *
 * It checks what it is given (order, sorted unique legal names, contents
 * length equal to `size`) and throws NarpushError('BAD_NAR_EVENT') rather
 * than write a NAR that Nix would refuse.
 */
import { NarpushError } from '../errors.js';
import type { NarEvent, RegularEvent } from './events.js';
import {
  TOK_DIR,
  TOK_ENT,
  TOK_EXE,
  TOK_NAR,
  TOK_NOD,
  TOK_PAR,
  TOK_REG,
  TOK_SYM,
  entryNameError,
  padLength,
  showBytes,
  symlinkTargetError,
  writeU64,
} from './wire.js';

export const DEFAULT_CHUNK_SIZE = 256 * 1024;
const ZEROS = Buffer.alloc(8);

export function bad(message: string): NarpushError {
  return new NarpushError('BAD_NAR_EVENT', `cannot encode NAR: ${message}`);
}

interface Frame {
  /** The last entry name written in this directory, to keep names sorted and unique. */
  prev: Buffer | undefined;
  /** Whether the directory itself is an entry (so it closes with two ')'). */
  named: boolean;
}

/**
 * The synchronous core: turns events into bytes, collecting finished chunks
 * in `out`. Pure; both the streaming encoder and `encodeNarSync` drive it.
 */
export class NarWriter {
  private readonly chunkSize: number;
  private readonly directMin: number;
  private readonly lend: boolean;
  private batch: Buffer = Buffer.alloc(0);
  /** With `lend`: the previous batch, free again once the consumer has pulled past it. */
  private spare: Buffer | undefined;
  private spareFree = false;
  private start = 0;
  private pos = 0;
  private readonly stack: Frame[] = [];
  private started = false;
  private finished = false;
  private fileNamed = false;
  private fileLeft = -1;
  private fileSize = 0;
  /** Finished chunks, in order; the caller takes them with `take()`. */
  private out: Buffer[] = [];

  constructor(chunkSize: number = DEFAULT_CHUNK_SIZE, lend = false) {
    this.chunkSize = Math.max(1024, chunkSize);
    this.lend = lend;
    // Pieces at least this big are passed on as they are: copying them would cost more than a chunk boundary.
    this.directMin = Math.max(512, this.chunkSize >>> 2);
  }

  /** The chunks finished so far (and forget them). */
  take(): Buffer[] {
    const out = this.out;
    if (out.length !== 0) this.out = [];
    return out;
  }

  get pending(): boolean {
    return this.out.length !== 0;
  }

  get done(): boolean {
    return this.finished;
  }

  /** Hand over what is batched so far, even if the chunk is not full. */
  flush(): void {
    if (this.pos > this.start) {
      this.out.push(this.batch.subarray(this.start, this.pos));
      this.start = this.pos;
    }
  }

  /**
   * With `lend`: the consumer has pulled again, so every chunk handed out is
   * free; start filling the current batch from its beginning again.
   */
  recycle(): void {
    if (!this.lend || this.out.length !== 0) return;
    this.spareFree = this.spare !== undefined;
    if (this.start === this.pos) this.start = this.pos = 0;
  }

  private room(n: number): void {
    if (this.batch.length - this.pos >= n) return;
    this.flush();
    const old = this.batch;
    const spare = this.spare;
    if (this.lend && spare !== undefined && this.spareFree && spare.length >= n) {
      this.batch = spare;
    } else {
      this.batch = Buffer.allocUnsafe(Math.max(this.chunkSize, n));
    }
    if (this.lend && old.length >= this.chunkSize) {
      this.spare = old;
      this.spareFree = false;
    }
    this.start = this.pos = 0;
  }

  private put(b: Uint8Array): void {
    this.room(b.length);
    this.batch.set(b, this.pos);
    this.pos += b.length;
  }

  /** A string's length, the string and its padding; `b` is short (a name or a target). */
  private putStr(b: Uint8Array): void {
    const pad = padLength(b.length);
    this.room(8 + b.length + pad);
    this.pos = writeU64(this.batch, b.length, this.pos);
    this.batch.set(b, this.pos);
    this.pos += b.length;
    this.batch.fill(0, this.pos, this.pos + pad);
    this.pos += pad;
  }

  /** Everything up to a node's type: the magic for the root, the entry framing otherwise. */
  private openNode(ev: Exclude<NarEvent, { type: 'end-directory' }>): boolean {
    if (this.finished) throw bad(`a ${ev.type} event after the end of the NAR`);
    if (this.fileLeft >= 0) throw bad(`a ${ev.type} event before the previous file's contents were complete`);
    const parent = this.stack[this.stack.length - 1];
    if (!this.started) {
      if (ev.name !== undefined) throw bad(`the root ${ev.type} has a name (${showBytes(ev.name)})`);
      this.started = true;
      this.put(TOK_NAR);
      return false;
    }
    if (parent === undefined) throw bad('more than one root node');
    const name = ev.name;
    if (name === undefined) throw bad(`a ${ev.type} entry without a name`);
    const why = entryNameError(name);
    if (why) throw bad(`entry name ${showBytes(name)} ${why}`);
    if (parent.prev !== undefined) {
      const c = Buffer.compare(parent.prev, name);
      if (c === 0) throw bad(`duplicate entry name ${showBytes(name)}`);
      if (c > 0) throw bad(`entry ${showBytes(name)} comes after ${showBytes(parent.prev)}: entries must be sorted by bytes`);
    }
    parent.prev = name;
    this.put(TOK_ENT);
    this.putStr(name);
    this.put(TOK_NOD);
    return true;
  }

  private closeNode(named: boolean): void {
    this.put(TOK_PAR);
    if (named) this.put(TOK_PAR);
    if (this.stack.length === 0) {
      this.finished = true;
      this.flush();
    }
  }

  /** A symlink, directory or end-directory event (regular files go through begin/contents/end). */
  write(ev: NarEvent): void {
    switch (ev.type) {
      case 'regular':
        this.beginFile(ev);
        return;
      case 'symlink': {
        const named = this.openNode(ev);
        const why = symlinkTargetError(ev.target);
        if (why) throw bad(`symlink target ${showBytes(ev.target)} ${why}`);
        this.put(TOK_SYM);
        this.putStr(ev.target);
        this.closeNode(named);
        return;
      }
      case 'directory': {
        const named = this.openNode(ev);
        this.put(TOK_DIR);
        this.stack.push({ prev: undefined, named });
        return;
      }
      case 'end-directory': {
        if (this.fileLeft >= 0) throw bad("an end-directory event before the previous file's contents were complete");
        const frame = this.stack.pop();
        if (frame === undefined) throw bad('an end-directory event without an open directory');
        this.closeNode(frame.named);
        return;
      }
    }
  }

  beginFile(ev: RegularEvent): void {
    const { size } = ev;
    if (!Number.isSafeInteger(size) || size < 0) throw bad(`file size ${String(size)} is not a whole number of bytes below 2^53`);
    this.fileNamed = this.openNode(ev);
    this.put(ev.executable ? TOK_EXE : TOK_REG);
    this.room(8);
    this.pos = writeU64(this.batch, size, this.pos);
    this.fileLeft = this.fileSize = size;
  }

  contents(chunk: Uint8Array): void {
    if (this.fileLeft < 0) throw bad('file contents outside a file');
    const n = chunk.length;
    if (n > this.fileLeft) throw bad(`file contents longer than its size of ${this.fileSize} bytes`);
    this.fileLeft -= n;
    if (n >= this.directMin) {
      this.flush();
      this.out.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, n));
    } else if (n !== 0) {
      this.put(chunk);
    }
  }

  endFile(): void {
    if (this.fileLeft !== 0) {
      throw bad(`file contents ended ${this.fileLeft} bytes short of its size of ${this.fileSize} bytes`);
    }
    this.fileLeft = -1;
    const pad = padLength(this.fileSize);
    if (pad) this.put(ZEROS.subarray(0, pad));
    this.closeNode(this.fileNamed);
  }

  /** Check that the events formed a whole NAR. */
  end(): void {
    if (!this.finished) {
      throw bad(this.started ? 'the events ended before the NAR was complete' : 'no events: a NAR needs a root node');
    }
  }
}
