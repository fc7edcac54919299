/**
 * The daemon's log: one line per event (queued, uploaded, skipped, failed,
 * retry, rejected, dropped, and the daemon's own start, stop and warnings),
 * formatted here so every line has the same shape:
 *
 *   narpush daemon: uploaded /nix/store/…-hello (1.20 MiB -> 312 KiB, 0.41 s)
 *
 * Lines never carry a secret: only paths, sizes and error messages, which
 * narpush writes without credentials. Control characters from hostile input
 * are escaped, so a request cannot forge log lines.
 */

export type LogEventName =
  | 'started'
  | 'stopping'
  | 'stopped'
  | 'queued'
  | 'uploaded'
  | 'skipped'
  | 'failed'
  | 'retry'
  | 'rejected'
  | 'dropped'
  | 'spool'
  | 'warning';

export interface LogEvent {
  readonly event: LogEventName;
  /** What it is about: a store path, a client, a file. */
  readonly subject?: string;
  readonly detail?: string;
}

export type DaemonLogger = (e: LogEvent) => void;

/** Escape control characters (newlines included) and cut overlong text. */
export function sanitize(s: string, max = 2000): string {
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

export function formatLogEvent(e: LogEvent): string {
  let line = `narpush daemon: ${e.event}`;
  if (e.subject !== undefined) line += ` ${sanitize(e.subject, 400)}`;
  // "queued /nix/store/x (from the socket)", "failed /nix/store/x: why", "stopped: why".
  if (e.detail !== undefined) line += e.subject !== undefined && e.detail.startsWith('(') ? ` ${sanitize(e.detail)}` : `: ${sanitize(e.detail)}`;
  return line;
}

/** An error's first line, for a log detail or an answer. */
export function errorLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}
