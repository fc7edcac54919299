/**
 * The .xz container, written by hand around LZMA2 data (the .xz file format,
 * version 1.0.4, tukaani.org/xz/xz-file-format.txt): stream header, blocks,
 * index and stream footer, plus LZMA2's uncompressed ("stored") chunks.
 *
 * narpush writes the container itself so that one NAR can mix blocks
 * compressed by liblzma with blocks stored as they are (see xz-encoder.ts):
 * the result is an ordinary single-stream .xz file that xz, liblzma and Nix
 * read. Every function here is pure and returns bytes; nothing here
 * compresses. Checks are CRC32 (check type 1), computed by zlib.
 */

/**
 * zlib's CRC32, with node:zlib loaded on first use: it is a dozen of Node's
 * own modules, which an upload that is not xz never needs (start-up is most
 * of a small job's time).
 */
export function crc32(data: Uint8Array, value?: number): number {
  return process.getBuiltinModule('node:zlib').crc32(data, value);
}

const MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const FOOTER_MAGIC = Buffer.from([0x59, 0x5a]);
/** Stream flags: no reserved bits, check type 0x01 (CRC32). */
const STREAM_FLAGS = Buffer.from([0x00, 0x01]);
export const CHECK_SIZE = 4;
const LZMA2_FILTER_ID = 0x21;
/** An LZMA2 uncompressed chunk holds at most 64 KiB. */
export const STORED_CHUNK_MAX = 1 << 16;
const STORED_RESET_DICT = 0x01;
const STORED_KEEP_DICT = 0x02;
const LZMA2_END = 0x00;

/** One block's entry in the index. */
export interface BlockRecord {
  /** Block header + compressed data + check, without block padding. */
  readonly unpaddedSize: number;
  readonly uncompressedSize: number;
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** The format's variable-length integer: 7 bits per byte, least significant first. */
export function multibyte(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`xz: bad integer ${n}`);
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Bytes of zero padding that bring `n` to a multiple of four. */
export function padding4(n: number): number {
  return (4 - (n % 4)) % 4;
}

export function streamHeader(): Buffer {
  return Buffer.concat([MAGIC, STREAM_FLAGS, u32le(crc32(STREAM_FLAGS))]);
}

/**
 * LZMA2's one-byte dictionary size property: the smallest encoded size
 * (2 or 3 times a power of two, from 4 KiB) that is at least `dictSize`.
 */
export function lzma2DictProperty(dictSize: number): number {
  for (let p = 0; p < 40; p++) {
    const size = (2 | (p & 1)) * 2 ** (Math.floor(p / 2) + 11);
    if (size >= dictSize) return p;
  }
  return 40; // 4 GiB - 1
}

/**
 * A block header with one filter (LZMA2) and no size fields (they are in the
 * index): size byte, flags, filter flags, padding, CRC32. Always 12 bytes.
 */
export function blockHeader(dictProperty: number): Buffer {
  const body = Buffer.from([0x00 /* size, set below */, 0x00 /* one filter, no sizes */, LZMA2_FILTER_ID, 0x01, dictProperty]);
  const size = body.length + padding4(body.length) + 4;
  body[0] = size / 4 - 1;
  const withPadding = Buffer.concat([body, Buffer.alloc(padding4(body.length))]);
  return Buffer.concat([withPadding, u32le(crc32(withPadding))]);
}

export const BLOCK_HEADER_SIZE = 12;

/**
 * `data` as LZMA2 uncompressed chunks (at most 64 KiB each). The first chunk
 * of a block must reset the dictionary; later ones keep it.
 */
export function storedChunks(data: Uint8Array, firstInBlock: boolean): Buffer[] {
  const out: Buffer[] = [];
  let first = firstInBlock;
  for (let off = 0; off < data.length; off += STORED_CHUNK_MAX) {
    const n = Math.min(STORED_CHUNK_MAX, data.length - off);
    out.push(Buffer.from([first ? STORED_RESET_DICT : STORED_KEEP_DICT, (n - 1) >> 8, (n - 1) & 0xff]));
    out.push(Buffer.from(data.buffer, data.byteOffset + off, n));
    first = false;
  }
  return out;
}

/** The LZMA2 end marker that closes a block of stored chunks (liblzma's encoder writes its own). */
export function lzma2End(): Buffer {
  return Buffer.from([LZMA2_END]);
}

/** Block padding after `compressedSize` bytes of LZMA2 data, then the CRC32 of the block's uncompressed data. */
export function blockTrailer(compressedSize: number, crc: number): Buffer {
  return Buffer.concat([Buffer.alloc(padding4(BLOCK_HEADER_SIZE + compressedSize)), u32le(crc)]);
}

export function blockRecord(compressedSize: number, uncompressedSize: number): BlockRecord {
  return { unpaddedSize: BLOCK_HEADER_SIZE + compressedSize + CHECK_SIZE, uncompressedSize };
}

/** The index and the stream footer that end the stream. */
export function streamEnd(records: readonly BlockRecord[]): Buffer {
  const parts: Buffer[] = [Buffer.from([0x00]), multibyte(records.length)];
  for (const r of records) parts.push(multibyte(r.unpaddedSize), multibyte(r.uncompressedSize));
  let index = Buffer.concat(parts);
  index = Buffer.concat([index, Buffer.alloc(padding4(index.length))]);
  index = Buffer.concat([index, u32le(crc32(index))]);
  const backward = Buffer.concat([u32le(index.length / 4 - 1), STREAM_FLAGS]);
  return Buffer.concat([index, u32le(crc32(backward)), backward, FOOTER_MAGIC]);
}
