// narpush against Ceph's RADOS Gateway, a production S3 server (the other
// integration tests use s3rver): upload-path with xz, zstd and none (one NAR
// multipart), Nix substituting every closure back over anonymous HTTP with
// signatures required; the daemon fed by bin/narpush-hook from real builds;
// faults through the proxy; the `checksum=` URL parameter. radosgw answers
// CompleteMultipartUpload with an empty ETag and refuses streamed bodies sent
// with the SDK's default checksums: narpush must not depend on either.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { nix, nixBuildFile, nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { startRgw, type RgwHandle } from '../helpers/rgw.js';
import { killLeftoverDaemons, startDaemonProcess } from '../daemon/daemon-process.js';
import { tempDir } from '../daemon/fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let work: { dir: string; remove(): Promise<void> };
let secretKey: string;
let publicKey: string;
let rgw: RgwHandle;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...rgw.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

before(async () => {
  await requireNix();
  work = await tempDir('narpush-rgw-');
  secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  const r = await narpush(['generate-key', 'narpush-rgw-test-1', secretKey, pub]);
  assert.equal(r.code, 0, r.stderr);
  publicKey = (await readFile(pub, 'utf8')).trim();
  rgw = await startRgw();
});

after(async () => {
  await killLeftoverDaemons();
  await rgw?.stop();
  await work?.remove();
});

async function buildClosure(bigBytes?: number): Promise<{ top: string; closure: string[] }> {
  const args = ['--argstr', 'salt', randomUUID()];
  if (bigBytes !== undefined) args.push('--arg', 'bigBytes', String(bigBytes));
  const [top] = await nixBuildFile('upload-closure.nix', undefined, args);
  return { top: top!, closure: await nixClosure([top!]) };
}

/** Delete the closure from the store and let Nix substitute it back from radosgw over anonymous HTTP, signatures required. */
async function substituteBack(closure: string[], top: string): Promise<void> {
  await nix('nix-store', ['--delete', ...closure]);
  const r = await run(
    'nix-store',
    ['-r', top, '--option', 'substituters', rgw.httpUrl, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
  const v = await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() });
  assert.equal(v.code, 0, v.stderr);
}

async function narinfoOf(storePath: string): Promise<ReturnType<typeof parseNarInfo>> {
  const res = await fetch(`${rgw.httpUrl}/${path.basename(storePath).slice(0, 32)}.narinfo`);
  assert.equal(res.status, 200, `${storePath} has a narinfo`);
  return parseNarInfo(await res.text());
}

for (const compression of ['xz', 'zstd', 'none'] as const) {
  test(`upload-path (${compression}) into radosgw, then Nix substitutes the closure back`, async () => {
    const { top, closure } = await buildClosure();
    const r = await narpush(['upload-path', '--to', rgw.url, '--compression', compression, '--secret-key-file', secretKey, top], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`uploaded ${closure.length} paths`));
    const infos = await assertCacheHas(httpFetcher(rgw.httpUrl), closure, publicKey);
    assert.ok(infos.every((ni) => ni.compression === compression));
    // The 12 MiB random NAR is over the 8 MiB part size whatever the compression: a multipart object, whose ETag has a part count.
    const big = infos.reduce((a, b) => ((a.fileSize ?? 0) > (b.fileSize ?? 0) ? a : b));
    assert.ok((big.fileSize ?? 0) > 8 << 20, `the largest object is ${big.fileSize} bytes`);
    const head = await rgw.client.send(new HeadObjectCommand({ Bucket: rgw.bucket, Key: big.url }));
    assert.match(head.ETag ?? '', /-\d+"?$/, `${big.url} went up in parts (ETag ${head.ETag})`);
    await substituteBack(closure, top);
  });
}

