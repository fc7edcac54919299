/**
 * When to try a failed path again: exponential backoff with jitter, capped.
 * A path is never given up on; the delay just stops growing at the cap.
 * Pure: the random source is a parameter.
 */

export interface RetryPolicy {
  /** The delay after the first failure (before jitter), in ms. */
  readonly initialDelayMs: number;
  /** The largest delay, in ms. */
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { initialDelayMs: 5_000, maxDelayMs: 10 * 60_000 };

/**
 * The wait after failure number `attempts` (1 for the first failure):
 * `min(max, initial * 2^(attempts-1))`, of which a random half is jitter
 * ("equal jitter"), so many paths failing together do not retry in lockstep
 * and a retry never comes sooner than half the nominal delay.
 */
export function retryDelayMs(attempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(attempts));
  // 2^(n-1) overflows to Infinity for huge n, which Math.min turns into the cap.
  const nominal = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (n - 1));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(nominal / 2 + (nominal / 2) * r);
}
