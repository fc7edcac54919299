/**
 * Shared pieces of the benchmarks: timing a command, medians and
 * percentiles, and a command's peak memory. Benchmarks print figures; they
 * never pass or fail on them (machines are noisy: tests must not time).
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { NARPUSH_BIN } from '../test/helpers/run.js';

export interface Timed {
  readonly ms: number;
  readonly stdout: Buffer;
}

/** Run a command to completion and return its wall time; throws when it fails. */
export function timeRun(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; stdout?: number | 'pipe' } = {}): Timed {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, {
    stdio: ['ignore', opts.stdout ?? 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    maxBuffer: 1 << 30,
  });
  const t1 = process.hrtime.bigint();
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${String(r.stderr).slice(0, 2000)}`);
  return { ms: Number(t1 - t0) / 1e6, stdout: r.stdout ?? Buffer.alloc(0) };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The p-th percentile (0-100), nearest rank. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Alternate runs of each side so noise hits both alike; returns each side's times. */
export function alternate<K extends string>(runs: number, sides: Record<K, () => number>, between?: () => void): Record<K, number[]> {
  const times = Object.fromEntries(Object.keys(sides).map((k) => [k, [] as number[]])) as unknown as Record<K, number[]>;
  for (let i = 0; i < runs; i++) {
    for (const k of Object.keys(sides) as K[]) {
      between?.();
      times[k].push(sides[k]());
    }
  }
  return times;
}

export function mib(bytes: number): number {
  return bytes / (1 << 20);
}

/**
 * As timeRun, without blocking this process: needed when this process also
 * serves the command (s3rver runs in the benchmark's own event loop).
 * With `rss`, the command runs under GNU time and its peak RSS is returned.
 */
export function timeRunAsync(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; rss?: boolean } = {},
): Promise<{ ms: number; maxRssKiB?: number }> {
  const [c, a] = opts.rss ? ['/usr/bin/time', ['-f', 'MAXRSS %M', cmd, ...args]] : [cmd, [...args]];
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'], env: opts.env ?? process.env });
    let err = '';
    child.stderr.on('data', (b: Buffer) => {
      err = (err + b.toString()).slice(-20_000);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${err.slice(-2000)}`));
      const m = /MAXRSS (\d+)/.exec(err);
      resolve({ ms, ...(m ? { maxRssKiB: Number(m[1]) } : {}) });
    });
  });
}

/**
 * How a benchmark runs narpush: as its users do, the program itself, so that
 * the node flags on its `#!` line apply (`node bin/narpush` would drop them).
 * `env` gets this node first on PATH, for `/usr/bin/env node` to find.
 */
export function narpushCommand(args: readonly string[], env: NodeJS.ProcessEnv = process.env): { cmd: string; args: string[]; env: NodeJS.ProcessEnv } {
  return { cmd: NARPUSH_BIN, args: [...args], env: { ...env, PATH: `${path.dirname(process.execPath)}:${env.PATH ?? ''}` } };
}
