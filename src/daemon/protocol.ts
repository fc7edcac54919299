/**
 * The daemon's wire protocol: one JSON object per line each way, over a Unix
 * socket. This module is the part shared with bin/narpush-hook, so it must
 * stay tiny and import nothing (the hook's latency is node's start-up plus
 * this). Validation of what a client sends lives in request.ts, on the
 * daemon's side only.
 *
 *   client -> {"op":"enqueue","paths":["/nix/store/…",…],"drv":"/nix/store/….drv"}\n
 *   daemon -> {"ok":true,"queued":2,"duplicates":0,"rejected":[]}\n
 *   client -> {"op":"status"}\n
 *   daemon -> {"ok":true,"status":{…}}\n
 *   daemon -> {"ok":false,"code":"BAD_REQUEST","error":"…"}\n   (any failure)
 */

import type { ErrorCode } from '../error-codes.js';

/** The longest line either side accepts, newline excluded. */
export const MAX_LINE_BYTES = 1024 * 1024;
/** The most paths one enqueue request may carry (a line of that many paths still fits in MAX_LINE_BYTES). */
export const MAX_PATHS_PER_REQUEST = 4096;
/** The longest path string looked at; store paths are far shorter (~260 bytes). */
export const MAX_PATH_CHARS = 4096;

export interface EnqueueRequest {
  readonly op: 'enqueue';
  /** OUT_PATHS of the build; may be empty (Nix 2.8.0), then `drv`'s outputs are meant. */
  readonly paths: readonly string[];
  /** DRV_PATH of the build, when known. */
  readonly drv?: string;
}

export interface StatusRequest {
  readonly op: 'status';
}

export type DaemonRequest = EnqueueRequest | StatusRequest;

export interface RejectedPath {
  readonly path: string;
  readonly reason: string;
}

export interface EnqueueAnswer {
  readonly ok: true;
  /** Paths newly written to the queue. */
  readonly queued: number;
  /** Paths that were already queued or uploading. */
  readonly duplicates: number;
  readonly rejected: readonly RejectedPath[];
}

export interface ErrorAnswer {
  readonly ok: false;
  /** From the same registry as NarpushError's (error-codes.ts). */
  readonly code: ErrorCode;
  readonly error: string;
}

/** One line of JSON, newline-terminated. */
export function encodeLine(message: unknown): string {
  return `${JSON.stringify(message)}\n`;
}

/**
 * Splits a byte stream into lines, holding at most `maxLineBytes` of an
 * unfinished line: a peer that never sends a newline cannot make it buffer
 * more. After an overflow it stays overflowed; the caller drops the peer.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  overflowed = false;

  constructor(private readonly maxLineBytes: number = MAX_LINE_BYTES) {}

  /** Complete lines in `chunk` (decoded as UTF-8, without the newline). */
  push(chunk: Buffer): string[] {
    const lines: string[] = [];
    if (this.overflowed) return lines;
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      if (this.size + piece.length > this.maxLineBytes) return this.overflow(lines);
      this.parts.push(piece);
      lines.push(Buffer.concat(this.parts).toString('utf8'));
      this.parts = [];
      this.size = 0;
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (this.size + rest.length > this.maxLineBytes) return this.overflow(lines);
    if (rest.length > 0) {
      // Copy: the socket may reuse its chunk's memory.
      this.parts.push(Buffer.from(rest));
      this.size += rest.length;
    }
    return lines;
  }

  /** Bytes of an unfinished line held. */
  get pending(): number {
    return this.size;
  }

  private overflow(lines: string[]): string[] {
    this.overflowed = true;
    this.parts = [];
    this.size = 0;
    return lines;
  }
}
