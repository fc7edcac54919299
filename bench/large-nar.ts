/**
 * Benchmark: throughput through ONE large NAR (issue 17), side by side in
 * one run, alternating, medians:
 *   - file: a 100 MiB NAR (half random, half text; bench.nix `big100m`),
 *     zstd and --compression none, into a fresh file:// cache: narpush
 *     against `nix copy` (both sign);
 *   - xz: one real, compressible NAR of >= 50 MiB (a system directory added
 *     with `nix-store --add`, default /usr/lib/python3.11) with the default
 *     xz: narpush against `nix copy`, and the two .xz sizes;
 *   - rgw: the 100 MiB NAR with --compression none into an S3 server (Ceph
 *     RGW on loopback: pass its `env` file, see ../shared/rgw) against a
 *     plain AWS SDK lib-storage `Upload` (10 MiB parts, 4 at once) of the
 *     same bytes into the same server, each in its own process.
 * Also printed: the CPU model and whether it has SHA extensions (sha_ni),
 * which decide how cheap hashing is; user+sys CPU time of each side (GNU
 * time). Every timed run starts after a `sync`. Figures only: nothing here
 * passes or fails.
 *
 * Usage: node dist/bench/large-nar.js [runs (default 5)] [--only=file,xz,rgw]
 *          [--xz-runs=N (default 3)] [--xz-dir=/usr/lib/python3.11] [--rgw-env=$RGW_DIR/env]
 * Run with `env -u NODE_EXTRA_CA_CERTS` (it slows every node start).
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildFile, nixEnv } from '../test/helpers/nix.js';
import { FIXTURES } from '../test/helpers/run.js';
import { median, mib, narpushCommand } from './lib.js';

// The SDK's Upload (the comparison) would print its 7-line Node 20 support warning; bin/narpush silences it too.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const args = process.argv.slice(2);
const opt = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const runs = Math.max(1, Number(args.find((a) => /^\d+$/.test(a)) ?? 5));
const xzRuns = Math.max(1, Number(opt('xz-runs') ?? 3));
const only = opt('only')?.split(',');
const want = (k: string): boolean => !only || only.includes(k);
const env = nixEnv({ AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

interface Run {
  readonly ms: number;
  /** user + sys CPU seconds of the command and its children. */
  readonly cpu: number;
}

/** A command's wall time and CPU time (GNU time); throws when it fails. */
function timed(cmd: string, cmdArgs: readonly string[], runEnv: NodeJS.ProcessEnv = env): Run {
  spawnSync('sync', { stdio: 'ignore' });
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'CPU %U %S', cmd, ...cmdArgs], { env: runEnv, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 26 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const err = String(r.stderr);
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(' ')} failed (${r.status ?? r.signal}): ${err.slice(-2000)}`);
  const m = /CPU ([\d.]+) ([\d.]+)/.exec(err);
  return { ms, cpu: m ? Number(m[1]) + Number(m[2]) : NaN };
}

function cpuLine(): string {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const sha = /^flags\s*:.*\bsha_ni\b/m.test(info);
  return `CPU: ${cpus()[0]?.model ?? '?'} x${cpus().length}; sha_ni: ${sha ? 'yes' : 'no'}; node ${process.version}`;
}

/** The one compressed NAR a cache directory holds, and its size. */
function narFile(cacheDir: string): { name: string; bytes: number } {
  const name = readdirSync(path.join(cacheDir, 'nar'))[0]!;
  return { name, bytes: statSync(path.join(cacheDir, 'nar', name)).size };
}

function summary(label: string, a: string, at: Run[], b: string, bt: Run[], extra = ''): void {
  const am = median(at.map((r) => r.ms));
  const bm = median(bt.map((r) => r.ms));
  const cpu = (rs: Run[]): string => median(rs.map((r) => r.cpu)).toFixed(2);
  console.log(
    `${label.padEnd(34)} | ${a} ${am.toFixed(0).padStart(6)} ms (cpu ${cpu(at)} s) | ${b} ${bm.toFixed(0).padStart(6)} ms (cpu ${cpu(bt)} s) | ${(bm / am).toFixed(2)}x${extra}`,
  );
  console.log(`  runs (ms): ${a} ${at.map((r) => r.ms.toFixed(0)).join(' ')}; ${b} ${bt.map((r) => r.ms.toFixed(0)).join(' ')}`);
}

/** narpush and `nix copy` of `top` into fresh file:// caches, alternating; returns the last caches' NAR sizes. */
async function versusNix(label: string, top: string, compression: string, key: string, n: number): Promise<void> {
  const base = await mkdtemp(path.join(tmpdir(), 'narpush-bench-large-'));
  let i = 0;
  const nixSide = (): { run: Run; dir: string } => {
    const dir = path.join(base, `nix-${i++}`);
    return { run: timed('nix', ['copy', '--to', `file://${dir}?compression=${compression}&secret-key=${key}`, top]), dir };
  };
  const narpushSide = (): { run: Run; dir: string } => {
    const dir = path.join(base, `narpush-${i++}`);
    const c = narpushCommand(['upload-path', '--to', `file://${dir}`, '--compression', compression, '--secret-key-file', key, top], env);
    return { run: timed(c.cmd, c.args, c.env), dir };
  };
  const t: { nix: Run[]; narpush: Run[] } = { nix: [], narpush: [] };
  let sizes = '';
  for (let r = 0; r < n; r++) {
    const a = nixSide();
    const b = narpushSide();
    t.nix.push(a.run);
    t.narpush.push(b.run);
    const na = narFile(a.dir);
    const nb = narFile(b.dir);
    sizes = ` | .nar${compression === 'none' ? '' : compression === 'xz' ? '.xz' : '.zst'}: nix ${na.bytes}, narpush ${nb.bytes} (${((nb.bytes / na.bytes - 1) * 100).toFixed(2)}%)`;
    await rm(a.dir, { recursive: true, force: true });
    await rm(b.dir, { recursive: true, force: true });
  }
  summary(label, 'nix copy', t.nix, 'narpush', t.narpush, sizes);
  await rm(base, { recursive: true, force: true });
}

