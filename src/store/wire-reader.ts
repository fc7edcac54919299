/**
 * The Nix worker protocol's wire encoding, reading side, for a byte stream
 * that may arrive split at any point.
 *
 * A frame is a plain function reading one message from a `WireReader`
 * (`(r) => ({ path: r.string(), size: r.u64() })`), so a message's grammar
 * reads top to bottom. `WireDecoder` runs a frame over the bytes received so
 * far: if they end before the frame does, the reader reports how many bytes
 * the frame needs at least, and the decoder retries from the frame's start
 * once that many have arrived (so a long string split into many chunks is
 * copied once, not once per chunk). Frames must therefore be pure; side
 * effects belong to whoever receives the finished frame.
 *
 * Nothing here does I/O or waits. Every length and count is checked against
 * a cap before anything is buffered for it, so a hostile or confused peer
 * cannot make us hold gigabytes.
 */
import { NarpushError } from '../errors.js';
import { padding } from './wire.js';

/** Reads one message; throws (via the reader) when the bytes run out. Must be pure. */
export type Frame<T> = (r: WireReader) => T;

/** Longest string we accept (paths, hashes, log lines, error messages). */
export const MAX_STRING_LENGTH = 16 * 1024 * 1024;
/** Most elements we accept in one list or map. */
export const MAX_LIST_LENGTH = 16 * 1024 * 1024;

const TWO_32 = 0x1_0000_0000;
const EMPTY = Buffer.alloc(0);

function bad(message: string): NarpushError {
  return new NarpushError('STORE_PROTOCOL_ERROR', `malformed answer from the Nix daemon: ${message}`);
}

/** Thrown inside a frame when the buffer ends early; never escapes WireDecoder. */
const SHORT = Object.freeze({ short: true });

/** A cursor over received bytes. */
export class WireReader {
  buf: Buffer = EMPTY;
  pos = 0;
  /** After a short read: the buffer index the frame needed to reach, at least. */
  end = 0;

  private need(end: number): void {
    if (end > this.buf.length) {
      this.end = end;
      throw SHORT;
    }
  }

  u64(): number {
    const p = this.pos;
    this.need(p + 8);
    const hi = this.buf.readUInt32LE(p + 4);
    if (hi >= 0x20_0000) throw bad(`integer ${this.buf.readBigUInt64LE(p)} is larger than 2^53`);
    this.pos = p + 8;
    return hi * TWO_32 + this.buf.readUInt32LE(p);
  }

  /** A u64 that may exceed 2^53 (activity ids carry the daemon's pid in the high bits). */
  u64Big(): bigint {
    this.need(this.pos + 8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  bool(): boolean {
    this.need(this.pos + 8);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 8;
    return b.readUInt32LE(p) !== 0 || b.readUInt32LE(p + 4) !== 0;
  }

  /** Exactly `n` raw bytes, without a length prefix. */
  raw(n: number): Buffer {
    this.need(this.pos + n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A length-prefixed, zero-padded byte string of at most `max` bytes (a view, not a copy). */
  bytes(max: number = MAX_STRING_LENGTH): Buffer {
    const len = this.u64();
    if (len > max) throw bad(`string of ${len} bytes exceeds the limit of ${max}`);
    const start = this.pos;
    const pad = padding(len);
    this.need(start + len + pad);
    const b = this.buf;
    for (let i = start + len; i < start + len + pad; i++) {
      if (b[i] !== 0) throw bad('non-zero padding after a string');
    }
    this.pos = start + len + pad;
    return b.subarray(start, start + len);
  }

  string(max: number = MAX_STRING_LENGTH): string {
    return this.bytes(max).toString('utf8');
  }

  count(max: number = MAX_LIST_LENGTH): number {
    const n = this.u64();
    if (n > max) throw bad(`list of ${n} elements exceeds the limit of ${max}`);
    return n;
  }

  strings(max: number = MAX_LIST_LENGTH): string[] {
    const n = this.count(max);
    const out: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) out[i] = this.string();
    return out;
  }
}

/** What `WireDecoder.read` returns while a frame is incomplete. */
export const NEED_MORE: unique symbol = Symbol('need more bytes');
export type NeedMore = typeof NEED_MORE;

/**
 * Buffers pushed chunks and reads whole frames from them. Bytes after a
 * finished frame stay buffered for the next one.
 */
export class WireDecoder {
  private buf: Buffer = EMPTY;
  private pos = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Unread bytes the last incomplete frame needs before it is worth retrying. */
  private needed = 0;
  private readonly reader = new WireReader();

  /** Bytes received but not yet consumed by a frame. */
  get buffered(): number {
    return this.buf.length - this.pos + this.pendingBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
  }

  /** Read one frame, or NEED_MORE (nothing consumed) when the bytes end before it does. */
  read<T>(frame: Frame<T>): T | NeedMore {
    if (this.buffered < this.needed) return NEED_MORE;
    if (this.pendingBytes > 0) this.merge();
    const r = this.reader;
    r.buf = this.buf;
    r.pos = this.pos;
    let value: T;
    try {
      value = frame(r);
    } catch (e) {
      if (e !== SHORT) throw e;
      this.needed = r.end - this.pos;
      return NEED_MORE;
    }
    this.pos = r.pos;
    this.needed = 0;
    return value;
  }

  private merge(): void {
    const rest = this.buf.length - this.pos;
    if (rest === 0 && this.pending.length === 1) {
      this.buf = this.pending[0]!;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.pos), ...this.pending], rest + this.pendingBytes);
    }
    this.pos = 0;
    this.pending = [];
    this.pendingBytes = 0;
  }
}

/**
 * Read a complete frame from chunks (for tests and fixed buffers). Throws
 * STORE_PROTOCOL_ERROR when the bytes end early or run past the frame.
 */
export function decodeAll<T>(frame: Frame<T>, chunks: Iterable<Uint8Array>): T {
  const d = new WireDecoder();
  let r: T | NeedMore = NEED_MORE;
  for (const c of chunks) {
    d.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    if (r === NEED_MORE) r = d.read(frame);
  }
  if (r === NEED_MORE) r = d.read(frame);
  if (r === NEED_MORE) throw bad('the message ended early');
  if (d.buffered !== 0) throw bad(`${d.buffered} bytes left over after the message`);
  return r;
}
