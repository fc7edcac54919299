/**
 * When to retry an S3 request, and how long to wait: transient failures (5xx,
 * SlowDown and other throttling, connection resets and refusals, timeouts)
 * are retried with capped exponential backoff and full jitter, honouring a
 * server's Retry-After; permanent ones (access denied, no such bucket, bad
 * credentials, any other 4xx) are never retried.
 *
 * `SdkRetryStrategy` plugs this policy into the AWS SDK (its RetryStrategyV2
 * hooks), so every request the client sends gets it, including the part
 * uploads of part-upload.ts. Classification and delays are pure functions.
 * Must never sleep itself or retry anything after an abort.
 */

export interface RetryPolicy {
  /** Total attempts per request, including the first (>= 1). */
  readonly maxAttempts: number;
  /** Backoff base for errors and resets: retry k waits up to base * 2^k. */
  readonly baseDelayMs: number;
  /** Backoff base when the server throttles (SlowDown, 429): larger, to let it recover. */
  readonly throttleBaseDelayMs: number;
  /** Cap of the exponential part. */
  readonly maxDelayMs: number;
  /** Cap on how long a Retry-After header can make us wait. */
  readonly maxRetryAfterMs: number;
  /**
   * Attempts per request that may end in a timeout. Each one already waited
   * a whole connect or idle timeout: retrying a frozen server maxAttempts
   * times would hold a path for maxAttempts x idle-timeout before anyone
   * sees a failure. The caller (the daemon's queue) retries later anyway.
   */
  readonly maxTimeoutAttempts: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 8,
  baseDelayMs: 100,
  throttleBaseDelayMs: 500,
  maxDelayMs: 10_000,
  maxRetryAfterMs: 30_000,
  maxTimeoutAttempts: 2,
});

export type FailureKind = 'transient' | 'throttle' | 'permanent';

/**
 * Whether `error` is a connect or idle timeout: the SDK's own TimeoutError
 * (which has no code), or ETIMEDOUT. The SDK also names resets
 * (ECONNRESET, EPIPE) TimeoutError; those answer at once and are not counted.
 */
export function isTimeout(error: unknown): boolean {
  const e = (error ?? {}) as ErrorLike;
  if (e.code === 'ETIMEDOUT') return true;
  return e.name === 'TimeoutError' && (e.code === undefined || e.code === '');
}

// Codes that never get better by trying again: what they need is a fix by the user.
const PERMANENT_NAMES = new Set([
  'AccessDenied', 'AllAccessDisabled', 'AccountProblem', 'Forbidden', 'InvalidAccessKeyId',
  'SignatureDoesNotMatch', 'NoSuchBucket', 'InvalidBucketName', 'AuthorizationHeaderMalformed',
  'PermanentRedirect', 'InvalidRequest', 'InvalidArgument', 'NotImplemented', 'MethodNotAllowed',
  'EntityTooLarge', 'EntityTooSmall', 'InvalidStorageClass', 'CredentialsProviderError', 'AbortError',
  'ExpiredToken', 'InvalidToken', 'TokenRefreshRequired',
]);
const THROTTLE_NAMES = new Set([
  'SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequestsException',
  'RequestThrottled', 'BandwidthLimitExceeded',
]);
const TRANSIENT_NAMES = new Set([
  'InternalError', 'ServiceUnavailable', 'RequestTimeout', 'RequestTimeoutException', 'TimeoutError',
  'OperationAborted',
]);
const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN',
  'EAI_AGAIN', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET',
]);

interface ErrorLike {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  cause?: unknown;
  $metadata?: { httpStatusCode?: number; clockSkewCorrected?: boolean };
  $retryable?: { throttling?: boolean };
}

/**
 * Classify a failure. `sdkType` is the AWS SDK's own opinion when there is one
 * (TRANSIENT, THROTTLING, SERVER_ERROR, CLIENT_ERROR); ours wins where they differ
 * on a known code, and the cause chain is searched for network errors.
 */
