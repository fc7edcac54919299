/**
 * How fast SHA-256 runs on this machine's CPU, measured once: with SHA
 * extensions (x86 sha_ni, ARMv8 crypto) OpenSSL hashes about four times
 * faster than without, and that decides whether a NAR's hash is worth
 * handing to another thread (cache/plan.ts). Pure CPU work; no I/O.
 */
import { createHash } from 'node:crypto';

/**
 * Bytes per millisecond (750 MiB/s) above which hashing a NAR here is
 * taken to cost this thread less than copying and posting it to a thread
 * (about 0.9 ms per MiB) and starting that thread. The line falls between
 * the two kinds of CPU, far from both: OpenSSL hashes at about 400 MiB/s
 * without SHA extensions (380 on an earlier machine of these benchmarks),
 * and this probe reads 1,140-1,400 MiB/s on a CPU with them, busy or not.
 * Drawn at the break-even of hashing against
 * posting alone (1,100 MiB/s), it came within 4% of that CPU's readings
 * under load, and a process (a daemon measures once) could take the slower
 * way for good (the figures: docs/performance.md).
 */
export const FAST_SHA256_BYTES_PER_MS = 0.75 * 1024 * 1024;

let measured: number | undefined;

/** SHA-256 throughput in bytes per millisecond: the best of a few 256 KiB hashes (about 1 ms in all). */
export function sha256BytesPerMs(): number {
  if (measured !== undefined) return measured;
  const data = Buffer.alloc(256 * 1024, 0x5a);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    // Not performance.now(): its first use loads perf_hooks (src/clock.ts).
    const t0 = process.hrtime.bigint();
    createHash('sha256').update(data).digest();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e6);
  }
  measured = data.length / Math.max(best, 1e-3);
  return measured;
}

/** Whether SHA-256 is fast here (SHA extensions): see FAST_SHA256_BYTES_PER_MS. */
export function sha256IsFast(): boolean {
  return sha256BytesPerMs() >= FAST_SHA256_BYTES_PER_MS;
}
