/**
 * The string a narinfo signature signs (Nix's ValidPathInfo::fingerprint):
 *
 *   1;<store path>;sha256:<nix32 NarHash>;<NarSize>;<reference paths, sorted, comma separated>
 *
 * URL, compression, FileHash, Deriver and CA are not part of it, so they can
 * change without re-signing. Pure; it refuses (rather than guesses) a
 * fingerprint Nix would not compute: a non-SHA-256 NarHash (Nix's signing
 * tools require `sha256:`) or an unknown (zero) NarSize.
 */
import { NarpushError } from '../errors.js';
import { type Hash, formatHash } from '../hash/hash.js';
import type { StorePath } from '../store/store-path.js';
import { type NarInfo, sortReferences } from './narinfo.js';

export function fingerprint(
  storePath: StorePath,
  narHash: Hash,
  narSize: number,
  references: Iterable<StorePath>,
): string {
  if (narHash.algo !== 'sha256') {
    throw new NarpushError(
      'BAD_FINGERPRINT',
      `cannot sign '${storePath.path}': its NarHash is ${narHash.algo}, signatures need sha256`,
    );
  }
  if (!Number.isSafeInteger(narSize) || narSize <= 0) {
    throw new NarpushError('BAD_FINGERPRINT', `cannot sign '${storePath.path}': its NarSize (${narSize}) is not known`);
  }
  // Nix prints every reference with the store's own directory, in set order.
  const refs = sortReferences(references).map((r) => `${storePath.storeDir}/${r.baseName}`);
  return `1;${storePath.path};${formatHash(narHash, 'nix32')};${narSize};${refs.join(',')}`;
}

export function narInfoFingerprint(info: NarInfo): string {
  return fingerprint(info.storePath, info.narHash, info.narSize, info.references);
}
