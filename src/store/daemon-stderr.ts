/**
 * What the Nix daemon sends between a request and its answer: log lines,
 * activities, data requests and finally STDERR_LAST (the answer follows) or
 * STDERR_ERROR (no answer follows; the connection stays usable).
 * (Nix: processStderr in worker-protocol-connection.cc / remote-store.cc.)
 *
 * Pure frames; side effects (answering STDERR_READ, passing log lines on)
 * go through hooks the connection supplies, called once per whole message.
 * Never prints.
 */
import { NarpushError } from '../errors.js';
import {
  STDERR_ERROR,
  STDERR_LAST,
  STDERR_NEXT,
  STDERR_READ,
  STDERR_RESULT,
  STDERR_START_ACTIVITY,
  STDERR_STOP_ACTIVITY,
  STDERR_WRITE,
  V,
} from './protocol.js';
import { type Frame, NEED_MORE, type NeedMore, type WireDecoder, type WireReader } from './wire-reader.js';

export type LogField = number | string;

export type DaemonLog =
  | { readonly kind: 'message'; readonly text: string }
  | {
      readonly kind: 'start-activity';
      readonly id: bigint;
      readonly level: number;
      readonly type: number;
      readonly text: string;
      readonly fields: readonly LogField[];
      readonly parent: bigint;
    }
  | { readonly kind: 'stop-activity'; readonly id: bigint }
  | { readonly kind: 'result'; readonly id: bigint; readonly type: number; readonly fields: readonly LogField[] };

/** An error the daemon reported for one request. */
export interface DaemonErrorInfo {
  readonly message: string;
  /** Exit status (old format) or verbosity level (structured format), as sent. */
  readonly status: number;
  readonly traces: readonly string[];
}

export interface StderrHooks {
  onLog?(event: DaemonLog): void;
  /** STDERR_WRITE: data for the request's sink. */
  onWrite?(data: Buffer): void;
  /** STDERR_READ: the daemon wants up to `max` bytes; the hook must send them. */
  onRead?(max: number): void;
}

function bad(message: string): NarpushError {
  return new NarpushError('STORE_PROTOCOL_ERROR', `malformed answer from the Nix daemon: ${message}`);
}

/** One message the daemon sends while it works on a request. */
export type StderrMessage =
  | { readonly kind: 'last' }
  | { readonly kind: 'error'; readonly error: DaemonErrorInfo }
  | { readonly kind: 'log'; readonly event: DaemonLog }
  | { readonly kind: 'write'; readonly data: Buffer }
  | { readonly kind: 'read'; readonly max: number };

const LAST: StderrMessage = Object.freeze({ kind: 'last' });

function fields(r: WireReader): LogField[] {
  const n = r.count(1024);
  const out: LogField[] = [];
  for (let i = 0; i < n; i++) {
    const type = r.u64();
    if (type === 0) {
      const v = r.u64Big();
      out.push(v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString());
    } else if (type === 1) {
      out.push(r.string());
    } else {
      throw bad(`unknown log field type ${type}`);
    }
  }
  return out;
}

/** The structured error of protocol >= 1.26 (Nix: readError in serialise.cc). */
function structuredError(r: WireReader): DaemonErrorInfo {
  const type = r.string(1024);
  if (type !== 'Error') throw bad(`expected an 'Error', got '${type}'`);
  const level = r.u64();
  r.bytes(1024 * 1024); // the error name, no longer used
  const message = r.string();
  if (r.u64() !== 0) throw bad('error positions are not part of the protocol');
  const n = r.count(4096);
  const traces: string[] = [];
  for (let i = 0; i < n; i++) {
    if (r.u64() !== 0) throw bad('trace positions are not part of the protocol');
    traces.push(r.string());
  }
  return { message, status: level, traces };
}

const frames = new Map<number, Frame<StderrMessage>>();

/** Read one STDERR_* message. Unknown kinds throw: the stream is then out of sync. */
export function stderrMessage(version: number): Frame<StderrMessage> {
  let frame = frames.get(version);
  if (!frame) {
    frame = stderrMessageFrame(version);
    frames.set(version, frame);
  }
  return frame;
}

