/**
 * The daemon's work queue: which paths wait, which are uploading, which
 * failed and when they are tried again. Every change that must survive a
 * crash goes through the journal first; an enqueue resolves only once its
 * paths are on disk. A path is in the queue at most once: queueing it again
 * while it waits, uploads or waits for a retry adds nothing (deduplication).
 *
 * No I/O of its own: the journal and the clock are injected, so the tests
 * drive it with fakes.
 */
import { type RetryPolicy, retryDelayMs } from './backoff.js';
import type { JournalRecord, PendingPath } from './journal.js';

export interface JournalSink {
  append(records: readonly JournalRecord[]): Promise<void>;
}

/** journaling: its queued record is being written; waiting: failed, retried at `notBefore`. */
export type ItemState = 'journaling' | 'queued' | 'running' | 'waiting';

export interface QueueItem {
  readonly path: string;
  readonly state: ItemState;
  readonly queuedAt: number;
  readonly attempts: number;
  readonly lastError?: string;
  /** For `waiting`: when it may run again (ms since the epoch). */
  readonly notBefore: number;
}

interface Item {
  path: string;
  state: ItemState;
  queuedAt: number;
  attempts: number;
  lastError?: string;
  notBefore: number;
  seq: number;
  durable?: Promise<void>;
}

export interface QueueOptions {
  readonly retry: RetryPolicy;
  readonly now?: () => number;
  readonly random?: () => number;
  /** A path left the queue for good (uploaded or dropped) and that is on disk. */
  readonly onFinished?: (path: string) => void;
}

export interface EnqueueResult {
  /** Newly queued. */
  readonly queued: readonly string[];
  /** Already in the queue (waiting, uploading or failing). */
  readonly duplicates: readonly string[];
}

export class WorkQueue {
  private readonly items = new Map<string, Item>();
  private seq = 0;
  private listeners = new Set<() => void>();
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(
    private readonly journal: JournalSink,
    private readonly options: QueueOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  /** Load what the journal says is pending (at start). Runs at once, failures included. */
  restore(pending: Iterable<PendingPath>): void {
    for (const p of pending) {
      if (this.items.has(p.path)) continue;
      this.items.set(p.path, {
        path: p.path,
        state: 'queued',
        queuedAt: p.queuedAt,
        attempts: p.attempts,
        ...(p.lastError !== undefined ? { lastError: p.lastError } : {}),
        notBefore: 0,
        seq: this.seq++,
      });
    }
    this.notify();
  }

  /** Queue paths durably. Resolves when every one of them is on disk (also those queued by someone else just before). */
  async enqueue(paths: readonly string[]): Promise<EnqueueResult> {
    const fresh: Item[] = [];
    const duplicates: string[] = [];
    const waits: Promise<void>[] = [];
    const at = this.now();
    for (const path of new Set(paths)) {
      const existing = this.items.get(path);
      if (existing) {
        duplicates.push(path);
        if (existing.durable) waits.push(existing.durable);
        continue;
      }
      const item: Item = { path, state: 'journaling', queuedAt: at, attempts: 0, notBefore: 0, seq: this.seq++ };
      this.items.set(path, item);
      fresh.push(item);
    }
    if (fresh.length > 0) {
      const durable = this.journal.append(fresh.map((i) => ({ op: 'queued', path: i.path, at })));
      for (const i of fresh) i.durable = durable;
      try {
        await durable;
      } catch (e) {
        for (const i of fresh) if (this.items.get(i.path) === i) this.items.delete(i.path);
        throw e;
      }
      for (const i of fresh) {
        i.state = 'queued';
        delete i.durable;
      }
      this.notify();
    }
    // A duplicate of a path still being written is acknowledged only once that write is durable.
    await Promise.all(waits);
    return { queued: fresh.map((i) => i.path), duplicates };
  }

  /** Up to `max` paths ready to upload, oldest first; they become `running`. */
  take(max: number): string[] {
    const now = this.now();
    const ready = [...this.items.values()]
      .filter((i) => i.state === 'queued' || (i.state === 'waiting' && i.notBefore <= now))
      .sort((a, b) => a.seq - b.seq)
      .slice(0, Math.max(0, max));
    for (const i of ready) i.state = 'running';
    return ready.map((i) => i.path);
  }

  /** The path is in the cache: forget it. */
  async complete(path: string): Promise<void> {
    await this.finish(path, { op: 'done', path });
  }

  /** The path cannot ever be uploaded (e.g. no longer in the store): forget it, with the reason on record. */
  async drop(path: string, reason: string): Promise<void> {
    await this.finish(path, { op: 'dropped', path, reason });
  }

  /** The upload failed: schedule a retry. Returns the delay in ms. */
  async fail(path: string, error: string): Promise<{ attempts: number; delayMs: number }> {
    const item = this.items.get(path);
    if (!item) return { attempts: 0, delayMs: 0 };
    item.attempts++;
    item.lastError = error;
    const delayMs = retryDelayMs(item.attempts, this.options.retry, this.random);
    item.notBefore = this.now() + delayMs;
    item.state = 'waiting';
    this.notify();
    await this.journal.append([{ op: 'failed', path, attempts: item.attempts, error }]);
    return { attempts: item.attempts, delayMs };
  }

  /** Uploads that were interrupted (shutdown): back to waiting, no attempt counted. */
  release(paths: readonly string[]): void {
    for (const p of paths) {
      const item = this.items.get(p);
      if (item?.state === 'running') item.state = 'queued';
    }
    this.notify();
  }

  /** When the next path becomes ready: now when one is, undefined when none ever will without an enqueue. */
  nextReadyAt(): number | undefined {
    let next: number | undefined;
    for (const i of this.items.values()) {
      if (i.state === 'queued') return this.now();
      if (i.state === 'waiting' && (next === undefined || i.notBefore < next)) next = i.notBefore;
    }
    return next;
  }

  /** Resolves when a path may be ready (something was queued or released, or a retry is due), or on abort. */
  waitForWork(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const next = this.nextReadyAt();
      if (next !== undefined && next <= this.now()) return resolve();
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        this.listeners.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      // A timer counts from the event loop's cached time, so it may fire before now() reaches
      // `next`: look again, so that a wake-up for a retry always finds the retry due.
      const arm = (): void => {
        const at = this.nextReadyAt();
        if (at === undefined) return;
        if (at <= this.now()) return done();
        timer = setTimeout(arm, at - this.now());
      };
      arm();
      this.listeners.add(done);
      signal?.addEventListener('abort', done, { once: true });
      if (signal?.aborted) done();
    });
  }

  /** Everything in the queue, oldest first. */
  list(): QueueItem[] {
    return [...this.items.values()]
      .sort((a, b) => a.seq - b.seq)
      .map((i) => ({
        path: i.path,
        state: i.state,
        queuedAt: i.queuedAt,
        attempts: i.attempts,
        notBefore: i.notBefore,
        ...(i.lastError !== undefined ? { lastError: i.lastError } : {}),
      }));
  }

  /** Whether `path` is in the queue (in any state). */
  has(path: string): boolean {
    return this.items.has(path);
  }

  get size(): number {
    return this.items.size;
  }

  private async finish(path: string, record: JournalRecord): Promise<void> {
    // Forget it first: the upload is over whether or not the record reaches the disk
    // (if it does not, the path is uploaded again after a restart, and skipped).
    if (this.items.get(path)?.state === 'running') this.items.delete(path);
    await this.journal.append([record]);
    // Only once the record is durable: a crash before it resumes the path, which then still needs its root.
    if (!this.items.has(path)) this.options.onFinished?.(path);
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}
