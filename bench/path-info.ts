/**
 * Benchmark: path info for a closure of >= 1,000 store paths, narpush against
 * Nix on the same store, in one run.
 *
 *   npx tsc -p . && node dist/bench/path-info.js [--runs N] [--drvs N]
 *
 * Builds test/fixtures/store-bench.nix once (20 paths per build; the default
 * 50 builds give 1,000 paths; `--max-jobs 2`; later runs reuse them), starts a private nix-daemon, then
 * alternates `narpush path-info --recursive --json` and `nix path-info
 * --recursive --json` through that daemon (and, for reference, `nix` opening
 * the store directly, which only root can do). Whole processes are timed:
 * that is what a user waits for. It then times the library alone, to show
 * pipelining against sequential requests and a pool of connections.
 */
import { performance } from 'node:perf_hooks';
import { StoreClient } from '../src/store/client.js';
import { closure, fetchClosure } from '../src/store/closure.js';
import type { PathInfo } from '../src/store/path-info.js';
import { type StorePath, parseStorePath } from '../src/store/store-path.js';
import { nixBuildFile, nixEnv } from '../test/helpers/nix.js';
import { startNixDaemon } from '../test/helpers/nix-daemon.js';
import { narpush, run } from '../test/helpers/run.js';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function timed(f: () => Promise<void>): Promise<number> {
  const t = performance.now();
  await f();
  return performance.now() - t;
}

/** The closure with one request at a time: what a client without pipelining does. */
async function sequentialClosure(client: StoreClient, root: StorePath): Promise<PathInfo[]> {
  const seen = new Set<string>([root.baseName]);
  const todo = [root];
  const out: PathInfo[] = [];
  while (todo.length > 0) {
    const info = (await client.queryPathInfo(todo.pop()!))!;
    out.push(info);
    for (const r of info.references) {
      if (!seen.has(r.baseName)) {
        seen.add(r.baseName);
        todo.push(r);
      }
    }
  }
  return out;
}

async function main(): Promise<void> {
  const arg = (name: string, fallback: number): number => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const runs = arg('--runs', 7);
  const drvs = arg('--drvs', 50); // 20 paths each

  const t0 = performance.now();
  const [root] = await nixBuildFile('store-bench.nix', undefined, ['--max-jobs', '2', '--arg', 'drvs', String(drvs)]);
  console.log(`built (or found) the closure of ${root} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const daemon = await startNixDaemon();
  try {
    const viaDaemon = daemon.env;
    const direct = nixEnv();
    delete direct.NIX_REMOTE;
    const args = ['path-info', '--recursive', '--json', root!];

    const reference = await run('nix', args, { env: viaDaemon });
    const ours = await narpush(args, { env: viaDaemon });
    const count = (JSON.parse(reference.stdout.toString()) as unknown[]).length;
    if (!ours.stdout.equals(reference.stdout)) throw new Error('narpush and nix disagree on the output');
    console.log(`closure: ${count} paths; narpush's JSON equals nix's (${reference.stdout.length} bytes)\n`);
    if (count < 1000) console.log('warning: the closure is smaller than 1,000 paths');

    const cases: [string, () => Promise<unknown>][] = [
      ['narpush path-info -r --json (daemon)', () => narpush(args, { env: viaDaemon })],
      ['nix path-info -r --json (daemon)', () => run('nix', args, { env: viaDaemon })],
      ['nix path-info -r --json (local store, root)', () => run('nix', args, { env: direct })],
      ['narpush path-info -r --json (nix-daemon --stdio)', () => narpush(args, { env: nixEnv({ NIX_REMOTE: 'local' }) })],
      ['node -e 0 (Node.js startup alone)', () => run(process.execPath, ['-e', '0'])],
    ];
    const times = new Map<string, number[]>(cases.map(([name]) => [name, []]));
    for (const [, f] of cases) await f(); // warm up caches
    for (let i = 0; i < runs; i++) {
      for (const [name, f] of cases) times.get(name)!.push(await timed(async () => void (await f())));
    }

    const rootPath = parseStorePath(root!);
    const socket = { kind: 'socket' as const, path: daemon.socketPath };
    const lib: [string, () => Promise<unknown>][] = [
      ['library: open + closure, 1 connection, pipelined', async () => {
        const c = await StoreClient.open({ transport: socket });
        await closure(c, [rootPath]);
        await c.close();
      }],
      ['library: open + closure, 1 connection, one request at a time', async () => {
        const c = await StoreClient.open({ transport: socket });
        await sequentialClosure(c, rootPath);
        await c.close();
      }],
      ...[2, 4].map((n): [string, () => Promise<unknown>] => [`library: open + closure, pool of ${n}, pipelined`, async () => {
        const c = await StoreClient.open({ transport: socket, connections: n });
        await fetchClosure(c, [rootPath]);
        await c.close();
      }]),
    ];
    for (const [name, f] of lib) {
      times.set(name, []);
      await f();
    }
    for (let i = 0; i < runs; i++) {
      for (const [name, f] of lib) times.get(name)!.push(await timed(async () => void (await f())));
    }

    const width = Math.max(...[...times.keys()].map((k) => k.length));
    console.log(`medians of ${runs} runs each (alternating), ms:`);
    for (const [name, ts] of times) {
      console.log(`  ${name.padEnd(width)}  ${median(ts).toFixed(1).padStart(8)}   [${ts.map((t) => t.toFixed(0)).join(' ')}]`);
    }
    const ratio = median(times.get(cases[0]![0])!) / median(times.get(cases[1]![0])!);
    const ratioLocal = median(times.get(cases[0]![0])!) / median(times.get(cases[2]![0])!);
    console.log(`\nnarpush / nix, both through the daemon: ${ratio.toFixed(2)}  (< 1 means narpush is faster)`);
    console.log(`narpush (daemon) / nix (local store): ${ratioLocal.toFixed(2)}`);
  } finally {
    await daemon.stop();
  }
}

await main();
