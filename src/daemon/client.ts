/**
 * Talking to a running daemon: one request, one answer, over its socket,
 * within a deadline. Used by bin/narpush-hook (so: node builtins and the
 * tiny protocol module only) and by `narpush status`. Never prints.
 */
import { createConnection } from 'node:net';
import { NarpushError } from '../errors.js';
import { type DaemonRequest, LineSplitter, MAX_LINE_BYTES, encodeLine } from './protocol.js';

export interface RequestOptions {
  /** Give up after this long, from connecting to the answer. */
  readonly timeoutMs: number;
}

const ABSENT = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTDIR']);

/**
 * Send `request` and return the daemon's answer, parsed (an `ok: false`
 * answer is returned, not thrown). Throws DAEMON_NOT_RUNNING when nothing
 * listens, DAEMON_TIMEOUT when no answer came in time, DAEMON_UNREACHABLE
 * for anything else.
 */
export function sendRequest(socketPath: string, request: DaemonRequest, opts: RequestOptions): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path: socketPath });
    const lines = new LineSplitter(MAX_LINE_BYTES);
    let settled = false;
    const finish = (error: NarpushError | undefined, answer?: Record<string, unknown>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(answer!);
    };
    const timer = setTimeout(
      () => finish(new NarpushError('DAEMON_TIMEOUT', `the narpush daemon at ${socketPath} did not answer within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    socket.once('connect', () => socket.write(encodeLine(request)));
    socket.on('data', (chunk: Buffer) => {
      const [line] = lines.push(chunk);
      if (lines.overflowed) {
        finish(new NarpushError('DAEMON_UNREACHABLE', `the narpush daemon at ${socketPath} sent an oversized answer`));
      } else if (line !== undefined) {
        let answer: unknown;
        try {
          answer = JSON.parse(line);
        } catch {
          answer = undefined;
        }
        if (typeof answer === 'object' && answer !== null && typeof (answer as { ok?: unknown }).ok === 'boolean') {
          finish(undefined, answer as Record<string, unknown>);
        } else {
          finish(new NarpushError('DAEMON_UNREACHABLE', `the narpush daemon at ${socketPath} sent an answer that is not valid`));
        }
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (ABSENT.has(e.code ?? '')) {
        finish(new NarpushError('DAEMON_NOT_RUNNING', `no narpush daemon is listening on ${socketPath}`, { cause: e }));
      } else {
        finish(new NarpushError('DAEMON_UNREACHABLE', `cannot talk to the narpush daemon at ${socketPath}: ${e.code ?? e.message}`, { cause: e }));
      }
    });
    socket.on('close', () =>
      finish(new NarpushError('DAEMON_UNREACHABLE', `the narpush daemon at ${socketPath} closed the connection without answering`)),
    );
  });
}
