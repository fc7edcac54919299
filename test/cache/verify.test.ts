// verifyCache on the in-memory backend: caches built here from NARs that
// narpush's encoder makes, in every compression a Nix cache may hold, and
// defects that end-to-end tests with Nix cannot make easily (a narinfo for
// another path, a valid xz of something that is not a NAR, bzip2, a cache
// without nix-cache-info). Also: the read-only view has no write operation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { type CacheBackend, readOnlyView } from '../../src/cache/backend.js';
import { compressBuffer } from '../../src/cache/compression.js';
import { type VerifyReport, verifyCache } from '../../src/cache/verify.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import { encodeNarSync } from '../../src/nar/encode.js';
import { type NarInfo, formatNarInfo } from '../../src/narinfo/narinfo.js';
import { newSecretKey, toPublicKey } from '../../src/signing/keys.js';
import { signNarInfo } from '../../src/signing/sign.js';
import { StorePath } from '../../src/store/store-path.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { treeEvents } from '../nar/tree.js';

const key = newSecretKey('unit-1', Buffer.alloc(32, 7));
const sha = (b: Uint8Array): { algo: 'sha256'; digest: Buffer } => ({ algo: 'sha256', digest: createHash('sha256').update(b).digest() });

function storePath(n: number, name: string, storeDir = '/nix/store'): StorePath {
  return new StorePath(nix32Encode(createHash('sha1').update(`${name}${n}`).digest()).slice(0, 32), name, storeDir);
}

async function compress(method: string, data: Buffer): Promise<Buffer> {
  switch (method) {
    case 'br':
      return promisify(zlib.brotliCompress)(data);
    case 'gzip':
      return promisify(zlib.gzip)(data);
    case 'bzip2':
      return Buffer.concat([Buffer.from('BZh9'), data]); // never decompressed: only counted and hashed
    default:
      return compressBuffer({ method: method as 'xz' | 'zstd' | 'none' }, data);
  }
}

const EXT: Record<string, string> = { none: '', xz: '.xz', zstd: '.zst', br: '.br', gzip: '.gz', bzip2: '.bz2' };

interface Put {
  readonly path: StorePath;
  readonly nar?: Buffer;
  readonly compression?: string;
  readonly references?: readonly StorePath[];
  /** Change the record before it is signed and written. */
  readonly edit?: (info: NarInfo) => NarInfo;
}

/** Put one path (its NAR, its signed narinfo) into `cache`, as narpush would. */
async function put(cache: CacheBackend, p: Put): Promise<NarInfo> {
  const nar = p.nar ?? encodeNarSync(treeEvents({ type: 'regular', executable: false, contents: Buffer.from(`contents of ${p.path.name}\n`) }));
  const compression = p.compression ?? 'xz';
  const file = await compress(compression, nar);
  const url = `nar/${nix32Encode(sha(file).digest)}.nar${EXT[compression]}`;
  await cache.putBytes(url, file, 'application/x-nix-nar');
  let info: NarInfo = {
    storePath: p.path,
    url,
    compression,
    fileHash: sha(file),
    fileSize: file.length,
    narHash: sha(nar),
    narSize: nar.length,
    references: p.references ?? [],
    sigs: [],
  };
  info = signNarInfo(p.edit ? p.edit(info) : info, key);
  await cache.putBytes(`${p.path.hashPart}.narinfo`, Buffer.from(formatNarInfo(info)), 'text/x-nix-narinfo');
  return info;
}

async function freshCache(storeDir = '/nix/store'): Promise<MemoryBackend> {
  const cache = new MemoryBackend();
  await cache.putBytes('nix-cache-info', Buffer.from(`StoreDir: ${storeDir}\n`), 'text/x-nix-cache-info');
  return cache;
}

const run = (cache: CacheBackend, extra: Partial<Parameters<typeof verifyCache>[0]> = {}): Promise<VerifyReport> =>
  verifyCache({ cache: readOnlyView(cache), trustedKeys: [toPublicKey(key)], jobs: 3, ...extra });

const kinds = (r: VerifyReport): [string, string][] => r.defects.map((d) => [d.path, d.kind]);

test('every compression narpush can decompress verifies clean; bzip2 is counted, hashed and said to be unchecked', async () => {
  const cache = await freshCache();
  const methods = ['none', 'xz', 'zstd', 'br', 'gzip', 'bzip2'];
  const paths = methods.map((m, i) => storePath(i, `p-${m}`));
  const base = paths[0]!;
  let narBytes = 0;
  for (const [i, m] of methods.entries()) {
    const info = await put(cache, { path: paths[i]!, compression: m, references: i === 0 ? [] : [base, paths[i]!] });
    if (m !== 'bzip2') narBytes += info.narSize;
  }
  const r = await run(cache);
  assert.deepEqual(r.defects, []);
  assert.equal(r.checked, methods.length);
  assert.equal(r.narBytes, narBytes);
  assert.deepEqual(r.unchecked, [{ path: paths[5]!.path, reason: 'NAR contents not checked: bzip2 decompression is not supported' }]);

  // The bzip2 object's FileHash is still checked.
  const bz = [...cache.objects.keys()].find((k) => k.endsWith('.bz2'))!;
  const obj = cache.objects.get(bz)!;
  obj.body[5] = obj.body[5]! ^ 1;
  assert.deepEqual(kinds(await run(cache)), [[paths[5]!.path, 'file-hash']]);
});

