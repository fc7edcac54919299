// `narinfo-compression=br` and `ls-compression=br` on an s3:// cache, as
// Hydra gives cache.nixos.org: narinfos and listings are stored
// Brotli-compressed with `Content-Encoding: br`; Nix substitutes the closure
// back over HTTP with signatures required; `narpush verify` reads them; and
// the uploader's renewal of an old narinfo (a copy onto itself) keeps the
// encoding, where a plain copy would leave Brotli bytes Nix reads as a
// corrupt narinfo; the copy is of the object checked (its ETag), and a
// refusal (412: replaced since) counts as renewed. Against s3rver on
// loopback, with a bucket of its own; s3rver and Ceph 16 ignore the
// condition, which AWS applies, so its 412 comes through the fault proxy.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import type { CacheBackend } from '../../src/cache/backend.js';
import { presentAndFresh } from '../../src/cache/refresh.js';
import { parseCacheUrl, type S3CacheConfig } from '../../src/cli/cache-url.js';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import { openS3Backend } from '../../src/s3/s3-backend.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { nix, nixBuildFile, nixEnv } from '../helpers/nix.js';
import { hashPartOf, nixListings, parseListing } from '../helpers/nix-listing.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { generateKeyPair, narpush, run } from '../helpers/run.js';
import { S3RVER_CREDENTIALS, S3RVER_ENV, type S3rverHandle, startS3rver, storedObject } from '../helpers/s3rver.js';

let s3: S3rverHandle;
let work: string;
let secret: string;
let pub: string;
let backend: CacheBackend;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'narpush-metadata-br-'));
  ({ secretKeyFile: secret, publicKey: pub } = await generateKeyPair(work, 'narpush-br-1'));
  s3 = await startS3rver({ bucket: 'narpush-br' });
  backend = await openS3Backend(parseCacheUrl(s3.url) as S3CacheConfig, { credentials: S3RVER_CREDENTIALS });
});

after(async () => {
  await backend?.close();
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

const raw = (key: string) => storedObject(`${s3.httpUrl}/${key}`);

test('narinfo-compression=br&ls-compression=br: both stored as Brotli with Content-Encoding br; Nix substitutes the closure; verify reads them', async () => {
  const [top] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', randomUUID(), '--arg', 'bigBytes', '4096']);
  const closure = await nixClosure([top!]);
  const url = `${s3.url}&narinfo-compression=br&ls-compression=br&write-nar-listing=true`;
  const r = await narpush(['upload-path', '--to', url, '--compression', 'zstd', '--secret-key-file', secret, top!], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  const nixLs = await nixListings(closure);
  for (const p of closure) {
    const hashPart = hashPartOf(p);
    const narinfo = await raw(`${hashPart}.narinfo`);
    assert.equal(narinfo.status, 200, p);
    assert.equal(narinfo.encoding, 'br', `${p}: narinfo Content-Encoding`);
    assert.doesNotMatch(narinfo.body.toString('latin1'), /StorePath: /, 'the stored narinfo is compressed');
    assert.equal(parseNarInfo(brotliDecompressSync(narinfo.body).toString()).storePath.path, p);
    const ls = await raw(`${hashPart}.ls`);
    assert.equal(ls.encoding, 'br', `${p}: listing Content-Encoding`);
    assert.deepEqual(parseListing(brotliDecompressSync(ls.body)), parseListing(nixLs.get(p)!), `${p}: listed as Nix does`);
  }
  // What an HTTP client reads (fetch undoes br, as Nix does): signed, complete.
  await assertCacheHas(httpFetcher(s3.httpUrl), closure, pub);

  const v = await narpush(['verify', '--cache', s3.url, '--trusted-public-key', pub, '--json'], { env: env() });
  assert.equal(v.code, 0, `${v.stdout}${v.stderr}`);
  const report = JSON.parse(v.stdout.toString()) as { defects: unknown[]; paths: number };
  assert.deepEqual(report.defects, []);

  await nix('nix-store', ['--delete', ...closure]);
  for (const p of closure) assert.notEqual((await run('test', ['-e', p])).code, 0, `${p} was deleted`);
  const back = await run(
    'nix-store',
    ['-r', top!, '--option', 'substituters', s3.httpUrl, '--option', 'trusted-public-keys', pub, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(back.code, 0, `substitution failed: ${back.stderr}`);
  assert.equal((await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() })).code, 0);
});

test('renewing an old narinfo (a copy onto itself) keeps its Content-Encoding, and never creates one', async () => {
  const text = 'StorePath: /nix/store/00000000000000000000000000000000-x\n';
  const key = '00000000000000000000000000000000.narinfo';
  await backend.putBytes(key, brotliCompressSync(text), 'text/x-nix-narinfo', { contentEncoding: 'br' });
  const later = () => new Date(Date.now() + 3_600_000);
  assert.equal(await presentAndFresh(backend, key, 'text/x-nix-narinfo', { refreshAgeMs: 60_000, clock: later }), true);
  const renewed = await raw(key);
  assert.equal(renewed.encoding, 'br', 'the copy kept Content-Encoding: br');
  assert.equal(brotliDecompressSync(renewed.body).toString(), text);
  assert.equal((await backend.get(key))!.toString(), text);

  // The copy names the ETag checked; AWS refuses it (412) once the object changed, and that counts as renewed.
  const proxy = await startFaultProxy({ targetPort: s3.port, seed: 1 });
  const via = await openS3Backend(parseCacheUrl(s3.url.replace(s3.endpoint, proxy.endpoint)) as S3CacheConfig, {
    credentials: S3RVER_CREDENTIALS,
  });
  try {
    const checked = (await via.stat!(key))!;
    assert.equal(checked.contentEncoding, 'br');
    assert.match(checked.etag ?? '', /^"[0-9a-f]{32}"$/);
    assert.equal(await via.touch!(key, 'text/x-nix-narinfo', checked), true);
    const copy = proxy.requests.find((q) => q.line.startsWith('PUT') && q.headers['x-amz-copy-source'] !== undefined);
    assert.equal(copy?.headers['x-amz-copy-source-if-match'], checked.etag, 'a copy of the object checked and no other');
    assert.equal(copy?.headers['content-encoding'], 'br');
    proxy.answerAll({ status: 412, code: 'PreconditionFailed' });
    assert.equal(await via.touch!(key, 'text/x-nix-narinfo', checked), true, 'replaced since the check: as young as a renewal');
    proxy.answerAll(undefined);
  } finally {
    await via.close();
    await proxy.stop();
  }

  // Never creates one.
  assert.equal(await backend.touch!('11111111111111111111111111111111.narinfo', 'text/x-nix-narinfo'), false);
  assert.equal((await raw('11111111111111111111111111111111.narinfo')).status, 404);
});
