// The S3 backend against a real S3 implementation (s3rver on loopback): what
// it stores is read back over plain HTTP and from s3rver's own state.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCacheUrl, type S3CacheConfig } from '../../src/cli/cache-url.js';
import type { CacheBackend } from '../../src/cache/backend.js';
import { openCacheBackend } from '../../src/cli/open-backend.js';
import { openS3Backend, type S3BackendOptions } from '../../src/s3/s3-backend.js';
import { startS3rver, S3RVER_CREDENTIALS, type S3rverHandle } from '../helpers/s3rver.js';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { runOk } from '../helpers/run.js';
import { chunked as chunkedBody, stallingBody } from '../helpers/bodies.js';
import { publishByHand } from '../helpers/cache-check.js';

const MiB = 1024 * 1024;
const FAST: S3BackendOptions = {
  credentials: S3RVER_CREDENTIALS,
  retry: { maxAttempts: 3, baseDelayMs: 5, throttleBaseDelayMs: 5, maxDelayMs: 50 },
};

let s3: S3rverHandle;
let backend: CacheBackend;

before(async () => {
  s3 = await startS3rver();
  backend = await openS3Backend(parseCacheUrl(s3.url) as S3CacheConfig, FAST);
});
after(async () => {
  await backend?.close();
  await s3?.stop();
});

async function httpGet(key: string): Promise<{ status: number; body: Buffer; type: string | null }> {
  const r = await fetch(`${s3.httpUrl}/${key}`);
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()), type: r.headers.get('content-type') };
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


/** `data` in chunks of random sizes, as a compressor would produce them. */
const chunked = (data: Buffer, maxChunk = 256 * 1024): AsyncGenerator<Uint8Array> => chunkedBody(data, maxChunk);

const count = (re: RegExp): number => s3.requests.filter((r) => re.test(r)).length;


test('small objects: put, get, exists, and anonymous HTTP GET with the content type', async () => {
  const body = Buffer.from('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n');
  await backend.putBytes('nix-cache-info', body, 'text/x-nix-cache-info');
  assert.deepEqual(await backend.get('nix-cache-info'), body);
  assert.equal(await backend.exists('nix-cache-info'), true);
  assert.equal(await backend.exists('missing.narinfo'), false);
  assert.equal(await backend.get('missing.narinfo'), undefined);
  // What Nix's http:// substituter does: an unsigned GET of the bucket URL.
  const r = await httpGet('nix-cache-info');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, body);
  assert.equal(r.type, 'text/x-nix-cache-info');
  assert.equal((await httpGet('missing.narinfo')).status, 404);
  assert.match(backend.description, /^s3:\/\/narpush-test \(at http:\/\/127\.0\.0\.1:\d+\)$/);
});

test('putStream of a small body is one PUT', async () => {
  const data = randomBytes(300 * 1024);
  const before = s3.requests.length;
  const r = await backend.putStream('nar/small.nar', chunked(data, 4096), 'application/x-nix-nar', { sizeHint: data.length });
  assert.equal(r.bytes, data.length);
  const mine = s3.requests.slice(before);
  assert.deepEqual(mine.map((l) => l.split(' ')[0]), ['PUT']);
  const got = await httpGet('nar/small.nar');
  assert.equal(sha(got.body), sha(data));
  assert.equal(got.type, 'application/x-nix-nar');
  // An empty body is an (empty) object too.
  await backend.putStream('nar/empty.nar', chunked(Buffer.alloc(0)), 'application/x-nix-nar');
  assert.equal((await httpGet('nar/empty.nar')).body.length, 0);
});

test('a ~20 MiB stream goes up in parallel parts and reads back identical', async () => {
  const data = randomBytes(20 * MiB + 12345);
  const before = count(/uploadId=.*partNumber=|partNumber=.*uploadId=/);
  const r = await backend.putStream('nar/big.nar.xz', chunked(data), 'application/x-nix-nar', { sizeHint: data.length });
  assert.equal(r.bytes, data.length);
  const parts = count(/uploadId=.*partNumber=|partNumber=.*uploadId=/) - before;
  assert.equal(parts, Math.ceil(data.length / (5 * MiB)), 'one PUT per 5 MiB part');
  const got = await httpGet('nar/big.nar.xz');
  assert.equal(got.body.length, data.length);
  assert.equal(sha(got.body), sha(data));
  assert.equal(got.type, 'application/x-nix-nar');
  assert.deepEqual(await s3.pendingUploads(), []);
});

for (const [label, size] of [['multipart', 12 * MiB], ['single-PUT', 100 * 1024]] as const) {
  test(`a ${label} stream that throws after its last byte leaves no object and no upload`, async () => {
    const data = randomBytes(size);
    const boom = new Error('NarHash mismatch detected at the end');
    async function* body(): AsyncGenerator<Uint8Array> {
      yield* chunked(data);
      throw boom;
    }
    const aborts = count(/^DELETE .*uploadId=/);
    await assert.rejects(backend.putStream(`nar/${label}-fail.nar`, body(), 'application/x-nix-nar', { sizeHint: size }), (e) => e === boom);
    assert.equal(await backend.exists(`nar/${label}-fail.nar`), false);
    assert.deepEqual(await s3.pendingUploads(), []);
    if (label === 'multipart') assert.equal(count(/^DELETE .*uploadId=/) - aborts, 1, 'the multipart upload was aborted');
  });
}

