// `write-nar-listing=true` through the upload pipeline: every producer (in
// memory, split with the crypto thread, whole on a worker thread) lists
// every NAR fixture as Nix 2.8 does; uploadPaths writes `<hashpart>.ls`
// before the narinfo, only when asked, and none for a listing over the cap;
// `narpush upload-path` does it on file:// and on S3 (s3rver), with Nix's
// content type.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Compression } from '../../src/cache/compression.js';
import { uploadNar, uploadSmallNars } from '../../src/cache/nar-upload.js';
import { UploadPlanner } from '../../src/cache/plan.js';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { LISTING_CONTENT_TYPE, listingKey, narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { MAX_LISTING_BYTES } from '../../src/nar/listing.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { nixEnv } from '../helpers/nix.js';
import { hashPartOf, nixListings, parseListing } from '../helpers/nix-listing.js';
import { narpush } from '../helpers/run.js';
import { S3RVER_ENV, type S3rverHandle, startS3rver } from '../helpers/s3rver.js';
import { narFixtures, nixPathInfo } from '../nar/fixtures.js';

const threads = new ThreadPool();
const listing = { maxBytes: MAX_LISTING_BYTES };
let infos: PathInfo[];
let nixLs: Map<string, Buffer>;
let work: string;
let s3: S3rverHandle | undefined;

before(async () => {
  const paths = [...(await narFixtures()).values()];
  nixLs = await nixListings(paths);
  infos = await Promise.all(
    paths.map(async (p): Promise<PathInfo> => {
      const { narHash, narSize } = await nixPathInfo(p);
      return { path: parseStorePath(p, '/nix/store'), deriver: undefined, narHash, narSize, references: [], registrationTime: 0, ultimate: false, sigs: [], ca: undefined };
    }),
  );
  work = await mkdtemp(path.join(tmpdir(), 'narpush-listing-'));
});

after(async () => {
  await threads.close();
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

function assertNixListing(info: PathInfo, got: Buffer | 'too-large' | 'written' | undefined, how: string): void {
  assert.ok(Buffer.isBuffer(got), `${how}: ${info.path.name} has a listing`);
  assert.deepEqual(parseListing(got), parseListing(nixLs.get(info.path.path)!), `${how}: ${info.path.name} listed as Nix does`);
}

test('every producer lists every fixture as Nix does', async () => {
  const backend = new MemoryBackend();
  const small = await uploadSmallNars(backend, infos, { compression: { method: 'xz' }, listing });
  for (const [k, r] of small.entries()) {
    assert.equal(r.status, 'fulfilled');
    assertNixListing(infos[k]!, (r as PromiseFulfilledResult<{ listing?: Buffer }>).value.listing, 'in memory');
  }
  for (const [production, method] of [['split', 'xz'], ['split', 'zstd'], ['inline', 'zstd'], ['inline', 'none'], ['whole', 'zstd']] as const) {
    for (const info of infos) {
      const nar = await uploadNar(backend, info, { compression: { method }, threads, production, listing });
      assertNixListing(info, nar.listing, `${production} ${method}`);
    }
  }
  // Without the option, no producer lists.
  const plain = await uploadNar(backend, infos[0]!, { compression: { method: 'zstd' }, threads, production: 'whole' });
  assert.equal(plain.listing, undefined);
});

// hashHere: whether a large NAR streamed alone is hashed on this thread ('inline') or the crypto thread ('split'); measured from the CPU unless set.
// wholeMinBytes 0: the fixtures but the 40 MiB one (zstd's own thread, produced here) add up to less than WHOLE_MIN_BYTES.
for (const [how, method, smallNarBytes, hashHere, wholeMinBytes] of [
  ['in memory', 'xz', undefined, undefined, undefined],
  ['split', 'xz', 0, false, undefined],
  ['inline', 'xz', 0, true, undefined],
  ['whole', 'zstd', 0, undefined, 0],
] as const) {
  test(`uploadPaths (${how}): each .ls is Nix's and is written before its narinfo`, async () => {
    const planner = new UploadPlanner({
      compression: { method }, jobs: 4, cores: threads.maxThreads, signingKeys: 0,
      ...(smallNarBytes !== undefined ? { smallNarBytes } : {}), ...(hashHere !== undefined ? { hashHere } : {}),
      ...(wholeMinBytes !== undefined ? { wholeMinBytes } : {}),
    });
    for (const i of infos) planner.add(i.narSize);
    const chosen = new Set(infos.map((i) => planner.production(i.narSize)));
    assert.ok(chosen.has(how === 'in memory' ? 'memory' : how), `the planner produces some NARs ${how}`);
    const backend = new MemoryBackend();
    const report = await uploadPaths(infos, {
      backend, compression: { method }, signingKeys: [], threads, jobs: 4, listing,
      ...(smallNarBytes !== undefined ? { smallNarBytes } : {}), ...(hashHere !== undefined ? { hashHere } : {}),
      ...(wholeMinBytes !== undefined ? { wholeMinBytes } : {}),
    });
    assert.deepEqual(report.failed, []);
    assert.equal(report.uploaded.length, infos.length);
    for (const u of report.uploaded) {
      assert.equal(u.nar.listing, 'written');
      const ls = backend.objects.get(listingKey(u.info.path))!;
      assert.equal(ls.contentType, LISTING_CONTENT_TYPE);
      assertNixListing(u.info, ls.body, how);
      const puts = backend.log.filter((o) => o.op === 'putBytes').map((o) => o.key);
      assert.ok(puts.indexOf(listingKey(u.info.path)) < puts.indexOf(narInfoKey(u.info.path)), `${u.info.path.name}: .ls before .narinfo`);
    }
  });
}

test('uploadPaths: no listing unless asked; over the cap the path is uploaded without one', async () => {
  const plain = new MemoryBackend();
  await uploadPaths(infos, { backend: plain, compression: { method: 'none' }, signingKeys: [], threads, jobs: 2 });
  assert.deepEqual([...plain.objects.keys()].filter((k) => k.endsWith('.ls')), []);

  const capped = new MemoryBackend();
  const report = await uploadPaths(infos, { backend: capped, compression: { method: 'none' }, signingKeys: [], threads, jobs: 2, listing: { maxBytes: 100 } });
  assert.deepEqual(report.failed, []);
  for (const u of report.uploaded) {
    const fits = nixLs.get(u.info.path.path)!.length <= 100;
    assert.equal(u.nar.listing, fits ? 'written' : 'too-large', u.info.path.name);
    assert.equal(capped.objects.has(listingKey(u.info.path)), fits);
    assert.ok(capped.objects.has(narInfoKey(u.info.path)));
  }
  assert.ok(report.uploaded.some((u) => u.nar.listing === 'too-large'));
});

test('upload-path to file:// writes Nix\'s listings and counts them in --json', async () => {
  const dir = path.join(work, 'file-cache');
  const r = await narpush(['upload-path', '--to', `file://${dir}?write-nar-listing=true`, '--json', ...infos.map((i) => i.path.path)], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout.toString());
  assert.deepEqual(report.listings, { written: infos.length, tooLarge: 0 });
  for (const i of infos) assertNixListing(i, await readFile(path.join(dir, `${hashPartOf(i.path.path)}.ls`)), 'file://');
  const off = path.join(work, 'file-cache-off');
  const r2 = await narpush(['upload-path', '--to', `file://${off}`, infos[0]!.path.path], { env: nixEnv() });
  assert.equal(r2.code, 0, r2.stderr);
  assert.deepEqual((await readdir(off)).filter((f) => f.endsWith('.ls')), []);
});

test('upload-path to S3 writes Nix\'s listings as application/json', async () => {
  s3 = await startS3rver();
  const r = await narpush(['upload-path', '--to', `${s3.url}&write-nar-listing=true`, ...infos.map((i) => i.path.path)], {
    env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
  });
  assert.equal(r.code, 0, r.stderr);
  for (const i of infos) {
    const res = await fetch(`${s3.httpUrl}/${hashPartOf(i.path.path)}.ls`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assertNixListing(i, Buffer.from(await res.arrayBuffer()), 's3');
  }
});

test('uploadPaths: a listing that cannot be written fails its path, and its narinfo never appears', async () => {
  const backend = new MemoryBackend();
  const victim = infos[0]!;
  backend.failPut = (key) => key === listingKey(victim.path);
  const report = await uploadPaths(infos, { backend, compression: { method: 'none' }, signingKeys: [], threads, jobs: 2, listing });
  assert.deepEqual(report.failed.map((f) => f.info.path.path), [victim.path.path]);
  assert.equal(backend.objects.has(narInfoKey(victim.path)), false);
  assert.equal(report.uploaded.length, infos.length - 1);
});
