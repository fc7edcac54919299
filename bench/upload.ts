/**
 * Benchmark: `narpush upload-path` against `nix copy`, side by side in one
 * run, alternating, each into a fresh file:// cache (both sign):
 *   - jobs the size a post-build hook or a CI step usually has, where the
 *     fixed cost before the first byte counts: one tiny path (zstd), a
 *     24 MiB closure of 7 paths (zstd and xz), 201 small paths (zstd);
 *   - a ~104 MiB mixed closure (half random, half text) with xz and zstd;
 *   - a closure of >= 1,000 small paths with zstd (startup included);
 * then narpush alone against s3rver on loopback:
 *   - throughput on the mixed closure (MiB/s of NAR);
 *   - peak RSS on a 1 GiB NAR (xz and zstd) and a 10 GiB NAR (--compression none).
 * Figures are medians of the runs; ratios are narpush/nix. Every timed run
 * starts after a `sync`, so that no run pays for the previous one's writeback.
 *
 * Usage: node dist/bench/upload.js [runs (default 3)] [--skip-10g] [--10g-runs=N (default: runs)] [--only=tiny,closure24,small201,mixed,small,s3,rss]
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildFile, nixEnv } from '../test/helpers/nix.js';
import { FIXTURES } from '../test/helpers/run.js';
import { startS3rver, S3RVER_ENV } from '../test/helpers/s3rver.js';
import { alternate, median, mib, narpushCommand, timeRun, timeRunAsync } from './lib.js';

const args = process.argv.slice(2);
const runs = Math.max(1, Number(args.find((a) => /^\d+$/.test(a)) ?? 3));
const only = args.find((a) => a.startsWith('--only='))?.slice(7).split(',');
const want = (k: string): boolean => !only || only.includes(k);
// Runs of the 10 GiB case (minutes each): --10g-runs=N, default the same as every case.
const tenGiBRuns = Math.max(1, Number(args.find((a) => a.startsWith('--10g-runs='))?.slice(11) ?? runs));

const env = nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

async function closureNarSize(top: string): Promise<{ paths: number; bytes: number }> {
  const infos = JSON.parse((await nix('nix', ['path-info', '--json', '--recursive', top])).toString()) as { narSize: number }[];
  return { paths: infos.length, bytes: infos.reduce((n, i) => n + i.narSize, 0) };
}

/** Which lzma-native binary loads: the -O2 rebuild from `npm ci` (scripts/build-lzma.mjs) or the unoptimized prebuilt one. */
function liblzmaBuild(): string {
  const dir = path.dirname(createRequire(import.meta.url).resolve('lzma-native/package.json'));
  return existsSync(path.join(dir, 'build', 'narpush-O2'))
    ? 'lzma-native rebuilt with -O2 (scripts/build-lzma.mjs)'
    : "lzma-native's prebuilt binary (unoptimized: xz figures will be 2-3x slower)";
}

function syncFileSystems(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

async function freshDir(label: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `narpush-bench-${label.replace(/[^a-z0-9]+/gi, "-")}-`));
}

async function compare(label: string, top: string, compression: 'xz' | 'zstd', key: string): Promise<void> {
  const size = await closureNarSize(top);
  const dirs: string[] = [];
  const dir = async (): Promise<string> => {
    const d = await freshDir(label);
    dirs.push(d);
    return d;
  };
  // Directories are made up front so that making them is not timed.
  const pool = await Promise.all(Array.from({ length: 2 * runs + 2 }, () => dir()));
  let next = 0;
  const sides = {
    nix: () => timeRun('nix', ['copy', '--to', `file://${pool[next++]}?compression=${compression}&secret-key=${key}`, top], { env }).ms,
    narpush: () => {
      const c = narpushCommand(['upload-path', '--to', `file://${pool[next++]}`, '--compression', compression, '--secret-key-file', key, top], env);
      return timeRun(c.cmd, c.args, { env: c.env }).ms;
    },
  };
  sides.nix();
  sides.narpush(); // warm-up, untimed
  // Each run starts with the file system quiet: nix copy never syncs, so
  // without this its dirty pages are written back during the next run, and
  // narpush's fsyncs (journal commits) would wait for them.
  const t = alternate(runs, sides, syncFileSystems);
  const n = median(t.nix);
  const p = median(t.narpush);
  const m = mib(size.bytes);
  console.log(
    `${label.padEnd(26)} | ${String(size.paths).padStart(5)} | ${m.toFixed(m < 10 ? 1 : 0).padStart(5)} MiB | ${n.toFixed(0).padStart(7)} ms | ${p.toFixed(0).padStart(7)} ms | ${(p / n).toFixed(2)}x`,
  );
  console.log(`  runs (ms): nix ${t.nix.map((x) => x.toFixed(0)).join(' ')}; narpush ${t.narpush.map((x) => x.toFixed(0)).join(' ')}`);
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
}

