/**
 * The daemon's counters: the one place that counts what happened since
 * start. `narpush status` and the Prometheus metrics (metrics.ts) both read
 * them, so the two can never disagree. Fed by daemon.ts from the worker's
 * and the pipeline's events; no I/O, no clock of its own.
 *
 * Counts of `uploaded`/`skipped`/`skippedUpstream` are of closure paths (one build can upload
 * many); `failures` and `dropped` are of queued paths.
 */
import type { PipelineEvent } from './worker.js';

/** Where a hook request came from: the socket, or a file the hook spooled. */
export type HookSource = 'socket' | 'spool';
/**
 * ok: answered and its valid paths queued (individual paths may still be
 * rejected); rejected: the request itself was unreadable; error: the daemon
 * could not queue it (its journal could not be written).
 */
export type HookOutcome = 'ok' | 'rejected' | 'error';

export const HOOK_SOURCES: readonly HookSource[] = ['socket', 'spool'];
export const HOOK_OUTCOMES: readonly HookOutcome[] = ['ok', 'rejected', 'error'];

export interface StatsSnapshot {
  readonly uploaded: number;
  readonly skipped: number;
  /** Not uploaded because an upstream cache serves them. */
  readonly skippedUpstream: number;
  /** Failed attempts (a path retried three times counts three). */
  readonly failures: number;
  readonly dropped: number;
  /** Paths refused in requests that were otherwise read. */
  readonly rejectedPaths: number;
  readonly narBytes: number;
  readonly fileBytes: number;
  /** Wall time of batches. */
  readonly busySeconds: number;
  /** When a path was last uploaded or found in the cache (ms since the epoch). */
  readonly lastSuccessAt: number | undefined;
  /** With --build-logs: derivations whose log was written, not kept locally, or not uploaded. */
  readonly buildLogs: BuildLogCounts;
}

export type BuildLogOutcome = 'written' | 'missing' | 'failed';
export const BUILD_LOG_OUTCOMES: readonly BuildLogOutcome[] = ['written', 'missing', 'failed'];
export type BuildLogCounts = Readonly<Record<BuildLogOutcome, number>>;

export class DaemonStats {
  private uploaded = 0;
  private skipped = 0;
  private skippedUpstream = 0;
  private failures = 0;
  private dropped = 0;
  private rejectedPaths = 0;
  private narBytes = 0;
  private fileBytes = 0;
  private busySeconds = 0;
  private lastSuccessAt: number | undefined;
  private readonly buildLogs: Record<BuildLogOutcome, number> = { written: 0, missing: 0, failed: 0 };
  private readonly hooks = new Map<`${HookSource}/${HookOutcome}`, number>();
  private readonly uploadListeners = new Set<(seconds: number) => void>();

  constructor(private readonly now: () => number) {}

  pipelineEvent(e: PipelineEvent): void {
    if (e.type === 'uploaded') {
      this.uploaded++;
      this.narBytes += e.narSize;
      this.fileBytes += e.fileSize;
      this.lastSuccessAt = this.now();
      for (const l of this.uploadListeners) l(e.seconds);
    } else if (e.type === 'skipped') {
      this.skipped++;
      this.lastSuccessAt = this.now();
    } else if (e.type === 'upstream') {
      this.skippedUpstream++;
      this.lastSuccessAt = this.now();
    } else if (e.type === 'build-log') {
      this.buildLogs[e.outcome]++;
    }
    // 'failed' is of a closure path; the queued path's attempt is counted by attemptFailed.
  }

  attemptFailed(): void {
    this.failures++;
  }

  pathDropped(): void {
    this.dropped++;
  }

  pathsRejected(n: number): void {
    this.rejectedPaths += n;
  }

  batchFinished(seconds: number): void {
    this.busySeconds += seconds;
  }

  hookRequest(source: HookSource, outcome: HookOutcome): void {
    const key = `${source}/${outcome}` as const;
    this.hooks.set(key, (this.hooks.get(key) ?? 0) + 1);
  }

  hookRequests(source: HookSource, outcome: HookOutcome): number {
    return this.hooks.get(`${source}/${outcome}`) ?? 0;
  }

  /** Called with each uploaded path's upload time (for a histogram); returns the unsubscribe. */
  onUpload(listener: (seconds: number) => void): () => void {
    this.uploadListeners.add(listener);
    return () => this.uploadListeners.delete(listener);
  }

  snapshot(): StatsSnapshot {
    return {
      uploaded: this.uploaded,
      skipped: this.skipped,
      skippedUpstream: this.skippedUpstream,
      failures: this.failures,
      dropped: this.dropped,
      rejectedPaths: this.rejectedPaths,
      narBytes: this.narBytes,
      fileBytes: this.fileBytes,
      busySeconds: this.busySeconds,
      lastSuccessAt: this.lastSuccessAt,
      buildLogs: { ...this.buildLogs },
    };
  }
}