test('an abort signal stops a stream that is waiting for data, and cleans up', async () => {
  const ac = new AbortController();
  const body = stallingBody(randomBytes(6 * MiB)); // more than one part: a multipart upload is under way
  const started = Date.now();
  const p = backend.putStream('nar/aborted.nar', body, 'application/x-nix-nar', { signal: ac.signal, sizeHint: 20 * MiB });
  // Let the first part go out before aborting.
  while (count(/partNumber=1/) === 0 && Date.now() - started < 5000) await sleep(10);
  ac.abort(new Error('user pressed ^C'));
  await assert.rejects(p, { code: 'UPLOAD_ABORTED' });
  assert.ok(Date.now() - started < 5000);
  assert.equal(await backend.exists('nar/aborted.nar'), false);
  assert.deepEqual(await s3.pendingUploads(), []);
  assert.ok(body.returned, 'the producer was told to stop');
});

test('an already aborted signal makes no request', async () => {
  const before = s3.requests.length;
  await assert.rejects(
    backend.putStream('nar/never.nar', chunked(Buffer.alloc(10)), 'application/x-nix-nar', { signal: AbortSignal.abort() }),
    { code: 'UPLOAD_ABORTED' },
  );
  assert.equal(s3.requests.length, before);
});

test('NoSuchBucket fails at once with a clear message and is not retried', async () => {
  const cfg = parseCacheUrl(`s3://no-such-bucket-here?endpoint=${s3.endpoint}`) as S3CacheConfig;
  const b = await openS3Backend(cfg, FAST);
  try {
    for (const op of [
      () => b.putBytes('x.narinfo', Buffer.from('x'), 'text/x-nix-narinfo'),
      () => b.get('nix-cache-info'),
      () => b.putStream('nar/x.nar', chunked(randomBytes(1000)), 'application/x-nix-nar'),
    ]) {
      const before = count(/no-such-bucket-here/);
      await assert.rejects(op(), (e: NodeJS.ErrnoException) => {
        assert.equal(e.code, 'S3_NO_SUCH_BUCKET');
        assert.match(e.message, /bucket 'no-such-bucket-here' does not exist at http:\/\/127\.0\.0\.1:\d+/);
        return true;
      });
      assert.equal(count(/no-such-bucket-here/) - before, 1, 'exactly one request');
    }
  } finally {
    await b.close();
  }
});

// s3rver checks the access key id but not V4 signatures: SignatureDoesNotMatch
// and AccessDenied are injected by the fault proxy in s3-faults.test.ts.
test('an unknown access key is a credential error, not retried, and not quoted', async () => {
  const b = await openS3Backend(parseCacheUrl(s3.url) as S3CacheConfig, {
    ...FAST,
    credentials: { accessKeyId: 'NOBODY', secretAccessKey: 'S3RVER' },
  });
  try {
    const before = s3.requests.length;
    await assert.rejects(b.putBytes('x.narinfo', Buffer.from('x'), 'text/x-nix-narinfo'), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'S3_BAD_CREDENTIALS');
      assert.match(e.message, /does not know the access key id: check the AWS credentials/);
      assert.doesNotMatch(e.message, /NOBODY/, 'no credentials in messages');
      return true;
    });
    assert.equal(s3.requests.length - before, 1);
  } finally {
    await b.close();
  }
});

test('openCacheBackend opens S3 from a parsed URL; keys are checked', async () => {
  const b = await openCacheBackend(parseCacheUrl(s3.url), { s3: FAST });
  try {
    await b.putBytes('abc.narinfo', Buffer.from('StorePath: x\n'), 'text/x-nix-narinfo');
    assert.equal((await httpGet('abc.narinfo')).type, 'text/x-nix-narinfo');
    await assert.rejects(b.get('../etc/passwd'), { code: 'BAD_CACHE_KEY' });
    await assert.rejects(b.putBytes('/abs', Buffer.alloc(1), 'x'), { code: 'BAD_CACHE_KEY' });
  } finally {
    await b.close();
  }
});


test("Nix substitutes from the bucket's plain HTTP URL", async () => {
  const [out] = await nixBuildExpr(
    `lib.mk { name = "narpush-s3-backend"; salt = "${randomBytes(8).toString('hex')}"; script = ''
      mkdir -p $out; head -c 7000000 /dev/zero | tr '\\0' x > $out/big; echo hi > $out/small
    ''; }`,
  );
  assert.ok(out);
  const { bytes } = await publishByHand(backend, out);
  assert.ok(bytes > 6 * MiB, 'big enough for a multipart upload');
  const root = await mkdtemp(path.join(tmpdir(), 'narpush-s3-root-'));
  await runOk('nix', ['copy', '--no-check-sigs', '--from', s3.httpUrl, '--to', `local?root=${root}`, out], { env: nixEnv() });
  assert.equal(await readFile(path.join(root, out, 'small'), 'utf8'), 'hi\n');
  await runOk('nix', ['store', 'verify', '--no-trust', '--store', `local?root=${root}`, out], { env: nixEnv() });
});

test('the AWS SDK is loaded only when an s3:// backend is opened', async () => {
  const script = `
    import { createRequire } from 'node:module';
    const req = createRequire(import.meta.url);
    const sdkLoaded = () => Object.keys(req.cache).some((k) => k.includes('@aws-sdk'));
    const { openCacheBackend } = await import('./dist/src/cli/open-backend.js');
    const { parseCacheUrl } = await import('./dist/src/cli/cache-url.js');
    const f = await openCacheBackend(parseCacheUrl('file:///tmp/x'));
    const before = sdkLoaded();
    const s = await openCacheBackend(parseCacheUrl('s3://lazy-check?endpoint=http://127.0.0.1:9'));
    console.log(JSON.stringify([before, sdkLoaded()]));
    await f.close(); await s.close();
  `;
  const r = await runOk(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } });
  assert.deepEqual(JSON.parse(r.stdout.toString()), [false, true]);
});
