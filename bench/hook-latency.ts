/**
 * Benchmark: how long bin/narpush-hook holds up a build.
 *
 *   npx tsc -p . && node dist/bench/hook-latency.js [--runs N]
 *
 * Builds one small store path, starts a real `narpush daemon` (file://
 * cache in a temp dir, private socket and state dir), then runs the hook as
 * Nix would (a fresh process with OUT_PATHS and DRV_PATH) N times in a row
 * with the daemon up, and N times with it down (every call spools). Whole
 * processes are timed: that is what a build waits for. For reference it
 * also times the hook's code alone (in this process, without node's start)
 * and `node -e 0`, the floor of any hook written for node. When
 * NODE_EXTRA_CA_CERTS is set (it makes node read a CA bundle at start, which
 * the hook's shebang avoids) the process figures are repeated without it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { runHook } from '../src/daemon/hook.js';
import { sendRequest } from '../src/daemon/client.js';
import { nixBuildExpr, nixEnv } from '../test/helpers/nix.js';
import { REPO_ROOT } from '../test/helpers/run.js';
import { alternate, median, narpushCommand, percentile, timeRun } from './lib.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function summary(label: string, ms: readonly number[]): string {
  return `${label.padEnd(46)} median ${median(ms).toFixed(1).padStart(6)} ms   p99 ${percentile(ms, 99).toFixed(1).padStart(6)} ms   (n=${ms.length})`;
}

async function main(): Promise<void> {
  const runs = arg('--runs', 100);
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bench-hook-'));
  const socket = path.join(dir, 'd.sock');
  const stateDir = path.join(dir, 'state');
  const [out] = await nixBuildExpr(`lib.mk { name = "hook-bench"; salt = "${randomUUID()}"; script = "echo hi > $out"; }`);
  const d = narpushCommand(['daemon', '--to', `file://${dir}/cache`, '--socket', socket, '--state-dir', stateDir, '--compression', 'none'], nixEnv());
  const daemon = spawn(d.cmd, d.args, {
    env: d.env,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (let i = 0; ; i++) {
      try {
        await sendRequest(socket, { op: 'status' }, { timeoutMs: 1000 });
        break;
      } catch (e) {
        if (i > 300) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const hookEnv = (env: NodeJS.ProcessEnv, sock: string, state: string): NodeJS.ProcessEnv => ({
      ...env,
      OUT_PATHS: out!,
      DRV_PATH: '',
      NARPUSH_SOCKET: sock,
      NARPUSH_STATE_DIR: state,
    });
    const envs: [string, NodeJS.ProcessEnv][] = [['', process.env]];
    if (process.env.NODE_EXTRA_CA_CERTS) {
      const bare = { ...process.env };
      delete bare.NODE_EXTRA_CA_CERTS;
      envs.push([' (no NODE_EXTRA_CA_CERTS)', bare]);
    }
    console.log(`hook latency over ${runs} calls each (${out})`);
    for (const [suffix, env] of envs) {
      timeRun(HOOK, [], { env: hookEnv(env, socket, stateDir) }); // warm the page cache
      // The hook with the daemon up alternates with `node -e 0`, so that the
      // machine's noise hits both alike: their ratio is the figure to quote.
      const { up, floor } = alternate(runs, {
        up: () => timeRun(HOOK, [], { env: hookEnv(env, socket, stateDir) }).ms,
        floor: () => timeRun(process.execPath, ['-e', '0'], { env }).ms,
      });
      const down: number[] = [];
      const downState = path.join(dir, `spool-state${suffix ? '-bare' : ''}`);
      for (let i = 0; i < runs; i++) down.push(timeRun(HOOK, [], { env: hookEnv(env, path.join(dir, 'nobody.sock'), downState) }).ms);
      console.log(summary(`hook process, daemon up${suffix}`, up));
      console.log(summary(`node -e 0 (start-up floor)${suffix}`, floor));
      console.log(`hook / node -e 0${suffix}: ${(median(up) / median(floor)).toFixed(2)}x (medians of alternating runs)`);
      console.log(summary(`hook process, daemon down (spools)${suffix}`, down));
    }
    const inProc: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      const r = await runHook({ OUT_PATHS: out, NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
      inProc.push(performance.now() - t);
      if (r.result !== 'queued') throw new Error(`hook: ${r.result} ${r.message ?? ''}`);
    }
    console.log(summary('hook code alone (connect, fsync, ack), daemon up', inProc));
  } finally {
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
