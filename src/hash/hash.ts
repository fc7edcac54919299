/**
 * Hash values as Nix writes and reads them: `algo:<nix32>`, `algo:<base16>`,
 * `algo:<base64>` and SRI `algo-<base64>`. narpush accepts all of them and
 * writes `algo:<nix32>`, as Nix does in narinfo files. Pure, no I/O.
 */
import { createHash } from 'node:crypto';
import { NarpushError } from '../errors.js';
import { nix32Decode, nix32Encode, nix32Length } from './nix32.js';

export type HashAlgo = 'md5' | 'sha1' | 'sha256' | 'sha512';

const SIZES: Record<HashAlgo, number> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 };

export interface Hash {
  readonly algo: HashAlgo;
  readonly digest: Buffer;
}

export type HashEncoding = 'nix32' | 'base16' | 'base64' | 'sri';

export function hashSize(algo: HashAlgo): number {
  return SIZES[algo];
}

function isAlgo(s: string): s is HashAlgo {
  return Object.prototype.hasOwnProperty.call(SIZES, s);
}

function bad(message: string): NarpushError {
  return new NarpushError('BAD_HASH', message);
}

const BASE16 = /^[0-9a-fA-F]+$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeBody(algo: HashAlgo, body: string, original: string): Buffer {
  const size = SIZES[algo];
  if (body.length === size * 2 && BASE16.test(body)) return Buffer.from(body, 'hex');
  if (body.length === nix32Length(size)) {
    try {
      return nix32Decode(body, size);
    } catch (e) {
      throw bad(`invalid ${algo} hash '${original}': ${(e as Error).message}`);
    }
  }
  if (body.length === Math.ceil(size / 3) * 4 && BASE64.test(body)) {
    const digest = Buffer.from(body, 'base64');
    if (digest.length === size && digest.toString('base64') === body) return digest;
  }
  throw bad(`invalid ${algo} hash '${original}': wrong length or encoding`);
}

/**
 * Parse `algo:<nix32|base16|base64>` or SRI `algo-<base64>`. A bare digest is
 * accepted only when `defaultAlgo` says what it is.
 */
export function parseHash(s: string, defaultAlgo?: HashAlgo): Hash {
  const colon = s.indexOf(':');
  if (colon >= 0) {
    const algo = s.slice(0, colon);
    if (!isAlgo(algo)) throw bad(`unknown hash algorithm '${algo}' in '${s}'`);
    return { algo, digest: decodeBody(algo, s.slice(colon + 1), s) };
  }
  const dash = s.indexOf('-');
  if (dash >= 0 && isAlgo(s.slice(0, dash))) {
    const algo = s.slice(0, dash) as HashAlgo;
    const body = s.slice(dash + 1);
    const digest = BASE64.test(body) ? Buffer.from(body, 'base64') : Buffer.alloc(0);
    if (digest.length !== SIZES[algo] || digest.toString('base64') !== body) {
      throw bad(`invalid SRI hash '${s}'`);
    }
    return { algo, digest };
  }
  if (defaultAlgo) return { algo: defaultAlgo, digest: decodeBody(defaultAlgo, s, s) };
  throw bad(`hash '${s}' does not say its algorithm`);
}

export function formatHash(h: Hash, encoding: HashEncoding = 'nix32'): string {
  switch (encoding) {
    case 'nix32':
      return `${h.algo}:${nix32Encode(h.digest)}`;
    case 'base16':
      return `${h.algo}:${h.digest.toString('hex')}`;
    case 'base64':
      return `${h.algo}:${h.digest.toString('base64')}`;
    case 'sri':
      return `${h.algo}-${h.digest.toString('base64')}`;
  }
}

export function hashEquals(a: Hash, b: Hash): boolean {
  return a.algo === b.algo && a.digest.equals(b.digest);
}

export function sha256(data: Uint8Array | string): Hash {
  return { algo: 'sha256', digest: createHash('sha256').update(data).digest() };
}
