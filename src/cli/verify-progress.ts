/**
 * What `narpush verify` shows while it runs: each path's defects as lines on
 * stdout as soon as the path is done (unless --json), and on a terminal a
 * status line on stderr (paths done/total, bytes read, rate, defects so
 * far). Never prints the summary: verify.ts does, after `done()`.
 */
import type { Defect, PathResult, VerifyEvent } from '../cache/verify.js';
import { printable } from '../errors.js';
import { formatBytes, formatRate } from './format.js';
import { monotonicMs } from '../clock.js';

/** One defect as a line: the path (or the object's key for the cache itself), then what is wrong. */
export function defectLine(d: Defect): string {
  return `${d.path === '' ? printable(d.key) : d.path}: ${printable(d.message)}\n`;
}

export type VerifyProgress = ((e: VerifyEvent) => void) & { done(): void };

/**
 * Defect lines on stdout as each path finishes (unless --json); on a
 * terminal, one status line on stderr, cleared before each defect line and
 * redrawn at most ten times a second.
 */
export function createVerifyProgress(stdout: NodeJS.WritableStream, stderrStream: NodeJS.WritableStream, json: boolean): VerifyProgress {
  const stderr = stderrStream as NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  const tty = Boolean(stderr.isTTY) && !json;
  const start = monotonicMs();
  let total = 0;
  let checked = 0;
  let bytes = 0;
  let defects = 0;
  let lastDraw = 0;
  let drawn = false;
  const clear = (): void => {
    if (drawn) stderr.write('\r\x1b[K');
    drawn = false;
  };
  const draw = (force: boolean): void => {
    const now = monotonicMs();
    if (!tty || (!force && now - lastDraw < 100)) return;
    lastDraw = now;
    let line = `[${checked}/${total}] ${formatBytes(bytes)} ${formatRate(bytes, (now - start) / 1000)}, ${defects} defects`;
    const width = stderr.columns ?? 80;
    if (line.length > width - 1) line = `${line.slice(0, width - 2)}…`;
    stderr.write(`\r\x1b[K${line}`);
    drawn = true;
  };
  const onChecked = (r: PathResult): void => {
    checked++;
    defects += r.defects.length;
    if (json || r.defects.length === 0) return;
    clear();
    for (const d of r.defects) stdout.write(defectLine(d));
  };
  const sink = ((e: VerifyEvent) => {
    if (e.type === 'listed') total = e.total;
    else if (e.type === 'bytes') bytes += e.fileBytes;
    else onChecked(e.result);
    draw(e.type !== 'bytes');
  }) as VerifyProgress;
  sink.done = clear;
  return sink;
}
