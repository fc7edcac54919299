/**
 * The daemon's worker: takes ready paths from the queue in batches, hands
 * them to the upload function, and records each path's outcome (done,
 * failed and retried later, or dropped). One batch runs at a time; the
 * upload function uploads within it `--jobs` at a time. Batching everything
 * that is ready also deduplicates closures: two builds sharing a dependency
 * upload it once.
 *
 * Stopping stops taking work, lets the batch in flight finish for a grace
 * period, then aborts it; interrupted paths go back to the queue unrecorded
 * (the journal still has them as queued, so a restart resumes them).
 * The upload function is injected: the tests use fakes, the daemon uses
 * pipeline.ts.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { DaemonLogger } from './log.js';
import type { WorkQueue } from './queue.js';
import { monotonicMs } from '../clock.js';

export type PathOutcome =
  | { readonly kind: 'done' }
  | { readonly kind: 'failed'; readonly error: string }
  /** Will never succeed (the path left the store): forgotten, with the reason logged. */
  | { readonly kind: 'dropped'; readonly reason: string };

/** What happened to one path of a closure, for logs and statistics. */
export type PipelineEvent =
  | {
      readonly type: 'uploaded';
      readonly path: string;
      readonly narSize: number;
      readonly fileSize: number;
      readonly seconds: number;
      /** With write-nar-listing: its listing was over the cap and not written. */
      readonly listingTooLarge?: boolean;
    }
  | { readonly type: 'skipped'; readonly path: string }
  /** Not uploaded: an upstream cache serves it. */
  | { readonly type: 'upstream'; readonly path: string }
  | { readonly type: 'failed'; readonly path: string; readonly error: string }
  /** With --build-logs, per derivation (`drv`) of an uploaded path: its log written, not kept locally, or not uploaded. */
  | { readonly type: 'build-log'; readonly drv: string; readonly outcome: 'written' | 'missing' | 'failed'; readonly error?: string };

export interface UploadContext {
  readonly signal: AbortSignal;
  readonly onEvent: (e: PipelineEvent) => void;
}

/**
 * Upload the closures of `paths` (store paths, or .drv files meaning their
 * outputs). Returns an outcome for each of `paths`; may throw, which counts
 * as a failure of the whole batch.
 */
export type UploadBatch = (paths: readonly string[], ctx: UploadContext) => Promise<ReadonlyMap<string, PathOutcome>>;

export interface WorkerOptions {
  readonly upload: UploadBatch;
  /** Paths per batch, default 1000. */
  readonly maxBatch?: number;
  readonly log: DaemonLogger;
  readonly onEvent?: (e: PipelineEvent) => void;
  /** Called when the queue runs dry after work (the pipeline releases store resources). */
  readonly onIdle?: () => Promise<void>;
  /** Called with the wall time of each batch, for throughput. */
  readonly onBatch?: (seconds: number) => void;
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

export class Worker {
  private readonly stopping = new AbortController();
  private batchAbort: AbortController | undefined;
  private current: readonly string[] = [];
  private loop: Promise<void> | undefined;

  constructor(
    private readonly queue: WorkQueue,
    private readonly options: WorkerOptions,
  ) {}

  start(): void {
    this.loop ??= this.run();
  }

  /** Paths of the batch being uploaded. */
  get inFlight(): readonly string[] {
    return this.current;
  }

  /**
   * Stop: no new batch; the batch in flight may finish within `graceMs`,
   * then it is aborted. Resolves when the worker is idle for good.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping.abort();
    const timer = setTimeout(() => this.batchAbort?.abort(), Math.max(0, graceMs));
    try {
      await this.loop;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Abort the batch in flight now (a second SIGTERM). */
  abortNow(): void {
    this.stopping.abort();
    this.batchAbort?.abort();
  }

  private async run(): Promise<void> {
    let busy = false;
    while (!this.stopping.signal.aborted) {
      const batch = this.queue.take(this.options.maxBatch ?? 1000);
      if (batch.length === 0) {
        if (busy) {
          busy = false;
          await this.options.onIdle?.().catch((e: unknown) => this.options.log({ event: 'warning', detail: message(e) }));
        }
        await this.queue.waitForWork(this.stopping.signal);
        // Woken by an enqueue, whose acknowledgement is still on its way
        // (promise continuations queued after this one): let it go out first.
        // Starting a batch runs synchronous work, such as spawning a
        // `nix-daemon --stdio` (5.3 ms under strace), that would hold up the
        // hook waiting for that answer.
        await nextTurn();
        continue;
      }
      busy = true;
      await this.process(batch);
    }
  }

  private async process(batch: readonly string[]): Promise<void> {
    const { log } = this.options;
    const abort = new AbortController();
    this.batchAbort = abort;
    this.current = batch;
    const t0 = monotonicMs();
    let outcomes: ReadonlyMap<string, PathOutcome>;
    try {
      outcomes = await this.options.upload(batch, {
        signal: abort.signal,
        onEvent: (e) => this.options.onEvent?.(e),
      });
    } catch (e) {
      const error = message(e);
      outcomes = new Map(batch.map((p) => [p, { kind: 'failed', error } as const]));
    } finally {
      this.current = [];
      this.batchAbort = undefined;
    }
    this.options.onBatch?.((monotonicMs() - t0) / 1000);

    const interrupted: string[] = [];
    const records: Promise<unknown>[] = [];
    for (const path of batch) {
      const o = outcomes.get(path);
      if (o?.kind === 'done') {
        records.push(this.queue.complete(path));
      } else if (abort.signal.aborted) {
        interrupted.push(path);
      } else if (o?.kind === 'dropped') {
        log({ event: 'dropped', subject: path, detail: o.reason });
        records.push(this.queue.drop(path, o.reason));
      } else {
        const error = o?.error ?? 'the upload gave no outcome for this path';
        records.push(
          this.queue.fail(path, error).then(({ attempts, delayMs }) =>
            log({ event: 'retry', subject: path, detail: `(attempt ${attempts} failed, next in ${seconds(delayMs)}): ${error}` }),
          ),
        );
      }
    }
    this.queue.release(interrupted);
    if (interrupted.length > 0) log({ event: 'stopping', detail: `interrupted ${interrupted.length} upload(s); they stay queued` });
    for (const r of await Promise.allSettled(records)) {
      if (r.status === 'rejected') log({ event: 'warning', detail: `cannot write the journal: ${message(r.reason)}` });
    }
  }
}
