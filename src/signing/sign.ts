/**
 * Ed25519 signatures over narinfo fingerprints, as Nix makes and checks them:
 * a signature is `<key name>:<base64 of the 64-byte detached signature>`, and
 * it counts only when a trusted key of that exact name verifies it (Nix's
 * verifyDetached). Ed25519 is deterministic, so narpush's signature of a
 * fingerprint is byte for byte the one Nix makes with the same key.
 * Pure: keys come in as values, nothing is read or printed here.
 *
 * The arithmetic is OpenSSL's (node:crypto), not tweetnacl's: uploading
 * thousands of small paths signs thousands of narinfos, and tweetnacl takes
 * milliseconds per signature where OpenSSL takes tens of microseconds. The
 * tests check both give the same bytes (Ed25519 is deterministic).
 */
import { type KeyObject, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { narInfoFingerprint } from '../narinfo/fingerprint.js';
import { type NarInfo, sortUnique } from '../narinfo/narinfo.js';
import type { PublicKey, SecretKey } from './keys.js';

/** Trusted keys by name, or a list of them (for a name listed twice, the first wins, as in Nix). */
export type TrustedKeys = ReadonlyMap<string, PublicKey> | Iterable<PublicKey>;

export function trustedKeyMap(keys: TrustedKeys): ReadonlyMap<string, PublicKey> {
  if (keys instanceof Map) return keys as ReadonlyMap<string, PublicKey>;
  const map = new Map<string, PublicKey>();
  for (const k of keys as Iterable<PublicKey>) if (!map.has(k.name)) map.set(k.name, k);
  return map;
}

const SIG_BASE64 = /^[A-Za-z0-9+/]{86}==$/;

// KeyObjects cost more to make than a signature: one per key, for as long as the key lives.
const privateKeys = new WeakMap<SecretKey, KeyObject>();
const publicKeys = new WeakMap<PublicKey, KeyObject>();

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function privateKeyObject(key: SecretKey): KeyObject {
  let k = privateKeys.get(key);
  if (!k) {
    const jwk = { kty: 'OKP', crv: 'Ed25519', d: b64url(key.secretKey.subarray(0, 32)), x: b64url(key.secretKey.subarray(32)) };
    k = createPrivateKey({ key: jwk, format: 'jwk' });
    privateKeys.set(key, k);
  }
  return k;
}

function publicKeyObject(key: PublicKey): KeyObject {
  let k = publicKeys.get(key);
  if (!k) {
    k = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(key.publicKey) }, format: 'jwk' });
    publicKeys.set(key, k);
  }
  return k;
}

export function signFingerprint(fp: string, key: SecretKey): string {
  const sig = sign(null, Buffer.from(fp, 'utf8'), privateKeyObject(key));
  return `${key.name}:${sig.toString('base64')}`;
}

/** Whether `sig` is a valid signature of `fp` by one of the trusted keys. Malformed signatures are simply not valid. */
export function verifySignature(fp: string, sig: string, trustedKeys: TrustedKeys): boolean {
  const colon = sig.indexOf(':');
  if (colon <= 0) return false;
  const key = trustedKeyMap(trustedKeys).get(sig.slice(0, colon));
  if (key === undefined) return false;
  const body = sig.slice(colon + 1);
  if (!SIG_BASE64.test(body)) return false;
  try {
    return verify(null, Buffer.from(fp, 'utf8'), publicKeyObject(key), Buffer.from(body, 'base64'));
  } catch {
    return false; // a public key that is not a curve point verifies nothing
  }
}

/** The narinfo with a signature by each key added (signatures kept sorted and unique, as Nix keeps them). */
export function signNarInfo(info: NarInfo, keys: SecretKey | readonly SecretKey[]): NarInfo {
  const fp = narInfoFingerprint(info);
  const list = Array.isArray(keys) ? (keys as readonly SecretKey[]) : [keys as SecretKey];
  return { ...info, sigs: sortUnique([...info.sigs, ...list.map((k) => signFingerprint(fp, k))]) };
}

/** signNarInfo with each signature made by `signer` (signFingerprint elsewhere, such as on another thread). */
export async function signNarInfoWith(
  info: NarInfo,
  keys: readonly SecretKey[],
  signer: (fingerprint: string, key: SecretKey) => Promise<string>,
): Promise<NarInfo> {
  const fp = narInfoFingerprint(info);
  const sigs = await Promise.all(keys.map((k) => signer(fp, k)));
  return { ...info, sigs: sortUnique([...info.sigs, ...sigs]) };
}

/**
 * How many of the narinfo's signatures a trusted key verifies (Nix's
 * checkSignatures, minus its shortcut that counts a content-addressed path as
 * fully signed: that needs the store path computation, which lives elsewhere).
 */
export function verifyNarInfo(info: NarInfo, trustedKeys: TrustedKeys): number {
  const fp = narInfoFingerprint(info);
  const keys = trustedKeyMap(trustedKeys);
  return sortUnique(info.sigs).filter((sig) => verifySignature(fp, sig, keys)).length;
}
