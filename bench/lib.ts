/**
 * Shared pieces of the benchmarks: timing a command, medians and
 * percentiles, a command's peak memory, a running daemon's memory and
 * descriptors. Benchmarks print figures; they
 * never pass or fail on them (machines are noisy: tests must not time).
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { sendRequest } from '../src/daemon/client.js';
import type { DaemonStatus } from '../src/daemon/daemon.js';
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

/**
 * A process's resident memory from /proc (Linux), in KiB: all of it (VmRSS)
 * and its anonymous part (RssAnon: heaps, not the mapped node binary and
 * libraries); and its OS threads.
 */
export function procMemory(pid: number): { rssKiB: number; anonKiB: number; threads: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rssKiB: field('VmRSS'), anonKiB: field('RssAnon'), threads: field('Threads') };
}

/** procMemory and openFds as one line of a table. */
export function procLine(label: string, pid: number): string {
  const m = procMemory(pid);
  const mibs = (kib: number): string => (kib / 1024).toFixed(1).padStart(6);
  return `${label.padEnd(44)} RSS ${mibs(m.rssKiB)} MiB (anon ${mibs(m.anonKiB)})   threads ${String(m.threads).padStart(3)}   fds ${String(openFds(pid)).padStart(4)}`;
}

/** How many file descriptors a process has open (Linux). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export interface BenchDaemon {
  readonly pid: number;
  readonly socket: string;
  status(): Promise<DaemonStatus>;
  /** Until nothing is queued or in flight and at least `uploaded` closure paths were uploaded or skipped. */
  settled(uploaded: number, timeoutMs?: number): Promise<DaemonStatus>;
  stop(): Promise<void>;
}

/**
 * A real `narpush daemon` as users start it (the program, shebang flags
 * included), on a file:// cache; `args` are added to its command line.
 * Its log goes to this process's stderr.
 */
export async function startBenchDaemon(dir: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<BenchDaemon> {
  const socket = path.join(dir, 'd.sock');
  const d = narpushCommand(['daemon', '--to', `file://${dir}/cache`, '--socket', socket, '--state-dir', path.join(dir, 'state'), ...args], env);
  // Its stdout (nothing, unless node options such as --trace-gc print there) joins its log on stderr.
  const child = spawn(d.cmd, d.args, { env: d.env, stdio: ['ignore', 2, 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  const status = async (): Promise<DaemonStatus> => {
    const a = await sendRequest(socket, { op: 'status' }, { timeoutMs: 15_000 });
    if (a.ok !== true) throw new Error(`status: ${JSON.stringify(a)}`);
    return a.status as DaemonStatus;
  };
  for (let i = 0; ; i++) {
    try {
      await status();
      break;
    } catch (e) {
      if (i > 600 || child.exitCode !== null) {
        child.kill('SIGKILL');
        throw e;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    pid: child.pid!,
    socket,
    status,
    async settled(uploaded, timeoutMs = 600_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await status();
        if (s.queued === 0 && s.inFlight.length === 0 && s.uploaded + s.skipped >= uploaded) return s;
        if (Date.now() > deadline) throw new Error(`daemon not settled after ${timeoutMs} ms: ${JSON.stringify(s)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