for (const checksum of ['when-required', 'when-supported'] as const) {
  test(`checksum=${checksum}: radosgw takes every request, with CRC32 checksums only when asked`, async () => {
    const { top, closure } = await buildClosure(9 << 20);
    // A proxy that forwards everything, to see the requests' headers.
    const proxy = await startFaultProxy({ targetPort: rgw.port, seed: 1 });
    try {
      const url = `s3://${rgw.bucket}?endpoint=${proxy.endpoint}&region=us-east-1&checksum=${checksum}`;
      const r = await narpush(['upload-path', '--to', url, '--compression', 'none', '--secret-key-file', secretKey, top], { env: env() });
      assert.equal(r.code, 0, r.stderr);
      const writes = proxy.requests.filter((q) => q.line.startsWith('PUT '));
      assert.ok(writes.some((q) => /partNumber=/.test(q.line)), 'a part was uploaded');
      const withCrc = writes.filter((q) => q.headers['x-amz-checksum-crc32'] !== undefined || q.headers['x-amz-sdk-checksum-algorithm'] !== undefined);
      if (checksum === 'when-supported') assert.equal(withCrc.length, writes.length, 'every PUT carries a checksum');
      else assert.deepEqual(withCrc.map((q) => q.line), [], 'no PUT carries a checksum');
    } finally {
      await proxy.stop();
    }
    await assertCacheHas(httpFetcher(rgw.httpUrl), closure, publicKey);
  });
}

test('the daemon, fed by bin/narpush-hook from real builds, uploads into radosgw; Nix substitutes the results back', async () => {
  const socket = path.join(work.dir, 'd.sock');
  const stateDir = path.join(work.dir, 'state');
  const daemon = await startDaemonProcess({
    to: rgw.url,
    socket,
    stateDir,
    env: env(),
    args: ['--secret-key-file', secretKey, '--compression', 'zstd'],
  });
  try {
    // Nix runs the hook after each build and waits for it: once nix-build
    // returns, every path was acknowledged (journaled) by the daemon.
    const built = await run(
      'nix-build',
      [path.join(FIXTURES, 'upload-closure.nix'), '--no-out-link', '--argstr', 'salt', randomUUID(), '--arg', 'bigBytes', String(6 << 20),
        '--option', 'post-build-hook', HOOK],
      { env: nixEnv({ NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir }) },
    );
    assert.equal(built.code, 0, built.stderr);
    assert.doesNotMatch(built.stderr, /narpush-hook:/, 'the hook said nothing: the daemon took every path');
    const top = built.stdout.toString().trim();
    const closure = await nixClosure([top]);
    const s = await daemon.idle(120_000);
    assert.equal(s.failures, 0, daemon.log());
    await assertCacheHas(httpFetcher(rgw.httpUrl), closure, publicKey);
    const ni = await narinfoOf(top);
    assert.equal(ni.compression, 'zstd');
    const stopped = await daemon.stop();
    assert.equal(stopped.code, 0, daemon.log());
    await substituteBack(closure, top);
  } finally {
    if (daemon.child.exitCode === null) await daemon.stop('SIGKILL');
  }
});

for (const compression of ['none', 'zstd']) {
  test(`radosgw through a proxy failing 30% of requests: the upload completes and the cache is consistent (${compression})`, async () => {
    const { top, closure } = await buildClosure(6 << 20);
    const proxy = await startFaultProxy({
      targetPort: rgw.port,
      seed: 7,
      rates: { slowDown: 0.1, internalError: 0.1, resetBefore: 0.05, resetAfter: 0.05 },
      retryAfter: '0.05',
    });
    try {
      const url = `s3://${rgw.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`;
      const r = await narpush(['upload-path', '--to', url, '--compression', compression, '--secret-key-file', secretKey, top], { env: env() });
      assert.equal(r.code, 0, r.stderr);
      const c = proxy.counts;
      assert.ok(c.slowDown + c.internalError + c.resetBefore + c.resetAfter >= 3, `faults were injected: ${JSON.stringify(c)}`);
      await assertCacheHas(httpFetcher(rgw.httpUrl), closure, publicKey);
    } finally {
      await proxy.stop();
    }
  });
}

