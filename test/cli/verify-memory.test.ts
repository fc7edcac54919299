// `narpush verify` streams (and can be interrupted while it does): a cache holding a NAR larger than the memory bound
// is verified with a small peak RSS (measured by /usr/bin/time), on file://
// (zstd and none) and s3rver. The bound is generous on purpose: it only has
// to tell streaming (~100 MiB, mostly Node itself) from holding the NAR.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { NARPUSH_BIN, narpush, run } from '../helpers/run.js';
import { startS3rver, S3RVER_ENV, type S3rverHandle } from '../helpers/s3rver.js';

const NAR_BYTES = 400_000_000;
const RSS_BOUND_KIB = 200 * 1024;

let work: string;
let big: string;
let s3: S3rverHandle;
const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV });

before(async () => {
  // A fixed salt: every run reuses the one 400 MB path instead of adding another to the store.
  work = await mkdtemp(path.join(tmpdir(), 'narpush-verify-mem-'));
  const expr = `lib.mk { name = "np-verify-big"; salt = "verify-memory-1"; script = "mkdir $out; head -c ${NAR_BYTES} /dev/urandom > $out/blob"; }`;
  big = (await nixBuildExpr(expr))[0]!;
  s3 = await startS3rver();
});

after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

async function peakRss(url: string): Promise<number> {
  const r = await run('/usr/bin/time', ['-f', 'peak-rss-kib %M', process.execPath, NARPUSH_BIN, 'verify', '--store', url, '--jobs', '1'], { env: env() });
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout.toString(), /checked 1 path \(381\.5 MiB of NARs, .*\): no defects/);
  return Number(/peak-rss-kib (\d+)/.exec(r.stderr)![1]);
}

for (const [where, compression] of [['file', 'zstd'], ['file', 'none'], ['s3', 'zstd']] as const) {
  test(`verify of a ${NAR_BYTES / 1e6} MB NAR (${where}, ${compression}) peaks under ${RSS_BOUND_KIB / 1024} MiB of RSS`, async (t) => {
    const url = where === 'file' ? `file://${path.join(work, compression)}` : s3.url;
    const up = await narpush(['upload-path', '--to', url, '--compression', compression, '--no-closure', big], { env: env() });
    assert.equal(up.code, 0, up.stderr);
    const rss = await peakRss(url);
    t.diagnostic(`peak RSS ${rss} KiB`);
    assert.ok(rss < RSS_BOUND_KIB, `peak RSS ${rss} KiB`);
  });
}

test('SIGINT while a NAR streams: exit 130 with one line, and no summary', async () => {
  const url = `file://${path.join(work, 'none')}`;
  const child = spawn(process.execPath, [NARPUSH_BIN, 'verify', '--store', url], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  // Wait until it has the NAR open (a state, not a time), then interrupt it.
  const narOpen = async (): Promise<boolean> => {
    const fds = await readdir(`/proc/${child.pid}/fd`).catch(() => [] as string[]);
    const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${child.pid}/fd/${fd}`).catch(() => '')));
    return targets.some((t) => t.includes('/nar/'));
  };
  while (!(await narOpen())) {
    assert.equal(child.exitCode, null, `verify ended before the NAR was opened: ${stdout}${stderr}`);
    await setImmediate();
  }
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.equal(stderr, 'narpush: interrupted\n');
  assert.equal(stdout, '');
});
