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
    super(message, options);
    this.code = code;
    this.name = 'NarpushError';
  }
}
Object.defineProperty(NarpushError.prototype, BRAND, { value: true });

/** True for errors narpush raised on purpose (as opposed to bugs), made by any copy of this module. */
export function isNarpushError(e: unknown): e is NarpushError {
  return e instanceof NarpushError || (e instanceof Error && (e as { [BRAND]?: unknown })[BRAND] === true);
}

/** A Node system error such as ENOENT, as thrown by `fs`. */
export function isErrnoException(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string';
}
