/**
 * Content addresses as narinfo `CA:` lines carry them: `text:sha256:<hash>`,
 * `fixed:<algo>:<hash>` (flat file) and `fixed:r:<algo>:<hash>` (NAR).
 * Parsed the way Nix 2.8's parseContentAddress does (any encoding of the hash
 * body is accepted) and written the way renderContentAddress writes them
 * (`algo:<nix32>`). Pure, no I/O; never accepts a CA it could not write back.
 */
import { NarpushError } from '../errors.js';
import { type Hash, type HashAlgo, formatHash, parseHash } from '../hash/hash.js';

/** How the content was hashed: `text` (derivations, toFile), `flat` (one file) or `recursive` (its NAR). */
export type ContentAddressMethod = 'text' | 'flat' | 'recursive';

export interface ContentAddress {
  readonly method: ContentAddressMethod;
  readonly hash: Hash;
}

const ALGOS: readonly HashAlgo[] = ['md5', 'sha1', 'sha256', 'sha512'];

function bad(ca: string, why: string): NarpushError {
  return new NarpushError('BAD_CONTENT_ADDRESS', `invalid content address '${ca}': ${why}`);
}

/** Parse `text:sha256:…`, `fixed:algo:…` or `fixed:r:algo:…`. */
export function parseContentAddress(ca: string): ContentAddress {
  const colon = ca.indexOf(':');
  if (colon < 0) throw bad(ca, "it is not in the form '<prefix>:<rest>'");
  const prefix = ca.slice(0, colon);
  let rest = ca.slice(colon + 1);
  let method: ContentAddressMethod;
  if (prefix === 'text') {
    method = 'text';
  } else if (prefix === 'fixed') {
    method = 'flat';
    if (rest.startsWith('r:')) {
      method = 'recursive';
      rest = rest.slice(2);
    }
  } else {
    throw bad(ca, `the prefix '${prefix}' is neither 'text' nor 'fixed'`);
  }
  const algoEnd = rest.indexOf(':');
  const algo = algoEnd < 0 ? '' : rest.slice(0, algoEnd);
  if (!(ALGOS as readonly string[]).includes(algo)) throw bad(ca, 'it does not name a hash algorithm');
  if (method === 'text' && algo !== 'sha256') throw bad(ca, `a text content address must use sha256, not ${algo}`);
  // `algo:body` only: an SRI form or a second prefix here is not what Nix accepts.
  const body = rest.slice(algoEnd + 1);
  if (body.includes(':') || body.includes('-')) throw bad(ca, 'the hash is not in base16, nix32 or base64');
  try {
    return { method, hash: parseHash(`${algo}:${body}`) };
  } catch (e) {
    throw new NarpushError('BAD_CONTENT_ADDRESS', `invalid content address '${ca}': ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/** Render as Nix does: the hash in nix32. */
export function formatContentAddress(ca: ContentAddress): string {
  const prefix = ca.method === 'text' ? 'text:' : ca.method === 'recursive' ? 'fixed:r:' : 'fixed:';
  return prefix + formatHash(ca.hash, 'nix32');
}
