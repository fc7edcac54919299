/**
 * Nix's base-32 ("nix32"): the encoding of store path hashes and of hashes in
 * narinfo files. It is not RFC 4648: the alphabet omits e, o, u and t, and the
 * bytes are read as one little-endian integer whose 5-bit groups are written
 * most significant first. Pure functions, no I/O.
 */
import { NarpushError } from '../errors.js';

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DECODE[NIX32_ALPHABET.charCodeAt(i)] = i;

/** Length of the nix32 encoding of `bytes` bytes. */
export function nix32Length(bytes: number): number {
  return bytes === 0 ? 0 : Math.floor((bytes * 8 - 1) / 5) + 1;
}

export function nix32Encode(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const lo = bytes[i]! >> j;
    const hi = i + 1 < bytes.length ? bytes[i + 1]! << (8 - j) : 0;
    out += NIX32_ALPHABET[(lo | hi) & 0x1f];
  }
  return out;
}

/** True when `s` could be the nix32 encoding of `bytes` bytes (alphabet and length only). */
export function isNix32(s: string, bytes: number): boolean {
  if (s.length !== nix32Length(bytes)) return false;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c >= 128 || DECODE[c] === -1) return false;
  }
  return true;
}

/**
 * Decode a nix32 string into exactly `bytes` bytes. Rejects characters outside
 * the alphabet, the wrong length, and strings whose high bits overflow.
 */
export function nix32Decode(s: string, bytes: number): Buffer {
  if (s.length !== nix32Length(bytes)) {
    throw new NarpushError(
      'BAD_NIX32',
      `nix32 string has length ${s.length}, expected ${nix32Length(bytes)} for ${bytes} bytes`,
    );
  }
  const out = Buffer.alloc(bytes);
  for (let n = 0; n < s.length; n++) {
    const c = s.charCodeAt(s.length - n - 1);
    const digit = c < 128 ? DECODE[c]! : -1;
    if (digit < 0) {
      throw new NarpushError('BAD_NIX32', `invalid character ${JSON.stringify(s[s.length - n - 1])} in nix32 string`);
    }
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] = out[i]! | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < bytes) out[i + 1] = out[i + 1]! | carry;
    else if (carry !== 0) throw new NarpushError('BAD_NIX32', 'nix32 string overflows its hash size');
  }
  return out;
}
