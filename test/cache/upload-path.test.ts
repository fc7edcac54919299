// `narpush upload-path` end to end: real Nix builds a closure, narpush puts it
// into s3rver (or a file:// cache), Nix deletes the closure and substitutes
// it back with signatures required. Also faults, re-runs and bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildFile, nixEnv } from '../helpers/nix.js';
import { NARPUSH_BIN, generateKeyPair, narpush, run } from '../helpers/run.js';
import { startS3rver, S3RVER_ENV, type S3rverHandle } from '../helpers/s3rver.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { SMALL_NAR_BYTES } from '../../src/cache/plan.js';

let work: string;
let secretKey: string;
let publicKey: string;
let s3: S3rverHandle;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'narpush-upload-'));
  ({ secretKeyFile: secretKey, publicKey } = await generateKeyPair(work, 'narpush-test-1'));
  s3 = await startS3rver();
});

after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

async function buildClosure(bigBytes?: number): Promise<{ top: string; closure: string[] }> {
  const args = ['--argstr', 'salt', randomUUID()];
  if (bigBytes !== undefined) args.push('--arg', 'bigBytes', String(bigBytes));
  const [top] = await nixBuildFile('upload-closure.nix', undefined, args);
  return { top: top!, closure: await nixClosure([top!]) };
}

/** Delete the closure from the store and substitute it back from `substituter`, signatures required. */
async function roundTripThroughNix(closure: string[], top: string, substituter: string): Promise<void> {
  await nix('nix-store', ['--delete', ...closure]);
  for (const p of closure) {
    const gone = await run('test', ['-e', p]);
    assert.notEqual(gone.code, 0, `${p} was deleted`);
  }
  const r = await run(
    'nix-store',
    ['-r', top, '--option', 'substituters', substituter, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
  const v = await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() });
  assert.equal(v.code, 0, v.stderr);
}

