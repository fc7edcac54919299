// Retry policy: which failures are retried, and the backoff delays (pure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_RETRY_POLICY, SdkRetryStrategy, backoffDelay, classifyFailure, isTimeout, type RetryEvent } from '../../src/s3/retry.js';
import { NarpushError } from '../../src/errors.js';

const sdkErr = (name: string, status?: number, extra: object = {}): Error =>
  Object.assign(new Error(name), { name, ...(status !== undefined && { $metadata: { httpStatusCode: status } }), ...extra });

test('classification of S3 failures', () => {
  const cases: [unknown, string][] = [
    [sdkErr('SlowDown', 503), 'throttle'],
    [sdkErr('Unknown', 503), 'throttle'], // a HEAD has no body to name it
    [sdkErr('TooManyRequestsException', 429), 'throttle'],
    [sdkErr('InternalError', 500), 'transient'],
    [sdkErr('Unknown', 502), 'transient'],
    [sdkErr('ServiceUnavailable', 504), 'transient'],
    [sdkErr('RequestTimeout', 400), 'transient'],
    [sdkErr('TimeoutError', undefined, { code: 'ECONNRESET' }), 'transient'],
    [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'transient'],
    [Object.assign(new Error('aborted'), { code: 'ECONNRESET' }), 'transient'],
    [new Error('wrapped', { cause: Object.assign(new Error('x'), { code: 'EPIPE' }) }), 'transient'],
    [sdkErr('AccessDenied', 403), 'permanent'],
    [sdkErr('Unknown', 403), 'permanent'],
    [sdkErr('NoSuchBucket', 404), 'permanent'],
    [sdkErr('InvalidAccessKeyId', 403), 'permanent'],
    [sdkErr('SignatureDoesNotMatch', 403), 'permanent'],
    [sdkErr('NoSuchUpload', 404), 'permanent'],
    [sdkErr('NotImplemented', 501), 'permanent'],
    [sdkErr('CredentialsProviderError'), 'permanent'],
    [sdkErr('AbortError'), 'permanent'],
    [new NarpushError('UPLOAD_ABORTED', 'x'), 'permanent'],
    [new Error('something odd'), 'permanent'],
    [sdkErr('RequestTimeTooSkewed', 403, { $metadata: { httpStatusCode: 403, clockSkewCorrected: true } }), 'transient'],
  ];
  for (const [e, kind] of cases) assert.equal(classifyFailure(e), kind, (e as Error).name + ' ' + (e as Error).message);
  // The SDK's opinion counts where we have none.
  assert.equal(classifyFailure(new Error('x'), 'TRANSIENT'), 'transient');
  assert.equal(classifyFailure(new Error('x'), 'THROTTLING'), 'throttle');
  assert.equal(classifyFailure(sdkErr('AccessDenied', 403), 'TRANSIENT'), 'permanent');
});

test('backoff: full jitter under an exponential cap, Retry-After as a floor', () => {
  const p = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 100, throttleBaseDelayMs: 500, maxDelayMs: 10_000, maxRetryAfterMs: 30_000 };
  fc.assert(
    fc.property(fc.nat(40), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.boolean(), (retry, r, throttle) => {
      const kind = throttle ? 'throttle' : 'transient';
      const d = backoffDelay(retry, kind, p, () => r);
      const cap = Math.min(p.maxDelayMs, (throttle ? 500 : 100) * 2 ** retry);
      assert.ok(d >= 0 && d < cap, `${d} < ${cap}`);
      assert.equal(d, Math.floor(r * cap));
    }),
  );
  assert.equal(backoffDelay(0, 'transient', p, () => 0, 1000), 1000);
  assert.equal(backoffDelay(10, 'transient', p, () => 0.99, 1000), 9900, 'a longer backoff wins over Retry-After');
  assert.equal(backoffDelay(0, 'throttle', p, () => 0, 120_000), 30_000, 'Retry-After is capped');
  assert.equal(backoffDelay(0, 'transient', p, () => 0.5, -5), 50, 'a Retry-After in the past is ignored');
});

test('the SDK strategy: bounded attempts, permanent errors refused, events reported', async () => {
  const events: RetryEvent[] = [];
  const s = new SdkRetryStrategy({ ...DEFAULT_RETRY_POLICY, maxAttempts: 3, baseDelayMs: 8 }, () => 0.5, (e) => events.push(e));
  let t = await s.acquireInitialRetryToken('');
  t = await s.refreshRetryTokenForRetry(t, { error: sdkErr('InternalError', 500), errorType: 'TRANSIENT' });
  assert.equal(t.getRetryCount(), 1);
  assert.equal(t.getRetryDelay(), 4);
  t = await s.refreshRetryTokenForRetry(t, { error: sdkErr('InternalError', 500), retryAfterHint: new Date(Date.now() + 2000) });
  assert.ok(t.getRetryDelay() > 1900);
  await assert.rejects(s.refreshRetryTokenForRetry(t, { error: sdkErr('InternalError', 500) }), 'attempt 4 of 3');
  const fresh = await s.acquireInitialRetryToken('');
  await assert.rejects(s.refreshRetryTokenForRetry(fresh, { error: sdkErr('NoSuchBucket', 404) }));
  assert.deepEqual(events.map((e) => [e.attempt, e.kind]), [[2, 'transient'], [3, 'transient']]);
});

test('isTimeout: the SDK timeouts and ETIMEDOUT, not the resets the SDK also names TimeoutError', () => {
  assert.equal(isTimeout(Object.assign(new Error('the request socket timed out after 500 ms of inactivity'), { name: 'TimeoutError' })), true);
  assert.equal(isTimeout(Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' })), true);
  assert.equal(isTimeout(Object.assign(new Error('write ECONNRESET'), { name: 'TimeoutError', code: 'ECONNRESET' })), false);
  assert.equal(isTimeout(Object.assign(new Error('write EPIPE'), { name: 'TimeoutError', code: 'EPIPE' })), false);
  assert.equal(isTimeout(new Error('other')), false);
});

test('SdkRetryStrategy: a request that timed out twice is not retried again, whatever maxAttempts allows; resets do not count', async () => {
  const policy = { ...DEFAULT_RETRY_POLICY, maxAttempts: 8, baseDelayMs: 1, maxDelayMs: 1 };
  const s = new SdkRetryStrategy(policy, () => 0);
  const timeout = Object.assign(new Error('timed out after 1 ms of inactivity'), { name: 'TimeoutError' });
  const reset = Object.assign(new Error('write ECONNRESET'), { name: 'TimeoutError', code: 'ECONNRESET' });
  let token = await s.acquireInitialRetryToken('s3');
  for (let i = 0; i < 5; i++) token = await s.refreshRetryTokenForRetry(token, { error: reset, errorType: 'TRANSIENT' });
  token = await s.refreshRetryTokenForRetry(token, { error: timeout, errorType: 'TRANSIENT' });
  await assert.rejects(s.refreshRetryTokenForRetry(token, { error: timeout, errorType: 'TRANSIENT' }), /not retried/);
});