/** The child side of the rgw case: one plain lib-storage Upload of a file. */
async function sdkUpload(file: string, endpoint: string, bucket: string, key: string): Promise<void> {
  const { S3Client } = await import('@aws-sdk/client-s3');
  const { Upload } = await import('@aws-sdk/lib-storage');
  const client = new S3Client({ endpoint, region: process.env.S3_REGION ?? 'us-east-1', forcePathStyle: true });
  const upload = new Upload({ client, params: { Bucket: bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1 << 20 }) }, partSize: 10 << 20, queueSize: 4 });
  await upload.done();
  client.destroy();
}

async function rgw(top: string, envFile: string, n: number): Promise<void> {
  const vars = Object.fromEntries(
    readFileSync(envFile, 'utf8')
      .split('\n')
      .map((l) => /^(?:export )?(\w+)=["']?([^"']*)["']?$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
  const endpoint = vars.S3_ENDPOINT!;
  const s3Env = { ...env, AWS_ACCESS_KEY_ID: vars.S3_ACCESS_KEY!, AWS_SECRET_ACCESS_KEY: vars.S3_SECRET_KEY!, S3_REGION: vars.S3_REGION ?? 'us-east-1' };
  const bucket = `bench-large-${process.pid}`;
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const admin = new S3Client({
    endpoint, region: s3Env.S3_REGION, forcePathStyle: true,
    credentials: { accessKeyId: s3Env.AWS_ACCESS_KEY_ID, secretAccessKey: s3Env.AWS_SECRET_ACCESS_KEY },
  });
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  admin.destroy();
  // The same bytes narpush sends: the NAR itself.
  const base = await mkdtemp(path.join(tmpdir(), 'narpush-bench-rgw-'));
  const narPath = path.join(base, 'big.nar');
  await writeFile(narPath, await nix('nix-store', ['--dump', top]));
  const url = `s3://${bucket}?endpoint=${endpoint}&region=${s3Env.S3_REGION}`;
  const t: { sdk: Run[]; narpush: Run[] } = { sdk: [], narpush: [] };
  for (let r = 0; r < n; r++) {
    t.sdk.push(timed(process.execPath, [process.argv[1]!, '--sdk-upload', narPath, endpoint, bucket, `sdk/${r}.nar`], s3Env));
    const c = narpushCommand(['upload-path', '--to', url, '--force', '--compression', 'none', top], s3Env);
    t.narpush.push(timed(c.cmd, c.args, c.env));
  }
  summary('100 MiB NAR, none, to RGW', 'SDK Upload', t.sdk, 'narpush', t.narpush);
  await rm(base, { recursive: true, force: true });
}

async function main(): Promise<void> {
  console.log(cpuLine());
  console.log(`${runs} runs per side (xz: ${xzRuns}), alternating; medians of wall time including process start; cpu = user+sys`);
  const keyDir = await mkdtemp(path.join(tmpdir(), 'narpush-bench-key-'));
  const key = path.join(keyDir, 'secret.key');
  const gen = narpushCommand(['generate-key', 'bench-1', key, path.join(keyDir, 'public.key')]);
  timed(gen.cmd, gen.args, gen.env);
  // Rooted while the benchmark runs: other users of the store may collect garbage meanwhile.
  const root = async (p: string, name: string): Promise<void> => {
    await nix('nix-store', ['--add-root', path.join(keyDir, name), '--indirect', '--realise', p]);
  };
  const [big] = await nixBuildFile(path.join(FIXTURES, 'bench.nix'), 'big100m');
  await root(big!, 'big100m');
  try {
    if (want('file')) {
      const size = mib(Number((await nix('nix-store', ['-q', '--size', big!])).toString()));
      for (const c of ['zstd', 'none']) await versusNix(`${size.toFixed(0)} MiB NAR, ${c}, file://`, big!, c, key, runs);
    }
    if (want('xz')) {
      const dir = opt('xz-dir') ?? '/usr/lib/python3.11';
      const real = (await nix('nix-store', ['--add', dir])).toString().trim();
      await root(real, 'real');
      const size = mib(Number((await nix('nix-store', ['-q', '--size', real])).toString()));
      console.log(`real path: ${real} (added from ${dir})`);
      await versusNix(`real ${size.toFixed(0)} MiB NAR, xz, file://`, real, 'xz', key, xzRuns);
    }
    const rgwEnv = opt('rgw-env');
    if (want('rgw') && rgwEnv) await rgw(big!, rgwEnv, runs);
    else if (want('rgw')) console.log('rgw: skipped (give --rgw-env=$RGW_DIR/env of a running ../shared/rgw/start.sh)');
  } finally {
    await rm(keyDir, { recursive: true, force: true });
  }
}

if (args[0] === '--sdk-upload') await sdkUpload(args[1]!, args[2]!, args[3]!, args[4]!);
else await main();