test('s3: upload a closure, then Nix substitutes it back with signatures required', async () => {
  const { top, closure } = await buildClosure();
  const link = path.join(work, 'result');
  await symlink(top, link);
  const r = await narpush(['upload-path', '--to', s3.url, '--secret-key-file', secretKey, link], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.match(r.stderr, new RegExp(`uploaded ${closure.length} paths`));
  assert.ok(s3.requests.some((q) => /[?&]uploads/.test(q)), 'the 12 MiB NAR went up as a multipart upload');
  assert.deepEqual(await s3.pendingUploads(), []);
  await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
  const info = await (await fetch(`${s3.httpUrl}/nix-cache-info`)).text();
  assert.match(info, /^StoreDir: \/nix\/store$/m);

  // The same upload again uploads nothing, and says so.
  const again = await narpush(['upload-path', '--to', s3.url, '--json', top], { env: env() });
  assert.equal(again.code, 0, again.stderr);
  const report = JSON.parse(again.stdout.toString());
  assert.equal(report.uploaded.length, 0);
  assert.equal(report.skipped.length, closure.length);
  const human = await narpush(['upload-path', '--to', s3.url, top], { env: env() });
  assert.match(human.stderr, new RegExp(`nothing to upload, ${closure.length} already in the cache`));

  await roundTripThroughNix(closure, top, s3.httpUrl);
});

test('file://: upload with zstd, then Nix substitutes it back with signatures required', async () => {
  // 31 + 1 MiB of large NARs: enough for worker threads (plan.ts WHOLE_MIN_BYTES).
  const { top, closure } = await buildClosure(31 << 20);
  const dir = path.join(work, 'file-cache');
  const r = await narpush(['upload-path', '--to', `file://${dir}`, '--compression', 'zstd', '--secret-key-file', secretKey, top], {
    env: env(),
  });
  assert.equal(r.code, 0, r.stderr);
  const nis = await assertCacheHas(
    async (k) => readFile(path.join(dir, k)).catch(() => undefined),
    closure,
    publicKey,
  );
  assert.ok(nis.every((ni) => ni.compression === 'zstd' && ni.url.endsWith('.nar.zst')));
  assert.ok(nis.filter((ni) => ni.narSize > SMALL_NAR_BYTES).length >= 2, 'several large NARs: each went whole to a worker thread');
  const leftovers = (await readdir(path.join(dir, 'nar'))).filter((f) => !f.endsWith('.nar.zst'));
  assert.deepEqual(leftovers, [], 'no temporary files left');
  await roundTripThroughNix(closure, top, `file://${dir}`);
});

// The two large NARs (7 MiB in all) are streamed from this thread (plan.ts WHOLE_MIN_BYTES).
for (const compression of ['none', 'zstd']) {
test(`s3 through a proxy failing 30% of requests: the upload completes and the cache is consistent (${compression})`, async () => {
  const { top, closure } = await buildClosure(6 << 20);
  const proxy = await startFaultProxy({
    targetPort: s3.port,
    seed: 42,
    rates: { slowDown: 0.1, internalError: 0.1, resetBefore: 0.05, resetAfter: 0.05 },
    retryAfter: '0.05',
  });
  try {
    const url = `s3://${s3.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`;
    const r = await narpush(['upload-path', '--to', url, '--compression', compression, '--secret-key-file', secretKey, top], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    const c = proxy.counts;
    assert.ok(c.slowDown + c.internalError + c.resetBefore + c.resetAfter >= 3, `faults were injected: ${JSON.stringify(c)}`);
    await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
    // No check for pending multipart uploads here: a CreateMultipartUpload whose
    // answer the proxy cut off leaves an upload narpush never learns the id of
    // (a bucket lifecycle rule cleans those up). test/s3 checks aborts precisely.
  } finally {
    await proxy.stop();
  }
});
}

test('s3 unreachable: a clean failure and no narinfo written', async () => {
  const { top, closure } = await buildClosure(1024);
  const proxy = await startFaultProxy({ targetPort: s3.port, seed: 1 });
  await proxy.down();
  try {
    const url = `s3://${s3.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`;
    const t0 = Date.now();
    const r = await narpush(['upload-path', '--to', url, '--secret-key-file', secretKey, top], { env: env() });
    assert.notEqual(r.code, 0);
    assert.ok(Date.now() - t0 < 60_000, 'gives up in bounded time');
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.match(r.stderr, /narpush: error: .*(connect|reach|refused)/i);
    for (const p of closure) {
      const res = await fetch(`${s3.httpUrl}/${path.basename(p).slice(0, 32)}.narinfo`);
      assert.equal(res.status, 404, `no narinfo for ${p}`);
    }
  } finally {
    await proxy.stop();
  }
});

test('bad input: one line, non-zero exit, nothing uploaded', async () => {
  const [p] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', 'bad-input', '--arg', 'bigBytes', '10']);
  const dir = path.join(work, 'bad-input-cache');
  const badKey = path.join(work, 'bad.key');
  await writeFile(badKey, 'not-a-key');
  const pubAsSecret = path.join(work, 'pub-as-secret.key');
  await writeFile(pubAsSecret, publicKey);
  const to = `file://${dir}`;
  const cases: [string[], RegExp][] = [
    [['--to', to, '/etc/passwd'], /not in the Nix store/],
    [['--to', to, `${p}/../../../etc/passwd`], /not in the Nix store/],
    [['--to', to, '/nix/store/00000000000000000000000000000000-missing'], /does not exist|not valid/],
    [['--to', to, `${p}/bin`], /inside the store path/],
    [['--to', 'ftp://somewhere', p!], /unknown scheme 'ftp'/],
    [['--to', `${to}?frobnicate=1`, p!], /frobnicate/],
    [['--to', to, '--secret-key-file', path.join(work, 'nope.key'), p!], /nope\.key/],
    [['--to', to, '--secret-key-file', badKey, p!], /bad\.key/],
    [['--to', to, '--secret-key-file', pubAsSecret, p!], /public key/],
    [['--to', to, '--compression', 'gzip', p!], /unknown compression 'gzip'/],
    [['--to', to, '--compression-level', '42', p!], /out of range/],
    [['--to', to, '--jobs', '0', p!], /--jobs/],
    [[p!], /required option '--to/],
  ];
  for (const [args, re] of cases) {
    const r = await narpush(['upload-path', ...args], { env: env() });
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
    assert.match(r.stderr, re, args.join(' '));
    assert.doesNotMatch(r.stderr, /\n\s+at /, `no stack trace for ${args.join(' ')}`);
    assert.ok(r.stderr.trim().split('\n').length <= 2, `short error for ${args.join(' ')}: ${r.stderr}`);
    assert.equal(await readdir(dir).catch(() => 'absent'), 'absent', `nothing written for ${args.join(' ')}`);
  }
});

test('a cache made for another store directory is refused before anything is uploaded', async () => {
  const [p] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', 'other-store', '--arg', 'bigBytes', '10']);
  const dir = path.join(work, 'other-store-cache');
  await mkdir(dir);
  await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /gnu/store\nWantMassQuery: 1\n');
  const r = await narpush(['upload-path', '--to', `file://${dir}`, p!], { env: env() });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /is a cache for the store '\/gnu\/store', not '\/nix\/store'/);
  assert.deepEqual((await readdir(dir)).sort(), ['nix-cache-info']);
});

test('s3 credentials from a shared-credentials profile named in the URL', async () => {
  const [p] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', 'profile', '--arg', 'bigBytes', '10']);
  const creds = path.join(work, 'aws-credentials');
  await writeFile(creds, '[good]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n[bad]\naws_access_key_id = NOTAKEY\naws_secret_access_key = nope\n');
  // No key in the environment: only the profile can supply one.
  const base = nixEnv({ AWS_SHARED_CREDENTIALS_FILE: creds, AWS_CONFIG_FILE: path.join(work, 'no-aws-config') });
  delete base.AWS_ACCESS_KEY_ID;
  delete base.AWS_SECRET_ACCESS_KEY;
  const bad = await narpush(['upload-path', '--to', `${s3.url}&profile=bad`, p!], { env: base });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /access key|credentials/i);
  const seen = s3.requests.length;
  const good = await narpush(['upload-path', '--to', `${s3.url}&profile=good`, p!], { env: base });
  assert.equal(good.code, 0, good.stderr);
  assert.ok(s3.requests.slice(seen).some((q) => q.startsWith('PUT ') && q.includes(`${path.basename(p!).slice(0, 32)}.narinfo`)), 'the narinfo went up with the profile’s key');
});

test('on a terminal: a live progress line; then the summary', async () => {
  const { top } = await buildClosure(2 << 20);
  const dir = path.join(work, 'tty-cache');
  // script(1) gives narpush a pseudo-terminal, as a user's shell would.
  const cmd = [process.execPath, NARPUSH_BIN, 'upload-path', '--to', `file://${dir}`, '--compression', 'zstd', top].map((a) => `'${a}'`).join(' ');
  const r = await run('script', ['-qefc', cmd, '/dev/null'], { env: env() });
  assert.equal(r.code, 0, r.stdout.toString());
  const out = r.stdout.toString();
  assert.match(out, /\r\x1b\[K\[\d+\/4\] /, 'a status line redrawn in place');
  assert.match(out, /uploaded 4 paths \(/);
  assert.doesNotMatch(out, /^uploaded \/nix\/store/m, 'no per-path lines on a terminal');
});