function stderrMessageFrame(version: number): Frame<StderrMessage> {
  return (r) => {
    const kind = r.u64();
    switch (kind) {
      case STDERR_LAST:
        return LAST;
      case STDERR_ERROR:
        if (version >= V.STRUCTURED_ERRORS) return { kind: 'error', error: structuredError(r) };
        return { kind: 'error', error: { message: r.string(), status: r.u64(), traces: [] } };
      case STDERR_NEXT:
        return { kind: 'log', event: { kind: 'message', text: r.string() } };
      case STDERR_WRITE:
        return { kind: 'write', data: r.bytes() };
      case STDERR_READ:
        return { kind: 'read', max: r.u64() };
      case STDERR_START_ACTIVITY: {
        const id = r.u64Big();
        const level = r.u64();
        const type = r.u64();
        const text = r.string();
        const f = fields(r);
        const parent = r.u64Big();
        return { kind: 'log', event: { kind: 'start-activity', id, level, type, text, fields: f, parent } };
      }
      case STDERR_STOP_ACTIVITY:
        return { kind: 'log', event: { kind: 'stop-activity', id: r.u64Big() } };
      case STDERR_RESULT: {
        const id = r.u64Big();
        const type = r.u64();
        return { kind: 'log', event: { kind: 'result', id, type, fields: fields(r) } };
      }
      default:
        throw bad(`unknown message type 0x${kind.toString(16)}`);
    }
  };
}

export type Answer<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: DaemonErrorInfo };

/** Something that reads an answer from a decoder, possibly over several calls. */
export interface Reply<T> {
  /** Consume what it can; the finished value, or NEED_MORE. */
  poll(decoder: WireDecoder): T | NeedMore;
}

/** A reply that is one frame. */
export function frameReply<T>(frame: Frame<T>): Reply<T> {
  return { poll: (d) => d.read(frame) };
}

/**
 * A whole answer: the daemon's messages up to STDERR_LAST, then (unless it
 * sent STDERR_ERROR) the result. Each message is a frame of its own and its
 * hook runs exactly once, when the message is complete.
 */
export class AnswerReply<T> implements Reply<Answer<T>> {
  private inResult = false;
  private readonly message: Frame<StderrMessage>;

  constructor(
    version: number,
    private readonly hooks: StderrHooks,
    private readonly result: Frame<T>,
  ) {
    this.message = stderrMessage(version);
  }

  poll(d: WireDecoder): Answer<T> | NeedMore {
    while (!this.inResult) {
      const m = d.read(this.message);
      if (m === NEED_MORE) return NEED_MORE;
      switch (m.kind) {
        case 'last':
          this.inResult = true;
          break;
        case 'error':
          return { ok: false, error: m.error };
        case 'log':
          this.hooks.onLog?.(m.event);
          break;
        case 'write':
          this.hooks.onWrite?.(m.data);
          break;
        case 'read':
          this.hooks.onRead?.(m.max);
          break;
      }
    }
    const value = d.read(this.result);
    return value === NEED_MORE ? NEED_MORE : { ok: true, value };
  }
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

/** An error the Nix daemon reported; the connection it came from is still usable. */
export class DaemonError extends NarpushError {
  /** The daemon's full message, colours removed. */
  readonly daemonMessage: string;
  readonly traces: readonly string[];

  constructor(info: DaemonErrorInfo) {
    const text = info.message.replace(ANSI, '').trim();
    const firstLine = text.split('\n').find((l) => l.trim() !== '') ?? 'unknown error';
    const line = firstLine.trim().replace(/^error: /, '');
    super(/ is not valid$/.test(line) ? 'INVALID_PATH' : 'STORE_ERROR', `nix-daemon: ${line}`);
    this.name = 'DaemonError';
    this.daemonMessage = text;
    this.traces = info.traces.map((t) => t.replace(ANSI, ''));
  }
}
