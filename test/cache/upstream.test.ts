// Upstream filtering on in-memory caches: which paths an upstream serves (by
// signature key name, by narinfo with the same NarHash), what is remembered,
// what a failing upstream does (nothing but a warning), and how uploadPaths
// treats upstream references (satisfied, kept in References).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { LookupCache } from '../../src/cache/lookup-cache.js';
import { type NarInfoSource, Upstream } from '../../src/cache/upstream.js';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { makeStore } from './upload-fake-store.js';

const threads = new ThreadPool();
after(() => threads.close());

const CHAIN = { top: ['mid', 'lib'], mid: ['lib'], lib: ['libc'], libc: [] };

/** A cache holding the narinfos of `infos` (uploaded by narpush itself), for the store dir `dir`. */
async function cacheOf(dir: string, infos: readonly PathInfo[]): Promise<MemoryBackend> {
  const b = new MemoryBackend();
  await b.putBytes('nix-cache-info', Buffer.from(`StoreDir: ${dir}\n`), 'text/x-nix-cache-info');
  const r = await uploadPaths(infos, { backend: b, compression: { method: 'none' }, signingKeys: [], threads, jobs: 1, upstream: undefined });
  assert.equal(r.failed.length, 0);
  return b;
}

/** A source that fails every request, counting them. */
function failing(why = 'HTTP 500'): NarInfoSource & { calls: number } {
  const s = {
    description: 'http://down.example',
    calls: 0,
    async get(): Promise<Buffer | undefined> {
      s.calls++;
      throw new Error(why);
    },
    async close() {},
  };
  return s;
}

const answers = (): LookupCache<string> => new LookupCache<string>({ maxEntries: 1000, ttlMs: Infinity });
const withSig = (i: PathInfo, sig: string): PathInfo => ({ ...i, sigs: [sig] });

