/**
 * Showing an upload as it happens. On a terminal: one status line, redrawn at
 * most ten times a second (paths done/total, bytes, rate, current paths).
 * Elsewhere (CI logs, pipes): one line per path uploaded or failed, written
 * in batches (at most 100 ms late: a write per line would be a system call
 * per path, which shows with thousands of tiny paths). Both go to stderr, so
 * stdout stays free for `--json`.
 */
import type { UploadEvent } from '../cache/upload.js';
import { formatBytes, formatRate } from './format.js';
import { monotonicMs } from '../clock.js';

export interface ProgressSink {
  (event: UploadEvent): void;
  /** Clear the status line before the summary is printed. */
  done(): void;
}

export function createProgress(stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number }, quiet: boolean): ProgressSink {
  const start = monotonicMs();
  let total = 0;
  let finished = 0;
  let doneBytes = 0;
  const active = new Map<string, { name: string; narBytes: number }>();
  let lastDraw = 0;
  let drawn = false;
  const tty = Boolean(stream.isTTY) && !quiet;
  // Lines not yet written (not on a terminal), and the timer that writes them.
  let lines = '';
  let flushTimer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    if (flushTimer) clearTimeout(flushTimer);
    flushTimer = undefined;
    if (lines === '') return;
    stream.write(lines);
    lines = '';
  };
  const print = (line: string): void => {
    if (tty) {
      stream.write(line);
      return;
    }
    lines += line;
    if (lines.length >= 16384) flush();
    else flushTimer ??= setTimeout(flush, 100).unref();
  };

  const draw = (force = false): void => {
    const now = monotonicMs();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    let bytes = doneBytes;
    for (const a of active.values()) bytes += a.narBytes;
    const names = [...active.values()].map((a) => a.name).join(', ');
    let line = `[${finished}/${total}] ${formatBytes(bytes)} ${formatRate(bytes, (now - start) / 1000)}${names ? `  ${names}` : ''}`;
    const width = stream.columns ?? 80;
    if (line.length > width - 1) line = `${line.slice(0, width - 2)}…`;
    stream.write(`\r\x1b[K${line}`);
    drawn = true;
  };

  const sink = ((e: UploadEvent) => {
    switch (e.type) {
      case 'planned':
        total = e.toUpload.length;
        if (!quiet && e.present > 0) print(`${e.present} of ${e.total} paths are already in the cache\n`);
        if (!quiet && e.upstream > 0) print(`${e.upstream} of ${e.total} paths are served upstream (not uploaded)\n`);
        break;
      case 'started':
        active.set(e.info.path.baseName, { name: e.info.path.name, narBytes: 0 });
        break;
      case 'progress': {
        const a = active.get(e.info.path.baseName);
        if (a) a.narBytes = e.narBytes;
        break;
      }
      case 'uploaded':
        active.delete(e.info.path.baseName);
        finished++;
        doneBytes += e.nar.narSize;
        if (!tty && !quiet) {
          print(
            `uploaded ${e.info.path.path} (${formatBytes(e.nar.narSize)} -> ${formatBytes(e.nar.fileSize)} ${e.nar.compression}, ${e.seconds.toFixed(2)} s)\n`,
          );
        }
        break;
      case 'failed':
        active.delete(e.info.path.baseName);
        finished++;
        if (tty && drawn) stream.write('\r\x1b[K');
        print(`failed ${e.info.path.path}: ${e.error.message}\n`);
        break;
      case 'skipped':
      case 'upstream':
        return;
    }
    if (tty) draw(e.type !== 'progress');
  }) as ProgressSink;
  sink.done = () => {
    flush();
    if (tty && drawn) stream.write('\r\x1b[K');
  };
  return sink;
}
