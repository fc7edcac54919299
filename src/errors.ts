/**
 * The one error type narpush throws on purpose.
 *
 * Every failure that a user can cause or fix carries a stable `code` (for
 * tests, JSON reports and the daemon's answers; the codes, their meaning,
 * retries and exit codes are in error-codes.ts) and a message that reads as
 * one line. Library code throws these and never prints, exits or decides what
 * a user sees: that happens only at the edges (src/cli, src/daemon).
 */
import type { ErrorCode } from './error-codes.js';

export type { ErrorCode } from './error-codes.js';

/**
 * Marks NarpushErrors across copies of this module: bin/narpush's bundle has
 * one in its entry (the early store connection) and one in its commands
 * (scripts/bundle.mjs), and `instanceof` sees only its own copy's class.
 */
const BRAND = Symbol.for('narpush.NarpushError');

export class NarpushError extends Error {
  declare readonly [BRAND]: true;
  /** One of the closed set in error-codes.ts. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(printable(message), options);
    this.code = code;
    this.name = 'NarpushError';
  }
}
Object.defineProperty(NarpushError.prototype, BRAND, { value: true });

/**
 * Characters that would move the cursor, recolour or rewrite a terminal,
 * end the line, or reorder the text around them: C0 controls (newline and
 * tab too), DEL, C1 controls (U+009B is a CSI wherever a terminal reads
 * UTF-8), the bidirectional marks and overrides, line and paragraph
 * separators. Messages quote bytes that come from caches, S3 servers and
 * files, which anyone may have written.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/** `s` with each of those characters as an escape (\n, \x1b, \u202e): one line, safe to print. */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** True for errors narpush raised on purpose (as opposed to bugs), made by any copy of this module. */
export function isNarpushError(e: unknown): e is NarpushError {
  return e instanceof NarpushError || (e instanceof Error && (e as { [BRAND]?: unknown })[BRAND] === true);
}

/** A Node system error such as ENOENT, as thrown by `fs`. */
export function isErrnoException(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}
