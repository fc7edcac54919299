/**
 * The one owner of narpush's worker threads: incremental hashing, narinfo
 * signing and whole-NAR jobs (crypto-thread.ts runs them). A NAR upload
 * hashes every byte twice (NarHash, FileHash); with the NAR hash on a
 * thread, the main thread keeps reading, compressing and writing.
 *
 * A ThreadPool is created at a command's edge (upload-path, the daemon's
 * pipeline), passed down in the upload options and closed by its owner;
 * tests build their own. Nothing here is shared between pools.
 *
 * The first thread (the crypto thread) is started on first use and kept
 * referenced only while it has work, so it never holds the process alive.
 * Once a thread has had no work for the idle delay (`idleMs`), it is
 * stopped and its memory given back; the next use starts it again. Bytes
 * are copied to the worker (a chunk may share its memory with others); at
 * most MAX_IN_FLIGHT bytes wait there per hash, and `update` returns a
 * promise to wait on when that is reached. If the worker dies, every open
 * hash fails: a digest is never made up.
 *
 * Signatures: fingerprints asked for in the same tick go to the thread in
 * one message and come back in one. Ed25519 is deterministic, so if the
 * thread fails, the main thread signs instead: the bytes are the same.
 * Whether a job's signatures are worth a thread at all is the planner's
 * choice (../plan.ts).
 *
 * Whole NARs: when the planner sends whole NARs here, each is read,
 * hashed, compressed and hashed again on one thread (nar-job.ts), and
 * there is one such thread per core, up to maxThreads (the first one is the
 * crypto thread above). Its compressed pieces move to the main thread
 * without a copy, at most NAR_JOB_AHEAD bytes ahead of the consumer.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { isErrorCode } from '../../error-codes.js';
import { NarpushError } from '../../errors.js';
import type { SecretKey } from '../../signing/keys.js';
import { signFingerprint } from '../../signing/sign.js';
import type { CryptoReply, CryptoRequest } from './crypto-thread.js';
import type { NarJobRequest, NarJobResult } from './nar-job.js';

/**
 * The thread's code, next to this module's: crypto-thread.js beside the
 * compiled modules (dist/src), crypto-thread.cjs beside bin/narpush's
 * CommonJS bundle (scripts/bundle.mjs), where this module is itself a .cjs.
 */
