/**
 * What `narpush status` shows, and the queue gauges the metrics read: read
 * from the queue and the counters (stats.ts) at the moment asked. Reads
 * only; never changes the queue.
 */
import type { QueueGauges } from './metrics.js';
import type { QueueItem, WorkQueue } from './queue.js';
import { type BuildLogCounts, type DaemonStats, HOOK_SOURCES } from './stats.js';

export interface FailingPath {
  readonly path: string;
  readonly attempts: number;
  readonly lastError: string;
  /** Seconds until the next attempt; 0 when it is queued or uploading now. */
  readonly nextRetryInSeconds: number;
}

/** What `narpush status` shows. Counts of `uploaded`/`skipped` are of closure paths; the rest are of queued paths. */
export interface DaemonStatus {
  readonly pid: number;
  readonly socket: string;
  readonly stateDir: string;
  readonly cache: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  /** Waiting to be uploaded (including those waiting for a retry). */
  readonly queued: number;
  readonly inFlight: readonly string[];
  readonly waitingRetry: number;
  readonly uploaded: number;
  readonly skipped: number;
  /** Not uploaded because an upstream cache serves them. */
  readonly skippedUpstream: number;
  /** Queued paths given up on because they left the store. */
  readonly dropped: number;
  /** Paths refused at the socket or in the spool. */
  readonly rejected: number;
  /** Failed attempts since start. */
  readonly failures: number;
  /** With --build-logs: derivations whose log was written, not kept locally, or not uploaded. */
  readonly buildLogs: BuildLogCounts;
  readonly failing: readonly FailingPath[];
  readonly narBytes: number;
  readonly fileBytes: number;
  /** Time spent uploading. */
  readonly busySeconds: number;
  /** NAR bytes per second of busy time. */
  readonly narBytesPerSecond: number;
}

export function queueCounts(items: readonly QueueItem[]): QueueGauges {
  let inFlight = 0;
  let waitingRetry = 0;
  for (const i of items) {
    if (i.state === 'running') inFlight++;
    else if (i.state === 'waiting') waitingRetry++;
  }
  return { queued: items.length - inFlight, inFlight, waitingRetry };
}

export interface StatusSources {
  readonly stateDir: string;
  readonly cache: string;
  /** The socket's address ('' before it listens). */
  readonly socket: () => string;
  /** When the daemon started (ms since the epoch, by `now`). */
  readonly started: number;
  readonly now: () => number;
  readonly queue: WorkQueue;
  readonly stats: DaemonStats;
}

export function daemonStatus(src: StatusSources): DaemonStatus {
  const t = src.now();
  const { stats, started } = src;
  const items = src.queue.list();
  const counts = queueCounts(items);
  const s = stats.snapshot();
  const rejectedRequests = HOOK_SOURCES.reduce((n, source) => n + stats.hookRequests(source, 'rejected'), 0);
  const failing = items
    .filter((i) => i.attempts > 0)
    .slice(0, 100)
    .map((i) => ({
      path: i.path,
      attempts: i.attempts,
      lastError: i.lastError ?? '',
      nextRetryInSeconds: i.state === 'waiting' ? Math.max(0, Math.round((i.notBefore - t) / 1000)) : 0,
    }));
  return {
    pid: process.pid,
    socket: src.socket(),
    stateDir: src.stateDir,
    cache: src.cache,
    startedAt: new Date(started).toISOString(),
    uptimeSeconds: Math.round((t - started) / 1000),
    queued: counts.queued,
    inFlight: items.filter((i) => i.state === 'running').map((i) => i.path),
    waitingRetry: counts.waitingRetry,
    uploaded: s.uploaded,
    skipped: s.skipped,
    skippedUpstream: s.skippedUpstream,
    dropped: s.dropped,
    rejected: s.rejectedPaths + rejectedRequests,
    failures: s.failures,
    buildLogs: s.buildLogs,
    failing,
    narBytes: s.narBytes,
    fileBytes: s.fileBytes,
    busySeconds: Number(s.busySeconds.toFixed(3)),
    narBytesPerSecond: s.busySeconds > 0 ? Math.round(s.narBytes / s.busySeconds) : 0,
  };
}
