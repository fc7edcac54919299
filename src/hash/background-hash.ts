/**
 * Incremental hashing and narinfo signing on a worker thread (the "crypto
 * thread", crypto-thread.ts). SHA-256 runs at about 370 MiB/s
 * on a core without SHA extensions, and a NAR upload hashes every byte
 * twice (NarHash, FileHash): on the main thread that alone was 0.7 s of a
 * 1.3 s upload of 103 MiB with zstd. Here the NAR hash runs beside the main
 * thread, which keeps reading, compressing and writing.
 *
 * One worker serves the whole process (more for whole NARs, below),
 * started on first use (about 30 ms) and kept referenced only while it has
 * work, so it never holds the process alive. Once it has had no work for
 * the idle delay (setThreadIdleDelay), it is stopped and its memory given
 * back; the next use starts it again. Bytes are copied to the worker (a chunk may share its
 * memory with others); at most MAX_IN_FLIGHT bytes wait there per hash, and
 * `update` returns a promise to wait on when that is reached. If the worker
 * dies, every open hash fails: a digest is never made up.
 *
 * Signatures: an Ed25519 signature costs 70-100 µs of OpenSSL on a slow
 * core, the largest single cost of uploading a tiny path. Fingerprints
 * asked for in the same tick go to the thread in one message and come back
 * in one. Ed25519 is deterministic, so if the thread fails, the main thread
 * signs instead: the bytes are the same.
 *
 * Whole NARs: when an upload has several large NARs, each is read, hashed,
 * compressed and hashed again on one thread (nar-job.ts), and there is
 * one such thread per core (the first one is the crypto thread above). Its
 * compressed pieces move to the main thread without a copy, at most
 * NAR_JOB_AHEAD bytes ahead of the consumer.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { NarJobRequest, NarJobResult } from '../cache/nar-job.js';
import { NarpushError } from '../errors.js';
import type { SecretKey } from '../signing/keys.js';
import { signFingerprint } from '../signing/sign.js';
import type { CryptoReply, CryptoRequest } from './crypto-thread.js';

/** Bytes posted to the worker and not yet hashed, per hash, before `update` asks the caller to wait. */
export const MAX_IN_FLIGHT = 8 << 20;
/** Transfer buffers are this big and come back to be reused: no fresh (zeroed, faulted-in) memory per chunk. */
const TRANSFER_BYTES = 2 << 20;
const MAX_FREE_BUFFERS = 8;

interface PendingSign {
  readonly fingerprint: string;
  readonly key: SecretKey;
  readonly resolve: (sig: string) => void;
  readonly reject: (e: unknown) => void;
}

interface Job {
  /** The thread running it: replies and flow control go to this one only. */
  readonly worker: Worker;
  readonly pieces: { bytes: Buffer; narBytes: number }[];
  /** Bytes in `pieces`. */
  queued: number;
  result?: NarJobResult;
  failed?: Error;
  wake?: () => void;
}

/** A compressed piece of a NAR job, and how much of the NAR was read when it was made. */
export interface NarJobPiece {
  readonly bytes: Buffer;
  readonly narBytes: number;
}

interface Open {
  readonly worker: Worker;
  inFlight: number;
  resumeWaiting?: () => void;
  digest?: { resolve: (b: Buffer) => void; reject: (e: Error) => void };
  failed?: Error;
}

/** A started worker and the signing keys it holds, by id. */
interface Live {
  readonly worker: Worker;
  readonly keyIds: WeakMap<SecretKey, number>;
}

/** How long a thread with no work is kept before it is stopped (restarted on the next use). */
export const DEFAULT_THREAD_IDLE_MS = 30_000;

/**
 * Invariants that make a dead thread a clean error, never a TypeError or a
 * hang: every piece of work (open hash, signing batch, NAR job) records the
 * worker it was given to and posts only to that one; all of it is failed
 * together when that worker stops ('error' or 'exit', whichever comes
 * first), and only the current worker's messages are heard. A worker that
 * was terminated but has not yet said 'exit' swallows what is posted to it;
 * its 'exit' then fails whatever waits on it.
 */
class CryptoThread {
  private live: Live | undefined;
  private readonly open = new Map<number, Open>();
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private free: ArrayBuffer[] = [];
  // Hashes the thread failed, until their owner drops them: later calls report why.
  private readonly failed = new Map<number, Error>();
  // Signatures asked for in this tick, and batches the thread is signing.
  private queued: PendingSign[] = [];
  private readonly signing = new Map<number, { worker: Worker; batch: PendingSign[] }>();
  private nextKeyId = 1;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(private idleMs: number) {}