async function main(): Promise<void> {
  const keyDir = await freshDir('key');
  const key = path.join(keyDir, 'secret.key');
  const gen = narpushCommand(['generate-key', 'bench-1', key, path.join(keyDir, 'public.key')]);
  timeRun(gen.cmd, gen.args, { env: gen.env });
  const bench = path.join(FIXTURES, 'bench.nix');
  process.stderr.write('building the benchmark closures with Nix (once per machine)...\n');
  const [mixed] = await nixBuildFile(bench, 'mixed');
  const [small] = await nixBuildFile(path.join(FIXTURES, 'store-bench.nix'));
  const [tiny] = await nixBuildFile(bench, 'tiny');
  const [closure24] = await nixBuildFile(bench, 'closure24');
  const [small201] = await nixBuildFile(bench, 'small201');

  console.log(`node ${process.version}; ${runs} runs per side, alternating; medians of wall time including process start`);
  console.log(`liblzma: ${liblzmaBuild()}`);
  if (['tiny', 'closure24', 'small201', 'mixed', 'small'].some(want)) {
    console.log('case                       | paths |   NAR     | nix copy   | narpush    | ratio');
    if (want('tiny')) await compare('one tiny path, zstd', tiny!, 'zstd', key);
    if (want('closure24')) {
      await compare('24 MiB closure, zstd', closure24!, 'zstd', key);
      await compare('24 MiB closure, xz', closure24!, 'xz', key);
    }
    if (want('small201')) await compare('201 small paths, zstd', small201!, 'zstd', key);
    if (want('mixed')) {
      await compare('mixed closure, xz', mixed!, 'xz', key);
      await compare('mixed closure, zstd', mixed!, 'zstd', key);
    }
    if (want('small')) await compare('1,000+ small paths, zstd', small!, 'zstd', key);
  }

  if (want('s3') || want('rss')) {
    const s3 = await startS3rver();
    try {
      if (want('s3')) {
        const size = await closureNarSize(mixed!);
        for (const compression of ['zstd', 'none', 'xz']) {
          const times: number[] = [];
          for (let i = 0; i < runs; i++) {
            const url = `s3://${s3.bucket}?endpoint=${s3.endpoint}&region=us-east-1`;
            // --force: every run uploads everything.
            const c = narpushCommand(['upload-path', '--to', url, '--force', '--compression', compression, '--secret-key-file', key, mixed!], env);
            times.push((await timeRunAsync(c.cmd, c.args, { env: c.env })).ms);
          }
          const ms = median(times);
          console.log(`s3rver upload, mixed closure, ${compression}: ${ms.toFixed(0)} ms, ${(mib(size.bytes) / (ms / 1000)).toFixed(1)} MiB/s of NAR`);
        }
      }
      if (want('rss')) {
        // The 1 GiB NAR is random bytes: xz (the default) stores them, zstd compresses at full speed.
        const cases: [string, string, string][] = [
          ['big1g', 'xz', '1 GiB NAR, xz (default)'],
          ['big1g', 'zstd', '1 GiB NAR, zstd'],
        ];
        if (!args.includes('--skip-10g')) cases.push(['big10g', 'none', '10 GiB NAR, none']);
        for (const [attr, compression, label] of cases) {
          const [p] = await nixBuildFile(bench, attr);
          const size = await closureNarSize(p!);
          const url = `s3://${s3.bucket}?endpoint=${s3.endpoint}&region=us-east-1`;
          const rss: number[] = [];
          const ms: number[] = [];
          // The 10 GiB case takes minutes a run: --10g-runs may ask for fewer.
          const n = attr === 'big10g' ? tenGiBRuns : runs;
          for (let i = 0; i < n; i++) {
            const c = narpushCommand(['upload-path', '--to', url, '--force', '--compression', compression, p!], env);
            const r = await timeRunAsync(c.cmd, c.args, { env: c.env, rss: true });
            rss.push((r.maxRssKiB ?? 0) / 1024);
            ms.push(r.ms);
            // Free s3rver's disk before the next run.
            await rm(path.join(s3.dir, s3.bucket, 'nar'), { recursive: true, force: true });
          }
          const t = median(ms);
          console.log(
            `peak RSS, ${label} to s3rver: median ${median(rss).toFixed(0)} MiB, max ${Math.max(...rss).toFixed(0)} MiB over ${n} runs ` +
              `(${(mib(size.bytes) / (t / 1000)).toFixed(0)} MiB/s, ${(t / 1000).toFixed(1)} s)`,
          );
        }
      }
    } finally {
      await s3.stop();
    }
  }
  await rm(keyDir, { recursive: true, force: true });
}

await main();
