/**
 * The worker side of background-hash.ts: holds incremental hashes by id
 * and feeds them the bytes the main thread posts. Replies to every update
 * (an acknowledgement the sender's flow control waits on, which hands the
 * buffer back) and to every digest. Never touches anything but its own hashes.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

export type HashRequest =
  | { readonly op: 'open'; readonly id: number; readonly algo: string }
  | { readonly op: 'update'; readonly id: number; readonly bytes: Uint8Array }
  | { readonly op: 'digest'; readonly id: number }
  | { readonly op: 'drop'; readonly id: number };

export type HashReply =
  /** The update's buffer comes back with its acknowledgement, for reuse. */
  | { readonly op: 'ack'; readonly id: number; readonly length: number; readonly buffer: ArrayBuffer }
  | { readonly op: 'digest'; readonly id: number; readonly digest: Uint8Array }
  | { readonly op: 'error'; readonly id: number; readonly message: string };

const hashes = new Map<number, Hash>();
const port = parentPort!;

port.on('message', (m: HashRequest) => {
  try {
    switch (m.op) {
      case 'open':
        hashes.set(m.id, createHash(m.algo));
        break;
      case 'update':
        hashes.get(m.id)!.update(m.bytes);
        port.postMessage({ op: 'ack', id: m.id, length: m.bytes.length, buffer: m.bytes.buffer as ArrayBuffer } satisfies HashReply, [
          m.bytes.buffer as ArrayBuffer,
        ]);
        break;
      case 'digest': {
        const digest = hashes.get(m.id)!.digest();
        hashes.delete(m.id);
        port.postMessage({ op: 'digest', id: m.id, digest } satisfies HashReply);
        break;
      }
      case 'drop':
        hashes.delete(m.id);
        break;
    }
  } catch (e) {
    hashes.delete(m.id);
    port.postMessage({ op: 'error', id: m.id, message: e instanceof Error ? e.message : String(e) } satisfies HashReply);
  }
});