  /** The worker, started if need be (unreferenced while it has no work). */
  ensure(): Worker {
    return this.start().worker;
  }

  private start(): Live {
    if (this.live) return this.live;
    const worker = new Worker(new URL('./crypto-thread.js', import.meta.url));
    worker.on('message', (m: CryptoReply) => {
      if (this.live?.worker === worker) this.onReply(m);
    });
    worker.on('error', (e) => this.fail(worker, e));
    worker.on('exit', (code) => this.fail(worker, new Error(`crypto thread exited with code ${code}`)));
    this.live = { worker, keyIds: new WeakMap() };
    // After the listeners: adding a 'message' listener references the port again.
    this.updateRef();
    return this.live;
  }

  private busy(): boolean {
    return this.open.size > 0 || this.signing.size > 0 || this.jobs.size > 0;
  }

  /**
   * Referenced (holding the process alive) only while a hash is open, a
   * batch is being signed or a NAR job runs; once it has had no work for
   * `idleMs`, stopped, so an idle daemon does not keep threads, their heaps
   * and the transfer buffers.
   */
  private updateRef(): void {
    const worker = this.live?.worker;
    if (!worker) return;
    if (this.busy()) {
      worker.ref();
      return;
    }
    worker.unref();
    if (this.idleTimer) this.idleTimer.refresh();
    else this.idleTimer = setTimeout(() => this.releaseIfIdle(), this.idleMs).unref();
  }

  private releaseIfIdle(): void {
    this.idleTimer = undefined;
    const live = this.live;
    if (!live || this.busy()) return;
    // Forgotten first: its 'exit' is then not a failure, and the next use starts a new one.
    this.live = undefined;
    this.free = [];
    // Nothing waits on it; a failure to stop must not become an unhandled rejection.
    live.worker.terminate().catch(() => undefined);
  }

  setIdleDelay(ms: number): void {
    this.idleMs = ms;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.updateRef();
  }

  get started(): boolean {
    return this.live !== undefined;
  }

  create(algo: string): BackgroundHash {
    const { worker } = this.start();
    const id = this.nextId++;
    this.open.set(id, { worker, inFlight: 0 });
    this.updateRef();
    worker.postMessage({ op: 'open', id, algo } satisfies CryptoRequest);
    return new BackgroundHash(this, id);
  }

