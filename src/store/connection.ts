/**
 * One worker-protocol connection to a Nix daemon over any Duplex stream (a
 * Unix socket, the stdio of `nix-daemon --stdio`, or a test's fake peer).
 *
 * Requests are pipelined: each is written at once (batched per event-loop
 * turn) and a reader for its answer is queued; the daemon answers in order,
 * so answers are matched to requests by position. An error the daemon reports fails that one request and the
 * connection carries on. A malformed answer, a closed stream or a daemon
 * that stays silent for `idleTimeoutMs` while answers are owed fails every
 * request in flight with a NarpushError: nothing ever waits forever on a dead
 * or hung peer. The timeout is an idle one, restarted by every byte the
 * daemon sends (log lines included), never a total: a long answer that keeps
 * coming is never cut off. Never prints; log lines go to the `onLog` hook.
 */
import type { Duplex } from 'node:stream';
import { NarpushError } from '../errors.js';
import {
  type Answer,
  AnswerReply,
  DaemonError,
  type DaemonErrorInfo,
  type DaemonLog,
  type Reply,
  type StderrHooks,
  frameReply,
} from './daemon-stderr.js';
import { type HandshakeInfo, clientHello, clientSettings, daemonInfo, negotiate, serverHello } from './handshake.js';
import { type Frame, NEED_MORE, WireDecoder } from './wire-reader.js';
import { wire } from './wire.js';

export interface ConnectionOptions {
  /** Log lines and activities the daemon sends while working. Default: dropped. */
  readonly onLog?: (event: DaemonLog) => void;
  /** Extra words for "connection closed" errors, e.g. the last line a spawned daemon wrote on stderr. */
  readonly closeDetail?: () => string | undefined;
  /** Fail the connection (STORE_TIMEOUT) when an answer is owed and no byte arrives for this long; 0: never. Default 0. */
  readonly idleTimeoutMs?: number;
}

/** One request: how to write it at the negotiated version, and how to read its result. */
export interface Operation<T> {
  readonly name: string;
  encode(version: number): Buffer;
  result(version: number): Frame<T>;
}

interface Pending {
  readonly name: string;
  readonly reply: Reply<unknown>;
  /** The reply is an Answer: resolve with its value, or reject with its DaemonError. */
  readonly unwrap: boolean;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

export class DaemonConnection {
  private readonly decoder = new WireDecoder();
  private queue: (Pending | undefined)[] = [];
  private head = 0;
  private closed: NarpushError | undefined;
  private outgoing: Buffer[] = [];
  private readonly hooks: StderrHooks;
  private handshakeInfo: HandshakeInfo | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  /** When the daemon last sent a byte, or when it began to owe an answer. */
  private lastHeard = 0;

  private constructor(
    private readonly stream: Duplex,
    private readonly options: ConnectionOptions,
  ) {
    this.hooks = {
      onLog: options.onLog,
      // narpush never sends data through STDERR_READ; an empty string tells
      // the daemon "end of input", so it fails that request cleanly.
      onRead: () => this.write(wire((w) => w.string(''))),
    };
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('end', () => this.onClosed());
    stream.on('close', () => this.onClosed());
    stream.on('error', (e: Error) => this.onClosed(e));
  }

  /** Handshake over `stream`; the connection owns the stream from here on. */
  static async open(stream: Duplex, options: ConnectionOptions = {}): Promise<DaemonConnection> {
    const conn = new DaemonConnection(stream, options);
    try {
      await conn.handshake();
    } catch (e) {
      conn.destroy();
      throw e;
    }
    return conn;
  }

  get info(): HandshakeInfo {
    if (!this.handshakeInfo) throw new Error('DaemonConnection.info: no handshake yet');
    return this.handshakeInfo;
  }

  get protocolVersion(): number {
    return this.info.protocolVersion;
  }

