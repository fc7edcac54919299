/**
 * A monotonic clock in milliseconds, for timing work. Not the `performance`
 * global: on Node 20 its first use loads perf_hooks and its dozen internal
 * modules, about 2 ms of every command's start-up.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