test('signed: a signature by a named key marks a path, other keys do not', async () => {
  const { dir, infos } = await makeStore({ a: [] });
  try {
    const u = new Upstream({ keyNames: ['cache.nixos.org-1'], caches: [], storeDir: dir, answers: answers() });
    const a = infos.get('a')!;
    assert.equal(u.signed(a), false);
    assert.equal(u.signed(withSig(a, 'cache.nixos.org-1:c2lnbmF0dXJl')), true);
    assert.equal(u.signed(withSig(a, 'cache.nixos.org-2:c2lnbmF0dXJl')), false);
    assert.equal(u.signed(withSig(a, 'cache.nixos.org-1')), false, 'a name without a signature is no signature');
    const none = new Upstream({ keyNames: [], caches: [], storeDir: dir, answers: answers() });
    assert.equal(none.signed(withSig(a, 'cache.nixos.org-1:c2lnbmF0dXJl')), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lookup: served with the same NarHash only; answers remembered, so a second lookup asks nothing', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const up = await cacheOf(dir, [infos.get('libc')!, infos.get('lib')!]);
    const u = new Upstream({ keyNames: [], caches: [up], storeDir: dir, answers: answers() });
    const all = [...infos.values()];
    assert.deepEqual([...(await u.lookup(all))].sort(), [infos.get('lib')!.path.baseName, infos.get('libc')!.path.baseName].sort());
    const asked = up.log.filter((l) => l.op === 'get').length;
    assert.equal(asked, 1 + all.length, 'nix-cache-info once, then one narinfo per path');
    assert.equal((await u.lookup(all)).size, 2);
    assert.equal(up.log.filter((l) => l.op === 'get').length, asked, 'the second lookup was answered from memory');

    // The same path with another NarHash (a different build) is not served.
    const other = { ...infos.get('lib')!, narHash: { algo: 'sha256' as const, digest: Buffer.alloc(32, 7) } };
    assert.equal((await u.lookup([other])).size, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failing upstream: nothing is served, one warning per outage, one request per lookup, failures not remembered', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const down = failing();
    const warnings: string[] = [];
    const u = new Upstream({ keyNames: [], caches: [down], storeDir: dir, answers: answers(), onUnavailable: (c, why) => warnings.push(`${c}: ${why}`) });
    assert.equal((await u.lookup([...infos.values()])).size, 0);
    assert.deepEqual(warnings, ['http://down.example: HTTP 500']);
    assert.equal(down.calls, 1, 'a dead upstream gets no more requests in the same lookup');
    assert.equal((await u.lookup([...infos.values()])).size, 0);
    assert.equal(down.calls, 2, 'asked again next time: the failure was not remembered');
    assert.equal(warnings.length, 1, 'still the same outage: no second warning');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('garbage, a narinfo of another path, and a cache for another store are not used, and said once', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const libc = infos.get('libc')!;
    const lib = infos.get('lib')!;
    for (const [name, poison] of [
      ['garbage', (b: MemoryBackend) => b.objects.set(narInfoKey(libc.path), { body: Buffer.from('<html>hello</html>'), contentType: 'text/html', lastModified: new Date() })],
      ['another path', (b: MemoryBackend) => b.objects.set(narInfoKey(libc.path), b.objects.get(narInfoKey(lib.path))!)],
      ['another store', (b: MemoryBackend) => b.objects.set('nix-cache-info', { body: Buffer.from('StoreDir: /gnu/store\n'), contentType: '', lastModified: new Date() })],
    ] as const) {
      const up = await cacheOf(dir, [libc, lib]);
      poison(up);
      const warnings: string[] = [];
      const u = new Upstream({ keyNames: [], caches: [up], storeDir: dir, answers: answers(), onUnavailable: (_c, why) => warnings.push(why) });
      assert.equal((await u.lookup([libc])).size, 0, name);
      assert.equal((await u.lookup([lib])).size, name === 'another store' ? 0 : 1, `${name}: the rest of the cache`);
      assert.equal(warnings.length, 1, `${name}: ${warnings.join('; ')}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second upstream is asked when the first is down or lacks the path', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const up = await cacheOf(dir, [infos.get('libc')!]);
    const u = new Upstream({ keyNames: [], caches: [failing(), up], storeDir: dir, answers: answers() });
    assert.deepEqual([...(await u.lookup([...infos.values()]))], [infos.get('libc')!.path.baseName]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('uploadPaths: upstream paths are not uploaded; those that refer to them are published, References intact', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const libc = infos.get('libc')!;
    const lib = infos.get('lib')!;
    const up = await cacheOf(dir, [libc, lib]);
    up.objects.delete(narInfoKey(libc.path));
    const u = new Upstream({ keyNames: ['upstream-1'], caches: [up], storeDir: dir, answers: answers() });
    const ours = new MemoryBackend();
    const events: string[] = [];
    const signedLibc = withSig(libc, 'upstream-1:c2lnbmF0dXJl');
    const all = [infos.get('top')!, infos.get('mid')!, lib, signedLibc];
    const report = await uploadPaths(all, {
      backend: ours, compression: { method: 'zstd' }, signingKeys: [], threads, jobs: 2, upstream: u,
      onEvent: (e) => { if (e.type === 'upstream') events.push(e.info.path.name); },
    });
    assert.deepEqual(report.failed.map((f) => f.error.message), []);
    assert.deepEqual(report.uploaded.map((x) => x.info.path.name).sort(), ['mid', 'top']);
    assert.deepEqual(report.upstream.map((i) => i.path.name).sort(), ['lib', 'libc']);
    assert.deepEqual(events.sort(), ['lib', 'libc']);
    assert.equal(ours.objects.has(narInfoKey(lib.path)), false);
    assert.equal(ours.objects.has(narInfoKey(libc.path)), false);
    const mid = parseNarInfo(ours.objects.get(narInfoKey(infos.get('mid')!.path))!.body.toString(), dir);
    assert.deepEqual(mid.references.map((r) => r.name), ['lib'], 'the upstream reference stays in References');
    assert.equal(up.log.some((l) => l.op === 'get' && l.key === narInfoKey(libc.path)), false, 'a signed path needs no request');

    // A dry run reports the same split; --no-upstream (no filter) uploads everything.
    const dry = await uploadPaths(all, { backend: new MemoryBackend(), compression: { method: 'none' }, signingKeys: [], threads, jobs: 1, upstream: u, dryRun: true });
    assert.deepEqual(dry.upstream.map((i) => i.path.name).sort(), ['lib', 'libc']);
    assert.deepEqual(dry.wouldUpload.map((i) => i.path.name).sort(), ['mid', 'top']);
    const plain = await uploadPaths(all, { backend: new MemoryBackend(), compression: { method: 'none' }, signingKeys: [], threads, jobs: 1 });
    assert.equal(plain.uploaded.length, 4);
    assert.equal(plain.upstream.length, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('uploadPaths: with every upstream down, the whole closure is uploaded', async () => {
  const { dir, infos } = await makeStore(CHAIN);
  try {
    const u = new Upstream({ keyNames: [], caches: [failing()], storeDir: dir, answers: answers() });
    const report = await uploadPaths([...infos.values()], { backend: new MemoryBackend(), compression: { method: 'none' }, signingKeys: [], threads, jobs: 1, upstream: u });
    assert.equal(report.failed.length, 0);
    assert.equal(report.uploaded.length, 4);
    assert.equal(report.upstream.length, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
