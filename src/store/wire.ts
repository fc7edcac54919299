/**
 * The Nix worker protocol's wire encoding, writing side.
 *
 * ```
 * u64     = 8 bytes, little-endian
 * bool    = u64 (0 or 1)
 * string  = u64 length, the bytes, zero padding to a multiple of 8
 * strings = u64 count, then that many strings
 * ```
 * (Nix: src/libutil/serialise.cc.) Pure functions building Buffers; no I/O.
 * The reading side, which must cope with a stream split anywhere, is
 * wire-reader.ts.
 */
import { NarpushError } from '../errors.js';

/** Zero bytes to pad `length` up to a multiple of 8. */
export function padding(length: number): number {
  return (8 - (length % 8)) % 8;
}

/** Accumulates one message in a single growing buffer; `finish()` returns it. */
export class WireWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  u64(n: number | bigint): this {
    this.reserve(8);
    if (typeof n === 'bigint') {
      this.buf.writeBigUInt64LE(n, this.pos);
    } else {
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new NarpushError('BAD_WIRE_VALUE', `cannot write ${n} as an unsigned 64-bit integer`);
      }
      this.buf.writeUInt32LE(n % 0x1_0000_0000, this.pos);
      this.buf.writeUInt32LE(Math.floor(n / 0x1_0000_0000), this.pos + 4);
    }
    this.pos += 8;
    return this;
  }

  bool(b: boolean): this {
    return this.u64(b ? 1 : 0);
  }

  /** A string: strings are UTF-8 text here; pass bytes for anything else. */
  string(s: string | Uint8Array): this {
    const len = typeof s === 'string' ? Buffer.byteLength(s, 'utf8') : s.byteLength;
    this.u64(len);
    const pad = padding(len);
    this.reserve(len + pad);
    if (typeof s === 'string') this.buf.write(s, this.pos, len, 'utf8');
    else this.buf.set(s, this.pos);
    this.pos += len;
    if (pad > 0) {
      this.buf.fill(0, this.pos, this.pos + pad);
      this.pos += pad;
    }
    return this;
  }

  strings(list: Iterable<string | Uint8Array>): this {
    const items = Array.isArray(list) ? (list as (string | Uint8Array)[]) : [...list];
    this.u64(items.length);
    for (const s of items) this.string(s);
    return this;
  }

  /** The message; the writer must not be used afterwards. */
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }
}

/** Shorthand for a one-off message: `wire((w) => w.u64(1).string('x'))`. */
export function wire(build: (w: WireWriter) => unknown): Buffer {
  const w = new WireWriter();
  build(w);
  return w.finish();
}