const THREAD_FILE = import.meta.url.endsWith('.cjs') ? './crypto-thread.cjs' : './crypto-thread.js';

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
  /** Workers told to terminate whose 'exit' has not come yet. */
  private readonly terminating = new WeakSet<Worker>();

  constructor(
    private readonly idleMs: number,
    /** Told the bytes of one NAR job's pieces waiting here, each time a piece arrives. */
    private readonly onBacklog: (bytes: number) => void,
  ) {}

  /** The worker, started if need be (unreferenced while it has no work). */
  ensure(): Worker {
    return this.start().worker;
  }

  private start(): Live {
    if (this.live) return this.live;
    // node:worker_threads is loaded with the first thread: most small jobs start none.
    const { Worker } = process.getBuiltinModule('node:worker_threads');
    const worker = new Worker(new URL(THREAD_FILE, import.meta.url));
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
    // A worker being terminated stays referenced until its 'exit' (see terminate).
    if (this.busy() || this.terminating.has(worker)) {
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

  /** Bytes of NAR job pieces waiting here, not yet taken. */
  get waitingBytes(): number {
    let n = 0;
    for (const job of this.jobs.values()) n += job.queued;
    return n;
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
      this.onBacklog(job.queued);
    } else if (m.op === 'nar-done') {
      job.result = {
        narDigest: m.narDigest,
        narSize: m.narSize,
        fileDigest: m.fileDigest,
        fileSize: m.fileSize,
        ...(m.listing !== undefined ? { listing: m.listing } : {}),
      };
    } else if (m.op === 'nar-failed') {
      job.failed = new NarpushError(isErrorCode(m.code) ? m.code : 'NAR_JOB_FAILED', m.message);
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
   * Stop the worker now. Its 'exit' fails what it held, as a crash would
   * (until then it is still this thread's worker); the returned promise
   * settles once that was handled.
   */
  async terminate(): Promise<void> {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const worker = this.live?.worker;
    if (!worker) return;
    // Referenced until its 'exit', whatever happens meanwhile (a reply that
    // leaves it without work, a hash opened and dropped): an unreferenced
    // worker would let the event loop end before the exit, and with it the
    // process, while its owner still awaits this.
    this.terminating.add(worker);
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

export interface ThreadPoolOptions {
  /** How long a thread may have no work before it is stopped (DEFAULT_THREAD_IDLE_MS unless set; tests make it short). */
  readonly idleMs?: number;
  /** Threads for whole NARs at most (one per core unless set). */
  readonly maxThreads?: number;
}

/**
 * The worker threads of one owner: the crypto thread (hashes, signatures,
 * NAR jobs) and, for whole NARs, one more per further core.
 */
export class ThreadPool {
  private readonly idleMs: number;
  /** Threads for whole NARs at most. */
  readonly maxThreads: number;
  /** threads[0] is the crypto thread. */
  private readonly threads: CryptoThread[] = [];
  private peak = 0;

  constructor(opts: ThreadPoolOptions = {}) {
    this.idleMs = opts.idleMs ?? DEFAULT_THREAD_IDLE_MS;
    this.maxThreads = Math.max(1, opts.maxThreads ?? availableParallelism());
  }

  private thread(i: number): CryptoThread {
    while (this.threads.length <= i) {
      this.threads.push(new CryptoThread(this.idleMs, (bytes) => (this.peak = Math.max(this.peak, bytes))));
    }
    return this.threads[i]!;
  }

  /** A new incremental hash of `algo` (a node:crypto name) computed on the crypto thread. */
  hash(algo: 'sha256' | 'sha512' | 'sha1'): BackgroundHash {
    return this.thread(0).create(algo);
  }

  /**
   * `<key name>:<signature>` of a narinfo fingerprint, as signFingerprint
   * makes it, computed on the crypto thread (see above).
   */
  sign(fingerprint: string, key: SecretKey): Promise<string> {
    return this.thread(0).sign(fingerprint, key);
  }

  /**
   * Run a NAR job (see nar-job.ts) on the thread with the fewest, starting
   * another (up to maxThreads) when every one has some.
   */
  narJob(req: NarJobRequest): AsyncGenerator<NarJobPiece, NarJobResult> {
    let best = this.thread(0);
    for (const t of this.threads) if (t.activeJobs < best.activeJobs) best = t;
    if (best.activeJobs > 0 && this.threads.length < this.maxThreads) best = this.thread(this.threads.length);
    return best.narJob(req);
  }

  /**
   * Start the crypto thread now (and `threads - 1` more for whole NARs, at
   * most maxThreads), so that their start-up overlaps other work; they
   * never hold the process alive.
   */
  prewarm(threads = 1): void {
    const n = Math.max(1, Math.min(threads, this.maxThreads));
    for (let i = 0; i < n; i++) this.thread(i).ensure();
  }

  /** How many threads are running now. */
  get running(): number {
    return this.threads.filter((t) => t.started).length;
  }

  /** Bytes of NAR job pieces that arrived from the threads and were not yet taken. */
  get backlog(): number {
    return this.threads.reduce((n, t) => n + t.waitingBytes, 0);
  }

  /** The most bytes of one NAR job's pieces that have waited here, unread, since the pool was made (see NAR_JOB_AHEAD). */
  get peakBacklog(): number {
    return this.peak;
  }

  /**
   * Stop every thread now. What they held fails as if they had crashed
   * (HASH_FAILED; signatures are made on this thread instead); settles once
   * every thread's exit was handled. A later use starts a thread again.
   */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.terminate()));
  }
}
