/**
 * The worker side of background-hash.ts: the CPU work of an upload that can
 * run beside the main thread. Holds incremental hashes by id and feeds them
 * the bytes the main thread posts; signs batches of narinfo fingerprints
 * with keys the main thread registered. Replies to every update (an
 * acknowledgement the sender's flow control waits on, which hands the
 * buffer back), every digest and every batch of signatures. Never touches
 * anything but its own hashes and keys.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { SecretKey } from '../signing/keys.js';
import { signFingerprint } from '../signing/sign.js';

export type CryptoRequest =
  | { readonly op: 'open'; readonly id: number; readonly algo: string }
  | { readonly op: 'update'; readonly id: number; readonly bytes: Uint8Array }
  | { readonly op: 'digest'; readonly id: number }
  | { readonly op: 'drop'; readonly id: number }
  | { readonly op: 'key'; readonly keyId: number; readonly key: SecretKey }
  /** Sign fingerprints[i] with the key keyIds[i]. */
  | { readonly op: 'sign'; readonly id: number; readonly keyIds: readonly number[]; readonly fingerprints: readonly string[] };

export type CryptoReply =
  /** The update's buffer comes back with its acknowledgement, for reuse. */
  | { readonly op: 'ack'; readonly id: number; readonly length: number; readonly buffer: ArrayBuffer }
  | { readonly op: 'digest'; readonly id: number; readonly digest: Uint8Array }
  | { readonly op: 'signed'; readonly id: number; readonly sigs: readonly string[] }
  | { readonly op: 'error'; readonly id: number; readonly message: string };

const hashes = new Map<number, Hash>();
const keys = new Map<number, SecretKey>();
const port = parentPort!;

port.on('message', (m: CryptoRequest) => {
  try {
    switch (m.op) {
      case 'open':
        hashes.set(m.id, createHash(m.algo));
        break;
      case 'update':
        hashes.get(m.id)!.update(m.bytes);
        port.postMessage({ op: 'ack', id: m.id, length: m.bytes.length, buffer: m.bytes.buffer as ArrayBuffer } satisfies CryptoReply, [
          m.bytes.buffer as ArrayBuffer,
        ]);
        break;
      case 'digest': {
        const digest = hashes.get(m.id)!.digest();
        hashes.delete(m.id);
        port.postMessage({ op: 'digest', id: m.id, digest } satisfies CryptoReply);
        break;
      }
      case 'drop':
        hashes.delete(m.id);
        break;
      case 'key':
        keys.set(m.keyId, m.key);
        break;
      case 'sign': {
        const sigs = m.fingerprints.map((fp, i) => signFingerprint(fp, keys.get(m.keyIds[i]!)!));
        port.postMessage({ op: 'signed', id: m.id, sigs } satisfies CryptoReply);
        break;
      }
    }
  } catch (e) {
    if (m.op !== 'key') {
      hashes.delete(m.id);
      port.postMessage({ op: 'error', id: m.id, message: e instanceof Error ? e.message : String(e) } satisfies CryptoReply);
    }
  }
});
