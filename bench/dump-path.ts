/**
 * Benchmark: `narpush dump-path` against `nix-store --dump`, side by side in
 * one invocation, on a store path holding one 1 GiB random file and on one
 * holding 10,000 small files in nested directories. Both are built by real
 * Nix (once; later runs reuse them). Runs alternate between the two tools so
 * that machine noise hits both alike; each writes to /dev/null.
 *
 * Usage: node dist/bench/dump-path.js [runs-per-tool (default 7)]
 * The goal is a ratio narpush/nix of at most 1.5 on both paths. A third,
 * one-byte path measures each tool's fixed cost (process start: about 40 ms
 * for Node on an idle machine), and the last column compares the times with
 * that cost taken off, which is what the NAR code itself can change.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { nix, nixBuildExpr } from '../test/helpers/nix.js';
import { narpushCommand } from './lib.js';

const BIG = `lib.mk { name = "narpush-bench-big"; salt = "bench-v1"; script = ''
  mkdir -p $out
  head -c 1073741824 /dev/urandom > $out/big.bin
''; }`;

// 10,000 files of 0..8999 bytes spread over 50 x 7 directories.
const SMALL = `lib.mk { name = "narpush-bench-small"; salt = "bench-v1"; script = ''
  mkdir -p $out
  i=0
  while [ $i -lt 10000 ]; do
    d=$out/d$((i % 50))/e$((i % 7))
    mkdir -p $d
    head -c $(( (i * 7919) % 9000 )) /dev/urandom > $d/f$i
    i=$((i + 1))
  done
''; }`;

const TINY = `lib.mk { name = "narpush-bench-tiny"; salt = "bench-v1"; script = "printf x > $out"; }`;

interface Case {
  readonly label: string;
  readonly path: string;
  readonly narSize: number;
}

function timeRun(cmd: string, args: string[], devNull: number, env: NodeJS.ProcessEnv = process.env): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', devNull, 'pipe'], env });
  const t1 = process.hrtime.bigint();
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${String(r.stderr)}`);
  return Number(t1 - t0) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function narSize(path: string): Promise<number> {
  const out = JSON.parse((await nix('nix', ['path-info', '--json', path])).toString('utf8')) as { narSize: number }[];
  return out[0]!.narSize;
}

async function main(): Promise<void> {
  const runs = Math.max(1, Number(process.argv[2] ?? 7));
  process.stderr.write('building the benchmark paths with Nix (the first time takes a minute)...\n');
  const [big] = await nixBuildExpr(BIG);
  const [small] = await nixBuildExpr(SMALL);
  const [tiny] = await nixBuildExpr(TINY);
  const cases: Case[] = [
    { label: 'start-up (1 byte)', path: tiny!, narSize: await narSize(tiny!) },
    { label: '1 GiB file', path: big!, narSize: await narSize(big!) },
    { label: '10,000 small files', path: small!, narSize: await narSize(small!) },
  ];
  const devNull = openSync('/dev/null', 'w');
  console.log(`node ${process.version}; ${runs} runs each, alternating; median wall time including process start`);
  console.log('case                 | NAR size  | nix-store --dump     | narpush dump-path    | ratio | ratio without start-up');
  let fixed: { nix: number; narpush: number } | undefined;
  for (const c of cases) {
    const tools = {
      nix: (): number => timeRun('nix-store', ['--dump', c.path], devNull),
      narpush: (): number => {
        const n = narpushCommand(['dump-path', c.path]);
        return timeRun(n.cmd, n.args, devNull, n.env);
      },
    };
    // Warm the page cache and both programs once, untimed.
    tools.nix();
    tools.narpush();
    const times = { nix: [] as number[], narpush: [] as number[] };
    for (let i = 0; i < runs; i++) {
      times.nix.push(tools.nix());
      times.narpush.push(tools.narpush());
    }
    const mib = c.narSize / (1 << 20);
    const fmt = (ms: number): string => `${ms.toFixed(0).padStart(6)} ms ${(mib / (ms / 1000)).toFixed(0).padStart(6)} MiB/s`;
    const n = median(times.nix);
    const p = median(times.narpush);
    const adjusted = fixed ? `${((p - fixed.narpush) / Math.max(1, n - fixed.nix)).toFixed(2)}x` : '-';
    fixed ??= { nix: n, narpush: p };
    console.log(
      `${c.label.padEnd(20)} | ${mib.toFixed(0).padStart(5)} MiB | ${fmt(n)} | ${fmt(p)} | ${(p / n).toFixed(2)}x | ${adjusted}`,
    );
    console.log(`  all runs (ms): nix ${times.nix.map((t) => t.toFixed(0)).join(' ')}; narpush ${times.narpush.map((t) => t.toFixed(0)).join(' ')}`);
  }
  closeSync(devNull);
}

await main();
