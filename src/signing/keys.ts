/**
 * Nix signing keys, in the formats of `nix-store --generate-binary-cache-key`:
 *
 *   secret: <name>:<base64 of 64 bytes: the Ed25519 seed, then the public key>
 *   public: <name>:<base64 of 32 bytes>
 *
 * (libsodium's layout, which tweetnacl shares.) Parsing tolerates trailing
 * whitespace, as a key file saved by an editor has a final newline. Pure, no
 * I/O (key files are read in key-file.ts). Error messages may name a key but
 * must never contain key material.
 */
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { NarpushError } from '../errors.js';

export const SEED_BYTES = 32;
export const PUBLIC_KEY_BYTES = 32;
export const SECRET_KEY_BYTES = 64;

export interface SecretKey {
  readonly name: string;
  /** 64 bytes: seed then public key. */
  readonly secretKey: Uint8Array;
}

export interface PublicKey {
  readonly name: string;
  /** 32 bytes. */
  readonly publicKey: Uint8Array;
}

/** Why `name` cannot name a key, or undefined when it can. */
export function keyNameError(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.includes(':')) return "the name contains ':'";
  // A name with whitespace could not be listed in trusted-public-keys.
  if (/\s/.test(name)) return 'the name contains whitespace';
  if (/[\x00-\x1f\x7f]/.test(name)) return 'the name contains a control character';
  return undefined;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bad(what: string, why: string): NarpushError {
  return new NarpushError('BAD_KEY', `${what} ${why}`);
}

/** Split `name:base64` and decode; `what` describes the key in messages ("secret key in 'sk'"). */
function splitKey(text: string, what: string, kind: string): { name: string; bytes: Buffer } {
  const s = text.replace(/\s+$/, '');
  const colon = s.indexOf(':');
  if (colon < 0) throw bad(what, `is not a Nix ${kind} (expected 'name:base64', found no ':')`);
  const name = s.slice(0, colon);
  const why = keyNameError(name);
  if (why !== undefined) throw bad(what, `is not a Nix ${kind}: ${why}`);
  const body = s.slice(colon + 1);
  if (body === '' || !BASE64.test(body)) throw bad(`${what} ('${name}')`, 'is not valid base64 after the name');
  return { name, bytes: Buffer.from(body, 'base64') };
}

// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410), for node:crypto.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * The Ed25519 public key of a 32-byte seed, by OpenSSL (node:crypto): what
 * libsodium and tweetnacl store as a secret key's second half. (OpenSSL, not
 * a pure-JavaScript library: this runs at every command's start, where slow
 * arithmetic would delay every command.)
 */
export function publicKeyFromSeed(seed: Uint8Array): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  return Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x!, 'base64url');
}

/** Parse a secret key; checks that its public half matches its seed. */
export function parseSecretKey(text: string, what = 'secret key'): SecretKey {
  const { name, bytes } = splitKey(text, what, 'secret key');
  if (bytes.length === PUBLIC_KEY_BYTES) {
    throw bad(`${what} ('${name}')`, 'is a public key, not a secret key (use the secret key file made with the public one)');
  }
  if (bytes.length !== SECRET_KEY_BYTES) {
    throw bad(`${what} ('${name}')`, `has ${bytes.length} bytes, expected ${SECRET_KEY_BYTES} (Ed25519 seed and public key)`);
  }
  if (!publicKeyFromSeed(bytes.subarray(0, SEED_BYTES)).equals(bytes.subarray(SEED_BYTES))) {
    // libsodium signs with the stored public half, so such a key makes signatures nobody can verify.
    throw bad(`${what} ('${name}')`, 'is corrupt: its public half does not match its seed');
  }
  return { name, secretKey: new Uint8Array(bytes) };
}

export function parsePublicKey(text: string, what = 'public key'): PublicKey {
  const { name, bytes } = splitKey(text, what, 'public key');
  if (bytes.length === SECRET_KEY_BYTES) {
    throw bad(`${what} ('${name}')`, 'is a secret key, not a public key (never hand out the secret key)');
  }
  if (bytes.length !== PUBLIC_KEY_BYTES) {
    throw bad(`${what} ('${name}')`, `has ${bytes.length} bytes, expected ${PUBLIC_KEY_BYTES}`);
  }
  return { name, publicKey: new Uint8Array(bytes) };
}

/** Parse a whitespace-separated list of public keys, as in Nix's trusted-public-keys setting. */
export function parsePublicKeys(list: string, what = 'trusted public key'): PublicKey[] {
  return list
    .split(/\s+/)
    .filter((s) => s !== '')
    .map((s) => parsePublicKey(s, what));
}

export function formatSecretKey(key: SecretKey): string {
  return `${key.name}:${Buffer.from(key.secretKey).toString('base64')}`;
}

export function formatPublicKey(key: PublicKey): string {
  return `${key.name}:${Buffer.from(key.publicKey).toString('base64')}`;
}

export function toPublicKey(key: SecretKey): PublicKey {
  return { name: key.name, publicKey: key.secretKey.slice(SEED_BYTES) };
}

function checkName(name: string): void {
  const why = keyNameError(name);
  if (why !== undefined) throw new NarpushError('BAD_KEY_NAME', `invalid key name ${JSON.stringify(name)}: ${why}`);
}

/** A fresh key pair from `seed` (32 random bytes unless given: tests pass one). */
export function newSecretKey(name: string, seed: Uint8Array = randomBytes(SEED_BYTES)): SecretKey {
  checkName(name);
  if (seed.length !== SEED_BYTES) throw new NarpushError('BAD_KEY', `a key seed must have ${SEED_BYTES} bytes`);
  return { name, secretKey: new Uint8Array(Buffer.concat([seed, publicKeyFromSeed(seed)])) };
}

/** Both files' contents for a new key pair, without trailing newlines (as Nix writes them). */
export function generateKeyPair(name: string): { readonly secretKey: string; readonly publicKey: string } {
  const key = newSecretKey(name);
  return { secretKey: formatSecretKey(key), publicKey: formatPublicKey(toPublicKey(key)) };
}