test('a narinfo for another path, a URL outside the cache, and an xz that holds no NAR', async () => {
  const cache = await freshCache();
  const a = storePath(1, 'a');
  const b = storePath(2, 'b');
  const c = storePath(3, 'c');
  const d = storePath(4, 'd');
  await put(cache, { path: a });
  // b's narinfo says it is a (reported under the path it names; the message names the key).
  await put(cache, { path: b, edit: (i) => ({ ...i, storePath: a }) });
  await put(cache, { path: c, edit: (i) => ({ ...i, url: '../outside.nar' }) });
  await put(cache, { path: d, nar: Buffer.from('not a NAR at all') });
  const r = await run(cache);
  assert.deepEqual(kinds(r).sort(), [
    [a.path, 'wrong-store-path'],
    [c.path, 'bad-narinfo'],
    [d.path, 'bad-nar'],
  ].sort());
  assert.match(r.defects.find((x) => x.kind === 'bad-nar')!.message, /not a valid NAR: not a NAR/);
});

test('a cache without nix-cache-info is one defect; the StoreDir it names is the one narinfos are read with', async () => {
  const other = await freshCache('/other/store');
  const p = storePath(1, 'x', '/other/store');
  await put(other, { path: p });
  assert.deepEqual((await run(other)).defects, []);
  other.objects.delete('nix-cache-info');
  const r = await run(other);
  assert.deepEqual(r.defects.map((x) => [x.key, x.kind]), [
    ['nix-cache-info', 'missing-cache-info'],
    // Without it the store is /nix/store, where /other/store/… cannot be.
    [`${p.hashPart}.narinfo`, 'bad-narinfo'],
  ]);
});

test('no trusted keys: signatures are not checked; an unsigned narinfo with keys is reported as such', async () => {
  const cache = await freshCache();
  const p = storePath(1, 'unsigned');
  await put(cache, { path: p });
  const text = cache.objects.get(`${p.hashPart}.narinfo`)!.body.toString().replace(/^Sig: .*\n/m, '');
  cache.objects.get(`${p.hashPart}.narinfo`)!.body = Buffer.from(text);
  assert.deepEqual((await run(cache, { trustedKeys: [] })).defects, []);
  const r = await run(cache);
  assert.deepEqual(r.defects.map((x) => [x.kind, x.message]), [['bad-signature', 'has no signature']]);
});

test('the read-only view has no write operation, not even behind a cast', () => {
  const view = readOnlyView(new MemoryBackend()) as unknown as Record<string, unknown>;
  assert.deepEqual(Object.keys(view).sort(), ['description', 'exists', 'get', 'getStream', 'list']);
  for (const op of ['putBytes', 'putStream', 'stageBatch', 'close']) assert.equal(view[op], undefined);
  assert.ok(Object.isFrozen(view));
});

test('at most `jobs` NARs are read at once, and all of them in the end', async () => {
  const cache = await freshCache();
  for (let i = 0; i < 12; i++) await put(cache, { path: storePath(i, `j${i}`), compression: 'none' });
  let open = 0;
  let most = 0;
  const inner = cache.getStream.bind(cache);
  cache.getStream = async (k) => {
    const body = await inner(k);
    return (async function* () {
      open++;
      most = Math.max(most, open);
      try {
        await new Promise((r) => setImmediate(r));
        yield* body!;
      } finally {
        open--;
      }
    })();
  };
  const r = await run(cache, { jobs: 3 });
  assert.equal(r.checked, 12);
  assert.deepEqual(r.defects, []);
  assert.equal(most, 3);
});

test('an aborted signal stops verification with an error, not a report of defects', async () => {
  const cache = await freshCache();
  await put(cache, { path: storePath(1, 'a') });
  await assert.rejects(run(cache, { signal: AbortSignal.abort() }), { code: 'INTERRUPTED' });
});

test('a NAR larger than its NarSize is reported, and not decompressed past that size', async () => {
  const cache = await freshCache();
  const p = storePath(1, 'bomb');
  // 64 MiB of zeros: a few dozen KiB of gzip, stated as 1 KiB.
  const nar = encodeNarSync(treeEvents({ type: 'regular', executable: false, contents: Buffer.alloc(64 << 20) }));
  await put(cache, { path: p, nar, compression: 'gzip', edit: (i) => ({ ...i, narSize: 1024 }) });
  const r = await run(cache);
  assert.deepEqual(kinds(r), [[p.path, 'nar-size']]);
  assert.match(r.defects[0]!.message, /decompresses to more than 1024 bytes, the narinfo says NarSize 1024 \(not decompressed further\)/);
});
