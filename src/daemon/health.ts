/**
 * Whether the daemon can take work now (GET /healthz, metrics.ts): not while
 * it stops, and not from a request that could not be queued (its GC roots or
 * its journal record not written: hooks are then answered with an error and
 * spool) until the next journal write succeeds. Writes come with every
 * request, so it recovers by itself. A cache that fails is not unhealthy:
 * the daemon queues and retries. Decides only this answer, never what is
 * queued or answered.
 */
import type { JournalRecord } from './journal.js';
import { errorLine } from './log.js';
import type { JournalSink } from './queue.js';

export class DaemonHealth {
  private queueError: string | undefined;
  private stopping = false;

  /** `journal` as the queue writes it: each append's outcome sets or clears the error. */
  journalSink(journal: JournalSink): JournalSink {
    return {
      append: (records: readonly JournalRecord[]): Promise<void> =>
        journal.append(records).then(
          () => void (this.queueError = undefined),
          (e: unknown) => {
            this.queueError = errorLine(e);
            throw e;
          },
        ),
    };
  }

  /** A request could not be queued (its roots or its journal record); the first reason is kept until a write succeeds. */
  queueFailed(e: unknown): void {
    this.queueError ??= errorLine(e);
  }

  markStopping(): void {
    this.stopping = true;
  }

  /** Why the daemon cannot take work now, or undefined. */
  reason(): string | undefined {
    if (this.stopping) return 'stopping';
    if (this.queueError !== undefined) return `the queue cannot be written (${this.queueError})`;
    return undefined;
  }
}
