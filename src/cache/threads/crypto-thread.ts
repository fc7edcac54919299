/**
 * The worker side of thread-pool.ts: the CPU work of an upload that can
 * run beside the main thread. Holds incremental hashes by id and feeds them
 * the bytes the main thread posts; signs batches of narinfo fingerprints
 * with keys the main thread registered; runs whole NAR jobs (nar-job.ts),
 * posting their compressed pieces as it goes, at most NAR_JOB_AHEAD bytes
 * ahead of what the main thread has taken. Replies to every update (an
 * acknowledgement the sender's flow control waits on, which hands the
 * buffer back), every digest and every batch of signatures. Never touches
 * anything but its own hashes, keys and the files of the NARs it is asked for.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { NAR_JOB_AHEAD, type NarJobRequest, runNarJob } from './nar-job.js';
import { type ErrorCode, NarpushError } from '../../errors.js';
import type { SecretKey } from '../../signing/keys.js';
import { signFingerprint } from '../../signing/sign.js';

export type CryptoRequest =
  | { readonly op: 'open'; readonly id: number; readonly algo: string }
  | { readonly op: 'update'; readonly id: number; readonly bytes: Uint8Array }
  | { readonly op: 'digest'; readonly id: number }
  | { readonly op: 'drop'; readonly id: number }
  | { readonly op: 'key'; readonly keyId: number; readonly key: SecretKey }
  /** Sign fingerprints[i] with the key keyIds[i]. */
  | { readonly op: 'sign'; readonly id: number; readonly keyIds: readonly number[]; readonly fingerprints: readonly string[] }
  | { readonly op: 'nar'; readonly id: number; readonly job: NarJobRequest }
  /** The main thread has taken `bytes` more of the job's pieces. */
  | { readonly op: 'taken'; readonly id: number; readonly bytes: number }
  | { readonly op: 'cancel'; readonly id: number };

export type CryptoReply =
  /** The update's buffer comes back with its acknowledgement, for reuse. */
  | { readonly op: 'ack'; readonly id: number; readonly length: number; readonly buffer: ArrayBuffer }
  | { readonly op: 'digest'; readonly id: number; readonly digest: Uint8Array }
  | { readonly op: 'signed'; readonly id: number; readonly sigs: readonly string[] }
  | { readonly op: 'error'; readonly id: number; readonly message: string }
  /** A NAR job's next compressed piece (its memory moves to the main thread). */
  | { readonly op: 'piece'; readonly id: number; readonly bytes: Uint8Array; readonly narBytes: number }
  | { readonly op: 'nar-done'; readonly id: number; readonly narDigest: Uint8Array; readonly narSize: number; readonly fileDigest: Uint8Array; readonly fileSize: number; readonly listing?: Uint8Array | null }
  /** `code` is a NarpushError's, when it was one. */
  | { readonly op: 'nar-failed'; readonly id: number; readonly code?: ErrorCode; readonly message: string };

interface Job {
  ahead: number;
  resume?: () => void;
  cancelled?: Error;
}

const hashes = new Map<number, Hash>();
const keys = new Map<number, SecretKey>();
const jobs = new Map<number, Job>();
const port = parentPort!;

function startJob(id: number, req: NarJobRequest): void {
  const job: Job = { ahead: 0 };
  jobs.set(id, job);
  const emit = (piece: Buffer, narBytes: number): Promise<void> | undefined => {
    // Counted first: moving its memory leaves `piece` empty here. A piece
    // shorter than its memory (the last one) still moves all of it.
    job.ahead += piece.length;
    port.postMessage({ op: 'piece', id, bytes: piece, narBytes } satisfies CryptoReply, [piece.buffer as ArrayBuffer]);
    if (job.ahead <= NAR_JOB_AHEAD || job.cancelled) return undefined;
    return new Promise<void>((resolve) => (job.resume = resolve));
  };
  runNarJob(req, emit, () => job.cancelled).then(
    (r) => port.postMessage({ op: 'nar-done', id, ...r } satisfies CryptoReply),
    (e: unknown) => {
      if (job.cancelled) return;
      const code = e instanceof NarpushError ? e.code : undefined;
      const message = e instanceof Error ? e.message : String(e);
      port.postMessage({ op: 'nar-failed', id, ...(code !== undefined ? { code } : {}), message } satisfies CryptoReply);
    },
  ).finally(() => jobs.delete(id));
}

function wake(job: Job | undefined): void {
  const resume = job?.resume;
  if (!job || !resume) return;
  delete job.resume;
  resume();
}

port.on('message', (m: CryptoRequest) => {
  try {
    switch (m.op) {
      case 'nar':
        startJob(m.id, m.job);
        break;
      case 'taken': {
        const job = jobs.get(m.id);
        if (job) job.ahead -= m.bytes;
        if (job && job.ahead <= NAR_JOB_AHEAD / 2) wake(job);
        break;
      }
      case 'cancel': {
        const job = jobs.get(m.id);
        if (job) job.cancelled = new NarpushError('UPLOAD_ABORTED', 'cancelled');
        wake(job);
        break;
      }
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
    if (m.op !== 'key' && m.op !== 'nar' && m.op !== 'taken' && m.op !== 'cancel') {
      hashes.delete(m.id);
      port.postMessage({ op: 'error', id: m.id, message: e instanceof Error ? e.message : String(e) } satisfies CryptoReply);
    }
  }
});
