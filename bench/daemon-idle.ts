/**
 * Benchmark: a daemon's memory before, right after and long after a burst.
 *
 *   npx tsc -p . && node dist/bench/daemon-idle.js [--paths-salt S] [--settle-s N] [--daemon-node-options '--trace-gc']
 *
 * Builds 1,000 tiny store paths (test/fixtures/store-bench.nix: a closure of
 * 50 derivations x 20 outputs), generates a signing key, starts a real
 * `narpush daemon` (bin/narpush, file:// cache in a temp dir), and reads its
 * VmRSS and OS threads from /proc: once it answers, then after a burst of
 * 1,000 hook requests (one path each, 10 clients at once) as soon as its
 * status shows every path uploaded, and again after the crypto threads'
 * idle delay (plus a margin). Figures only; nothing is judged.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { sendRequest } from '../src/daemon/client.js';
import { DEFAULT_THREAD_IDLE_MS } from '../src/cache/threads/thread-pool.js';
import { nix, nixBuildFile, nixEnv } from '../test/helpers/nix.js';
import { narpushCommand, procLine, startBenchDaemon, timeRun } from './lib.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Send one enqueue per path, `clients` at a time, as that many hooks would. */
async function burst(socket: string, paths: readonly string[], clients: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < paths.length) {
        const p = paths[next++]!;
        const a = await sendRequest(socket, { op: 'enqueue', paths: [p] }, { timeoutMs: 30_000 });
        if (a.ok !== true) throw new Error(`enqueue ${p}: ${JSON.stringify(a)}`);
      }
    }),
  );
}

async function main(): Promise<void> {
  const salt = arg('--paths-salt', 'narpush-idle-bench-1');
  const settleS = Number(arg('--settle-s', '5'));
  const [root] = await nixBuildFile('store-bench.nix', undefined, ['--argstr', 'salt', salt]);
  const paths = (await nix('nix-store', ['-qR', root!])).toString().trim().split('\n');
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bench-idle-'));
  try {
    const key = narpushCommand(['generate-key', 'narpush-bench-1', path.join(dir, 'secret.key'), path.join(dir, 'public.key')]);
    timeRun(key.cmd, key.args, { env: key.env });
    const nodeOptions = arg('--daemon-node-options', '');
    const env = nodeOptions ? nixEnv({ NODE_OPTIONS: nodeOptions }) : nixEnv();
    const daemon = await startBenchDaemon(dir, ['--secret-key-file', path.join(dir, 'secret.key')], env);
    try {
      console.log(`daemon idle RSS around a burst of ${paths.length} store paths (pid ${daemon.pid}, node ${process.version}, NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset'})`);
      await sleep(settleS * 1000);
      console.log(procLine(`started, ${settleS} s idle`, daemon.pid));
      const t0 = Date.now();
      await burst(daemon.socket, paths, 10);
      const acked = Date.now() - t0;
      const s = await daemon.settled(paths.length);
      const done = Date.now() - t0;
      console.log(procLine('burst uploaded', daemon.pid));
      console.log(`  ${paths.length} requests acknowledged in ${(acked / 1000).toFixed(1)} s, all uploaded after ${(done / 1000).toFixed(1)} s (uploaded ${s.uploaded}, skipped ${s.skipped})`);
      await sleep(settleS * 1000);
      console.log(procLine(`${settleS} s later`, daemon.pid));
      await sleep(DEFAULT_THREAD_IDLE_MS + settleS * 1000 - (Date.now() - t0 - done));
      console.log(procLine(`idle delay (${DEFAULT_THREAD_IDLE_MS / 1000} s) + ${settleS} s after the burst`, daemon.pid));
    } finally {
      await daemon.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