  sign(fingerprint: string, key: SecretKey): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      this.queued.push({ fingerprint, key, resolve, reject });
      if (this.queued.length === 1) queueMicrotask(() => this.flushSigns());
    });
  }

  private flushSigns(): void {
    const batch = this.queued;
    this.queued = [];
    let live: Live;
    try {
      live = this.start();
    } catch {
      return signHere(batch);
    }
    const { worker, keyIds: known } = live;
    const id = this.nextId++;
    try {
      const keyIds: number[] = [];
      for (const s of batch) {
        let keyId = known.get(s.key);
        if (keyId === undefined) {
          keyId = this.nextKeyId++;
          worker.postMessage({ op: 'key', keyId, key: { name: s.key.name, secretKey: s.key.secretKey } } satisfies CryptoRequest);
          known.set(s.key, keyId);
        }
        keyIds.push(keyId);
      }
      worker.postMessage({ op: 'sign', id, keyIds, fingerprints: batch.map((s) => s.fingerprint) } satisfies CryptoRequest);
    } catch {
      return signHere(batch);
    }
    this.signing.set(id, { worker, batch });
    this.updateRef();
  }

  /** NAR jobs running on this thread. */
  get activeJobs(): number {
    return this.jobs.size;
  }

  /**
   * Run a NAR job here: the compressed pieces in order, then the digests as
   * the generator's return value. Returning early cancels the job. Once the
   * job has failed, pieces still waiting here are dropped, not handed out.
   */
  async *narJob(req: NarJobRequest): AsyncGenerator<NarJobPiece, NarJobResult> {
    const { worker } = this.start();
    const id = this.nextId++;
    const job: Job = { worker, pieces: [], queued: 0 };
    this.jobs.set(id, job);
    this.updateRef();
    worker.postMessage({ op: 'nar', id, job: req } satisfies CryptoRequest);
    let ended = false;
    try {
      for (;;) {
        if (job.failed) {
          job.pieces.length = 0;
          job.queued = 0;
          throw job.failed;
        }
        const piece = job.pieces.shift();
        if (piece) {
          job.queued -= piece.bytes.length;
          worker.postMessage({ op: 'taken', id, bytes: piece.bytes.length } satisfies CryptoRequest);
          yield piece;
          continue;
        }
        if (job.result) {
          ended = true;
          return job.result;
        }
        await new Promise<void>((resolve) => (job.wake = resolve));
      }
    } finally {
      if (this.jobs.get(id) === job) {
        this.jobs.delete(id);
        this.updateRef();
      }
      if (!ended && !job.failed) worker.postMessage({ op: 'cancel', id } satisfies CryptoRequest);
    }
  }

  private onJobReply(job: Job, m: CryptoReply): void {
    if (job.failed) return;
    if (m.op === 'piece') {
      job.pieces.push({ bytes: Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength), narBytes: m.narBytes });
      job.queued += m.bytes.byteLength;
      maxQueued = Math.max(maxQueued, job.queued);
    } else if (m.op === 'nar-done') {
      job.result = { narDigest: m.narDigest, narSize: m.narSize, fileDigest: m.fileDigest, fileSize: m.fileSize };
    } else if (m.op === 'nar-failed') {
      job.failed = new NarpushError(m.code ?? 'NAR_JOB_FAILED', m.message);
    }
    wakeJob(job);
  }

  update(id: number, chunk: Uint8Array): Promise<void> | undefined {
    const h = this.state(id);
    for (let off = 0; off < chunk.length; off += TRANSFER_BYTES) {
      const part = chunk.subarray(off, off + TRANSFER_BYTES);
      const buffer = this.free.pop() ?? new ArrayBuffer(TRANSFER_BYTES);
      const copy = new Uint8Array(buffer, 0, part.length);
      copy.set(part);
      h.inFlight += copy.length;
      h.worker.postMessage({ op: 'update', id, bytes: copy } satisfies CryptoRequest, [buffer]);
    }
    if (h.inFlight < MAX_IN_FLIGHT) return undefined;
    return new Promise<void>((resolve, reject) => {
      h.resumeWaiting = () => (h.failed ? reject(h.failed) : resolve());
    });
  }

  digest(id: number): Promise<Buffer> {
    let h: Open;
    try {
      h = this.state(id);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<Buffer>((resolve, reject) => {
      h.digest = { resolve, reject };
      h.worker.postMessage({ op: 'digest', id } satisfies CryptoRequest);
    });
  }

  drop(id: number): void {
    this.failed.delete(id);
    const h = this.open.get(id);
    if (!h) return;
    this.close(id);
    h.worker.postMessage({ op: 'drop', id } satisfies CryptoRequest);
  }

  private state(id: number): Open {
    const h = this.open.get(id);
    if (h) return h;
    throw this.failed.get(id) ?? new NarpushError('HASH_FAILED', 'hash used after its digest');
  }

  private close(id: number): void {
    this.open.delete(id);
    this.updateRef();
  }

  private onReply(m: CryptoReply): void {
    const job = this.jobs.get(m.id);
    if (job) return this.onJobReply(job, m);
    const signing = this.signing.get(m.id);
    if (signing) {
      this.signing.delete(m.id);
      this.updateRef();
      if (m.op === 'signed') signing.batch.forEach((s, i) => s.resolve(m.sigs[i]!));
      else signHere(signing.batch); // the same call here gives the same signature, or the same error
      return;
    }
    const h = this.open.get(m.id);
    if (m.op === 'ack' && this.free.length < MAX_FREE_BUFFERS) this.free.push(m.buffer);
    // A job's replies after it was cancelled or failed: nobody waits for them.
    if (!h || m.op === 'signed' || m.op === 'piece' || m.op === 'nar-done' || m.op === 'nar-failed') return;
    if (m.op === 'ack') {
      h.inFlight -= m.length;
      if (h.resumeWaiting && h.inFlight < MAX_IN_FLIGHT / 2) {
        const resume = h.resumeWaiting;
        delete h.resumeWaiting;
        resume();
      }
    } else if (m.op === 'digest') {
      this.close(m.id);
      h.digest?.resolve(Buffer.from(m.digest));
    } else {
      this.failOne(m.id, h, new NarpushError('HASH_FAILED', `hashing failed: ${m.message}`));
    }
  }

  private failOne(id: number, h: Open, e: Error): void {
    h.failed = e;
    this.failed.set(id, e);
    this.open.delete(id);
    h.digest?.reject(e);
    const resume = h.resumeWaiting;
    delete h.resumeWaiting;
    resume?.();
  }

  /** `worker` stopped: fail everything it held (signatures are made here instead). */
  private fail(worker: Worker, cause: Error): void {
    if (this.live?.worker === worker) this.live = undefined;
    const e = new NarpushError('HASH_FAILED', `the crypto thread stopped: ${cause.message}`, { cause });
    for (const [id, h] of [...this.open]) if (h.worker === worker) this.failOne(id, h, e);
    for (const [id, job] of [...this.jobs]) {
      if (job.worker !== worker) continue;
      this.jobs.delete(id);
      job.failed = e;
      wakeJob(job);
    }
    const batches = [...this.signing].filter(([, s]) => s.worker === worker);
    for (const [id] of batches) this.signing.delete(id);
    this.updateRef();
    for (const [, s] of batches) signHere(s.batch);
  }

  /**
   * Tests: stop the worker as if it had crashed. The returned promise settles
   * once its 'exit' was handled; until then it is still this thread's worker,
   * as after a real crash.
   */
  async terminateForTests(): Promise<void> {
    const worker = this.live?.worker;
    if (!worker) return;
    // Referenced until its 'exit': an idle (unreferenced) worker would let the loop end first.
    worker.ref();
    await worker.terminate();
  }
}