export function classifyFailure(error: unknown, sdkType?: string): FailureKind {
  const e = (error ?? {}) as ErrorLike;
  const name = typeof e.name === 'string' ? e.name : '';
  const code = typeof e.code === 'string' ? e.code : '';
  const status = e.$metadata?.httpStatusCode;
  if (code === 'UPLOAD_ABORTED') return 'permanent';
  // The SDK has just corrected its clock after a skew error: the next attempt is signed right.
  if (e.$metadata?.clockSkewCorrected === true) return 'transient';
  if (PERMANENT_NAMES.has(name) || PERMANENT_NAMES.has(code)) return 'permanent';
  if (THROTTLE_NAMES.has(name) || status === 429 || status === 503 || e.$retryable?.throttling === true) return 'throttle';
  if (TRANSIENT_NAMES.has(name) || NETWORK_CODES.has(code)) return 'transient';
  if (status !== undefined && status >= 500 && status !== 501 && status !== 505) return 'transient';
  if (status !== undefined && status >= 400 && status !== 408) return 'permanent';
  if (sdkType === 'THROTTLING') return 'throttle';
  if (sdkType === 'TRANSIENT' || status === 408) return 'transient';
  // A reset while reading a response can arrive wrapped (deserialisation errors keep it as the cause).
  if (e.cause !== undefined && e.cause !== error) {
    const inner = classifyFailure(e.cause);
    if (inner !== 'permanent') return inner;
  }
  if (/socket hang up|aborted|premature close|ECONNRESET/i.test(typeof e.message === 'string' ? e.message : '')) {
    return 'transient';
  }
  return 'permanent';
}

/**
 * Delay before retry number `retry` (0 for the first retry): "full jitter",
 * uniform in [0, min(maxDelay, base * 2^retry)), but never less than a
 * Retry-After the server sent (itself capped by maxRetryAfterMs).
 */
export function backoffDelay(
  retry: number,
  kind: FailureKind,
  policy: RetryPolicy,
  random: () => number = Math.random,
  retryAfterMs?: number,
): number {
  const base = kind === 'throttle' ? policy.throttleBaseDelayMs : policy.baseDelayMs;
  const ceiling = Math.min(policy.maxDelayMs, base * 2 ** Math.min(retry, 30));
  const jittered = Math.floor(random() * ceiling);
  if (retryAfterMs === undefined || !(retryAfterMs > 0)) return jittered;
  return Math.max(jittered, Math.min(Math.ceil(retryAfterMs), policy.maxRetryAfterMs));
}

export interface RetryEvent {
  /** The attempt about to be made (2 for the first retry). */
  readonly attempt: number;
  readonly delayMs: number;
  readonly kind: FailureKind;
  readonly error: unknown;
}

/** What the SDK's retry middleware hands us (its RetryErrorInfo), structurally. */
interface SdkRetryErrorInfo {
  readonly error?: unknown;
  readonly errorType?: string;
  readonly retryAfterHint?: Date;
}

class Token {
  constructor(
    private readonly count: number,
    private readonly delay: number,
    readonly timeouts = 0,
  ) {}
  getRetryCount(): number {
    return this.count;
  }
  getRetryDelay(): number {
    return this.delay;
  }
}

/**
 * The policy as an SDK RetryStrategyV2. The SDK's middleware waits
 * `getRetryDelay()` between attempts; refusing a retry is done by throwing,
 * after which the middleware rethrows the request's last error.
 */
export class SdkRetryStrategy {
  readonly mode = 'standard';

  constructor(
    private readonly policy: RetryPolicy,
    private readonly random: () => number = Math.random,
    private readonly onRetry?: (e: RetryEvent) => void,
  ) {}

  async acquireInitialRetryToken(_scope: string): Promise<Token> {
    return new Token(0, 0);
  }

  async refreshRetryTokenForRetry(token: Token, info: SdkRetryErrorInfo): Promise<Token> {
    const kind = classifyFailure(info.error, info.errorType);
    const retry = token.getRetryCount();
    const timeouts = token.timeouts + (isTimeout(info.error) ? 1 : 0);
    if (kind === 'permanent' || retry + 1 >= this.policy.maxAttempts) throw new Error('not retried');
    if (timeouts >= this.policy.maxTimeoutAttempts) throw new Error('not retried');
    const retryAfterMs = info.retryAfterHint instanceof Date ? info.retryAfterHint.getTime() - Date.now() : undefined;
    const delayMs = backoffDelay(retry, kind, this.policy, this.random, retryAfterMs);
    this.onRetry?.({ attempt: retry + 2, delayMs, kind, error: info.error });
    return new Token(retry + 1, delayMs, timeouts);
  }

  recordSuccess(_token: Token): void {}
}
