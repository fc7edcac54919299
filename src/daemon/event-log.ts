/**
 * What the worker and the upload pipeline report, counted once (stats.ts)
 * and logged once (log.ts): the one place that turns their events into
 * counters and log lines. No I/O beyond the logger.
 */
import type { DaemonLogger } from './log.js';
import type { DaemonStats } from './stats.js';
import type { PipelineEvent } from './worker.js';

/** The pipeline's events (one per closure path, build log or failure): counted, then logged. */
export function pipelineEventSink(stats: DaemonStats, log: DaemonLogger): (e: PipelineEvent) => void {
  return (e) => {
    stats.pipelineEvent(e);
    if (e.type === 'uploaded') {
      log({ event: 'uploaded', subject: e.path, detail: `(${e.narSize} bytes -> ${e.fileSize} bytes, ${e.seconds.toFixed(2)} s)` });
      if (e.listingTooLarge) log({ event: 'warning', subject: e.path, detail: 'no listing (.ls) written: it has too many entries' });
    } else if (e.type === 'skipped') {
      log({ event: 'skipped', subject: e.path, detail: '(already in the cache)' });
    } else if (e.type === 'upstream') {
      log({ event: 'skipped', subject: e.path, detail: '(served upstream)' });
    } else if (e.type === 'build-log') {
      // A missing log is normal (keep-build-log off, or removed): counted, not logged.
      if (e.outcome === 'written') log({ event: 'uploaded', subject: `log/${e.drv.slice(e.drv.lastIndexOf('/') + 1)}`, detail: '(build log)' });
      if (e.outcome === 'failed') log({ event: 'warning', subject: e.drv, detail: `build log not uploaded: ${e.error ?? ''}` });
    } else {
      log({ event: 'failed', subject: e.path, detail: e.error });
    }
  };
}

/** The worker's own log lines, with its retries and dropped paths counted on the way. */
export function workerLogger(stats: DaemonStats, log: DaemonLogger): DaemonLogger {
  return (e) => {
    if (e.event === 'retry') stats.attemptFailed();
    if (e.event === 'dropped') stats.pathDropped();
    log(e);
  };
}