function wakeJob(job: Job): void {
  const wake = job.wake;
  delete job.wake;
  wake?.();
}

function signHere(batch: readonly PendingSign[]): void {
  for (const s of batch) {
    try {
      s.resolve(signFingerprint(s.fingerprint, s.key));
    } catch (e) {
      s.reject(e);
    }
  }
}

export class BackgroundHash {
  constructor(
    private readonly thread: CryptoThread,
    private readonly id: number,
  ) {}

  /** Hash `chunk` (copied at once). When a promise is returned, wait for it before the next update. */
  update(chunk: Uint8Array): Promise<void> | undefined {
    return this.thread.update(this.id, chunk);
  }

  /** The digest of everything updated; the hash is closed afterwards. */
  digest(): Promise<Buffer> {
    return this.thread.digest(this.id);
  }

  /** Forget the hash (on failure); harmless after digest. */
  drop(): void {
    this.thread.drop(this.id);
  }
}

let idleMs = DEFAULT_THREAD_IDLE_MS;
const shared = new CryptoThread(idleMs);

/** A new incremental hash of `algo` (a node:crypto name) computed on the process's crypto thread. */
export function backgroundHash(algo: 'sha256' | 'sha512' | 'sha1'): BackgroundHash {
  return shared.create(algo);
}

/**
 * `<key name>:<signature>` of a narinfo fingerprint, as signFingerprint
 * makes it, computed on the crypto thread (see above).
 */
export function backgroundSign(fingerprint: string, key: SecretKey): Promise<string> {
  return shared.sign(fingerprint, key);
}

let maxQueued = 0;

/** Tests only: the most bytes of one NAR job's pieces waiting here since the last call. */
export function narJobBacklogForTests(): number {
  const m = maxQueued;
  maxQueued = 0;
  return m;
}

/** Threads for whole NARs: the crypto thread and one more per further core. */
const pool: CryptoThread[] = [shared];

function poolThread(i: number): CryptoThread {
  while (pool.length <= i) pool.push(new CryptoThread(idleMs));
  return pool[i]!;
}

/**
 * Run a NAR job (see nar-job.ts) on the thread with the fewest, starting
 * another (up to one per core) when every one has some.
 */
export function runNarJobOnThread(req: NarJobRequest): AsyncGenerator<NarJobPiece, NarJobResult> {
  let best = pool[0]!;
  for (const t of pool) if (t.activeJobs < best.activeJobs) best = t;
  if (best.activeJobs > 0 && pool.length < availableParallelism()) best = poolThread(pool.length);
  return best.narJob(req);
}

/**
 * Start the crypto thread now (and `threads - 1` more for whole NARs, at
 * most one per core), so that their start-up overlaps other work; they
 * never hold the process alive.
 */
export function prewarmCryptoThread(threads = 1): void {
  const n = Math.max(1, Math.min(threads, availableParallelism()));
  for (let i = 0; i < n; i++) poolThread(i).ensure();
}

/**
 * How long each thread may have no work (no open hash, no signing batch, no
 * NAR job) before it is stopped; the next use starts it again. Set at the
 * edge (a daemon keeps the default; tests make it short).
 */
export function setThreadIdleDelay(ms: number): void {
  idleMs = ms;
  for (const t of pool) t.setIdleDelay(ms);
}

/** Tests only: how many threads are running now. */
export function runningThreadsForTests(): number {
  return pool.filter((t) => t.started).length;
}

/** Tests only: every thread, as if it had crashed. */
export async function terminateCryptoThreadForTests(): Promise<void> {
  await Promise.all(pool.map((t) => t.terminateForTests()));
}