  /** Requests written and not yet answered. */
  get inFlight(): number {
    return this.queue.length - this.head;
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  /** Send one request; resolves with its result, rejects with a DaemonError if the daemon refused it. */
  run<T>(op: Operation<T>): Promise<T> {
    const version = this.protocolVersion;
    return this.send(op.name, op.encode(version), new AnswerReply(version, this.hooks, op.result(version)), true) as Promise<T>;
  }

  /** Half-close: the daemon finishes the answers in flight, then ends the connection. */
  async close(timeoutMs = 5000): Promise<void> {
    if (this.stream.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.destroy();
        resolve();
      }, timeoutMs);
      timer.unref();
      this.stream.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.stream.end();
    });
  }

  /** Drop the connection now; requests in flight fail with STORE_CONNECTION_CLOSED. */
  destroy(): void {
    this.fail(new NarpushError('STORE_CONNECTION_CLOSED', 'the connection to the Nix daemon was closed by narpush'));
    this.stream.destroy();
  }

  private async handshake(): Promise<void> {
    const hello = await this.send('the handshake', clientHello(), frameReply(serverHello));
    const version = negotiate(hello);
    const info = this.send('the handshake', clientSettings(version), frameReply(daemonInfo(version)));
    // Then startup messages up to STDERR_LAST, like the answer to a request with no result.
    const started = this.send('the handshake', Buffer.alloc(0), new AnswerReply(version, this.hooks, () => undefined), true);
    const [daemon] = await Promise.all([info, started]);
    this.handshakeInfo = { protocolVersion: version, daemonProtocolVersion: hello.daemonVersion, ...daemon };
  }

  private send<T>(name: string, payload: Buffer, reply: Reply<T>, unwrap = false): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<T>((resolve, reject) => {
      // The silence that counts starts when an answer becomes owed, not at the last answer.
      if (this.inFlight === 0) this.lastHeard = Date.now();
      this.queue.push({ name, reply, unwrap, resolve: resolve as (v: unknown) => void, reject });
      this.armIdleTimer();
      if (payload.length > 0) this.write(payload);
    });
  }

  private write(payload: Buffer): void {
    // Batch the requests of one event-loop turn (all answers that arrived
    // together, and what they led to) into one write, one syscall: pipelining
    // thousands of small requests is then cheap, whatever the stream is.
    this.outgoing.push(payload);
    if (this.outgoing.length > 1) return;
    setImmediate(() => {
      const batch = this.outgoing.length === 1 ? this.outgoing[0]! : Buffer.concat(this.outgoing);
      this.outgoing = [];
      if (!this.stream.destroyed) this.stream.write(batch);
    });
  }

  /** One timer per connection, re-armed for the remaining time rather than reset on every chunk. */
  private armIdleTimer(): void {
    const ms = this.options.idleTimeoutMs ?? 0;
    if (ms <= 0 || this.idleTimer || this.closed) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.closed || this.inFlight === 0) return;
      const silent = Date.now() - this.lastHeard;
      if (silent < ms) return this.armIdleTimer();
      const current = this.queue[this.head];
      this.fail(
        new NarpushError(
          'STORE_TIMEOUT',
          `the Nix daemon sent nothing for ${ms / 1000} s while answering ${current?.name ?? 'a request'}; gave up on the connection`,
        ),
      );
      this.stream.destroy();
    }, Math.max(1, ms - (Date.now() - this.lastHeard)));
    this.idleTimer.unref();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.lastHeard = Date.now();
    this.decoder.push(chunk);
    try {
      for (;;) {
        const current = this.queue[this.head];
        if (!current) {
          if (this.decoder.buffered > 0) {
            throw new NarpushError('STORE_PROTOCOL_ERROR', 'the Nix daemon sent data nobody asked for');
          }
          return;
        }
        const value = current.reply.poll(this.decoder);
        if (value === NEED_MORE) return;
        this.queue[this.head++] = undefined;
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        if (!current.unwrap) current.resolve(value);
        else if ((value as Answer<unknown>).ok) current.resolve((value as { value: unknown }).value);
        else current.reject(new DaemonError((value as { error: DaemonErrorInfo }).error));
      }
    } catch (e) {
      const error =
        e instanceof NarpushError
          ? e
          : new NarpushError('STORE_PROTOCOL_ERROR', `cannot read the Nix daemon's answer: ${String(e)}`, { cause: e });
      this.fail(error);
      this.stream.destroy();
    }
  }

  private onClosed(cause?: Error): void {
    if (this.closed) return;
    const current = this.queue[this.head];
    const detail = this.options.closeDetail?.();
    const where = current ? ` while answering ${current.name}` : '';
    const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
    const why = cause && errno !== 'EPIPE' && errno !== 'ECONNRESET' ? ` (${cause.message})` : '';
    const extra = detail ? `: ${detail}` : '';
    this.fail(
      new NarpushError(
        'STORE_CONNECTION_CLOSED',
        `the Nix daemon closed the connection${where}${why}${extra}`,
        cause ? { cause } : undefined,
      ),
    );
  }

  private fail(error: NarpushError): void {
    if (this.closed) return;
    this.closed = error;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const pending = this.queue.slice(this.head);
    this.queue = [];
    this.head = 0;
    for (const p of pending) p?.reject(error);
  }
}
