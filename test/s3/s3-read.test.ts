// The S3 backend's read side used by `narpush verify`: list (ListObjectsV2,
// paginated) and getStream, against s3rver on loopback with a bucket of its own.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseCacheUrl, type S3CacheConfig } from '../../src/cli/cache-url.js';
import type { CacheBackend, ListedObject } from '../../src/cache/backend.js';
import { openS3Backend, type S3BackendOptions } from '../../src/s3/s3-backend.js';
import { startS3rver, S3RVER_CREDENTIALS, type S3rverHandle } from '../helpers/s3rver.js';
import { createLimiter } from '../../src/cache/limit.js';

const FAST: S3BackendOptions = {
  credentials: S3RVER_CREDENTIALS,
  retry: { maxAttempts: 3, baseDelayMs: 5, throttleBaseDelayMs: 5, maxDelayMs: 50 },
};

let s3: S3rverHandle;
let backend: CacheBackend;

before(async () => {
  s3 = await startS3rver({ bucket: 'narpush-read' });
  backend = await openS3Backend(parseCacheUrl(s3.url) as S3CacheConfig, FAST);
});
after(async () => {
  await backend?.close();
  await s3?.stop();
});

async function all(it: AsyncIterable<ListedObject>): Promise<ListedObject[]> {
  const out: ListedObject[] = [];
  for await (const o of it) out.push(o);
  return out;
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of it) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

test('list pages through more than 1,000 keys, with sizes, and filters by prefix', async () => {
  const limit = createLimiter(32);
  const keys = Array.from({ length: 1005 }, (_, i) => `${String(i).padStart(32, '0')}.narinfo`);
  await Promise.all(keys.map((k, i) => limit(() => backend.putBytes(k, Buffer.alloc(i % 7), 'text/x-nix-narinfo'))));
  await backend.putBytes('nar/a.nar.xz', Buffer.alloc(3), 'application/x-nix-nar');
  const before = s3.requests.filter((r) => /list-type=2/.test(r)).length;
  const listed = await all(backend.list(''));
  const pages = s3.requests.filter((r) => /list-type=2/.test(r)).length - before;
  assert.equal(pages, 2, 'two pages of at most 1,000 keys');
  assert.deepEqual(listed.map((o) => o.key).sort(), [...keys, 'nar/a.nar.xz'].sort());
  const sizes = new Map(listed.map((o) => [o.key, o.size]));
  assert.equal(sizes.get(keys[6]!), 6);
  assert.equal(sizes.get('nar/a.nar.xz'), 3);
  assert.ok(listed.every((o) => o.lastModified instanceof Date && o.lastModified.getTime() > 0));
  assert.deepEqual((await all(backend.list('nar/'))).map((o) => o.key), ['nar/a.nar.xz']);
});

test('getStream streams an object in pieces, and says undefined for a missing one', async () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  await backend.putStream('nar/big.nar', (async function* () { yield data; })(), 'application/x-nix-nar');
  const body = await backend.getStream('nar/big.nar');
  assert.ok(body);
  let pieces = 0;
  const chunks: Buffer[] = [];
  for await (const c of body) {
    pieces++;
    chunks.push(Buffer.from(c));
  }
  assert.ok(pieces > 1, 'streamed, not read whole');
  assert.deepEqual(Buffer.concat(chunks), data);
  assert.equal(await backend.getStream('nar/missing.nar'), undefined);
  assert.deepEqual(await collect((await backend.getStream('nar/a.nar.xz'))!), Buffer.alloc(3));
});

test('a missing bucket fails list and getStream with one clear error', async () => {
  const b = await openS3Backend(parseCacheUrl(`s3://no-such-bucket-here?endpoint=${s3.endpoint}`) as S3CacheConfig, FAST);
  try {
    await assert.rejects(all(b.list('')), { code: 'S3_NO_SUCH_BUCKET' });
    await assert.rejects(b.getStream('nar/x.nar'), { code: 'S3_NO_SUCH_BUCKET' });
  } finally {
    await b.close();
  }
});

test('an aborted signal stops getStream and list', async () => {
  await assert.rejects(backend.getStream('nar/big.nar', { signal: AbortSignal.abort() }), { code: 'UPLOAD_ABORTED' });
  await assert.rejects(all(backend.list('', { signal: AbortSignal.abort() })), { code: 'UPLOAD_ABORTED' });
});

test('get undoes the Content-Encoding Nix writes (narinfo-, ls- and log-compression): br, gzip, xz, zstd; refuses bzip2, bad bytes and bombs in one line', async () => {
  const zlib = await import('node:zlib');
  const { compressBuffer } = await import('../../src/cache/compression.js');
  const text = Buffer.from(`StorePath: /nix/store/${'a'.repeat(32)}-x\nURL: nar/x.nar.xz\n`.repeat(50));
  const encoded: [string, Buffer][] = [
    ['br', zlib.brotliCompressSync(text)],
    ['gzip', zlib.gzipSync(text)],
    ['xz', await compressBuffer({ method: 'xz' }, text)],
    ['zstd', await compressBuffer({ method: 'zstd' }, text)],
    ['identity', text],
  ];
  for (const [encoding, body] of encoded) {
    const key = `${encoding.padEnd(32, 'e')}.narinfo`;
    await backend.putBytes(key, body, 'text/x-nix-narinfo', { contentEncoding: encoding });
    assert.ok((await backend.get(key))!.equals(text), `${encoding}: decoded`);
  }
  // Not encoded: as stored.
  await backend.putBytes('plain.ls', text, 'application/json');
  assert.ok((await backend.get('plain.ls'))!.equals(text));
  const refused = async (key: string, body: Buffer, encoding: string, code: string, message: RegExp): Promise<void> => {
    await backend.putBytes(key, body, 'text/x-nix-narinfo', { contentEncoding: encoding });
    await assert.rejects(backend.get(key), (e: Error & { code?: string }) => {
      assert.equal(e.code, code);
      assert.match(e.message, message);
      assert.equal(e.message.split('\n').length, 1);
      return true;
    });
  };
  await refused('bz.narinfo', Buffer.from('BZh9'), 'bzip2', 'BAD_CONTENT_ENCODING', /Content-Encoding 'bzip2', which narpush cannot undo/);
  await refused('bad-br.narinfo', Buffer.from('not brotli at all'), 'br', 'BAD_CONTENT_ENCODING', /is not valid br/);
  await refused('bad-xz.narinfo', Buffer.from('not xz at all'), 'xz', 'BAD_CONTENT_ENCODING', /is not valid xz/);
  // 64 MiB of zeros in a few KiB: refused, not inflated.
  const bomb = zlib.brotliCompressSync(Buffer.alloc(64 << 20));
  await refused('bomb.narinfo', bomb, 'br', 'CACHE_OBJECT_TOO_LARGE', /decodes to more than/);
  await refused('bomb-zstd.narinfo', await compressBuffer({ method: 'zstd' }, Buffer.alloc(64 << 20)), 'zstd', 'CACHE_OBJECT_TOO_LARGE', /decodes to more than/);
});
