/**
 * `narpush status [--socket PATH] [--json]`: ask the running daemon what it
 * is doing. A daemon that is not running is one line on stderr and exit 1.
 */
import * as nodePath from 'node:path';
import { NarpushError } from '../errors.js';
import { sendRequest } from '../daemon/client.js';
import type { DaemonStatus } from '../daemon/daemon.js';
import { DEFAULT_SOCKET } from '../daemon/hook.js';
import { formatBytes } from './format.js';
import type { CliContext } from './context.js';

export interface StatusFlags {
  readonly socket?: string;
  readonly json: boolean;
}

function duration(s: number): string {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const h = Math.floor(s / 3600);
  return h < 48 ? `${h} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(h / 24)} days ${h % 24} h`;
}

export function formatStatus(s: DaemonStatus): string {
  const lines = [
    `narpush daemon (pid ${s.pid}) up ${duration(s.uptimeSeconds)}, listening on ${s.socket}, uploading to ${s.cache}`,
    `queued: ${s.queued} (${s.waitingRetry} waiting to retry), in flight: ${s.inFlight.length}`,
    `uploaded: ${s.uploaded} paths (${formatBytes(s.narBytes)} -> ${formatBytes(s.fileBytes)}), skipped: ${s.skipped} already in the cache, ${s.skippedUpstream ?? 0} served upstream, rejected: ${s.rejected}, dropped: ${s.dropped}, failed attempts: ${s.failures}`,
    `throughput: ${s.busySeconds > 0 ? `${formatBytes(s.narBytesPerSecond)}/s` : '-'} (NAR bytes over ${s.busySeconds.toFixed(1)} s of uploading)`,
  ];
  const logs = s.buildLogs;
  if (logs.written + logs.missing + logs.failed > 0) {
    lines.push(`build logs: ${logs.written} uploaded, ${logs.missing} not kept locally, ${logs.failed} failed`);
  }
  for (const p of s.inFlight.slice(0, 20)) lines.push(`  uploading ${p}`);
  if (s.failing.length > 0) lines.push('failing:');
  for (const f of s.failing) {
    const when = f.nextRetryInSeconds > 0 ? `next try in ${duration(f.nextRetryInSeconds)}` : 'retrying now';
    lines.push(`  ${f.path}: ${f.attempts} failed attempt(s), ${when}; last error: ${f.lastError}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function status(ctx: CliContext, flags: StatusFlags): Promise<number> {
  const socket = nodePath.resolve(flags.socket ?? (ctx.env.NARPUSH_SOCKET || DEFAULT_SOCKET));
  const answer = await sendRequest(socket, { op: 'status' }, { timeoutMs: 10_000 });
  if (answer.ok !== true || typeof answer.status !== 'object' || answer.status === null) {
    throw new NarpushError('DAEMON_ERROR', `the daemon at ${socket} answered: ${String(answer.error ?? 'an unexpected answer')}`);
  }
  const s = answer.status as DaemonStatus;
  ctx.stdout.write(flags.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s));
  return 0;
}
