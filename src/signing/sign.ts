/**
 * Ed25519 signatures over narinfo fingerprints, as Nix makes and checks them:
 * a signature is `<key name>:<base64 of the 64-byte detached signature>`, and
 * it counts only when a trusted key of that exact name verifies it (Nix's
 * verifyDetached). Ed25519 is deterministic, so narpush's signature of a
 * fingerprint is byte for byte the one Nix makes with the same key.
 * Pure: keys come in as values, nothing is read or printed here.
 */
import nacl from 'tweetnacl';
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

export function signFingerprint(fp: string, key: SecretKey): string {
  const sig = nacl.sign.detached(Buffer.from(fp, 'utf8'), key.secretKey);
  return `${key.name}:${Buffer.from(sig).toString('base64')}`;
}

/** Whether `sig` is a valid signature of `fp` by one of the trusted keys. Malformed signatures are simply not valid. */
export function verifySignature(fp: string, sig: string, trustedKeys: TrustedKeys): boolean {
  const colon = sig.indexOf(':');
  if (colon <= 0) return false;
  const key = trustedKeyMap(trustedKeys).get(sig.slice(0, colon));
  if (key === undefined) return false;
  const body = sig.slice(colon + 1);
  if (!SIG_BASE64.test(body)) return false;
  return nacl.sign.detached.verify(Buffer.from(fp, 'utf8'), Buffer.from(body, 'base64'), key.publicKey);
}

/** The narinfo with a signature by each key added (signatures kept sorted and unique, as Nix keeps them). */
export function signNarInfo(info: NarInfo, keys: SecretKey | readonly SecretKey[]): NarInfo {
  const fp = narInfoFingerprint(info);
  const list = Array.isArray(keys) ? (keys as readonly SecretKey[]) : [keys as SecretKey];
  return { ...info, sigs: sortUnique([...info.sigs, ...list.map((k) => signFingerprint(fp, k))]) };
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
