// The uploader's half of the gc protocol, on the in-memory backend with a
// set clock: which narinfos an upload renews (refresh.ts), that a dry run
// renews nothing, and when the fence (gc-fence.ts) holds a narinfo back.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { GC_MARKER_PREFIX, GcFence, formatGcMarker } from '../../src/cache/gc-fence.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { makeStore } from '../cache/upload-fake-store.js';

const threads = new ThreadPool();
after(() => threads.close());
const DAY = 86_400_000;

async function setup() {
  const { infos } = await makeStore({ top: ['old', 'recent'], old: [], recent: [] }, 10);
  const backend = new MemoryBackend();
  let now = 0;
  backend.clock = () => new Date(now);
  const base = { backend, compression: { method: 'none' as const }, signingKeys: [], threads, jobs: 2 };
  await uploadPaths([infos.get('old')!], base);
  now = 5 * DAY;
  await uploadPaths([infos.get('recent')!], base);
  now = 6 * DAY;
  const gc = { refreshAgeMs: 2 * DAY, clock: () => new Date(now) };
  const time = (name: string) => backend.objects.get(narInfoKey(infos.get(name)!.path))?.lastModified.getTime();
  return { infos, backend, base, gc, time, all: [...infos.values()] };
}

test('an upload renews the narinfos it relies on that are older than the refresh age, and only those', async () => {
  const { backend, base, gc, time, all } = await setup();
  const r = await uploadPaths(all, { ...base, gc });
  assert.equal(r.uploaded.length, 1);
  assert.equal(time('old'), 6 * DAY, 'six days old: renewed');
  assert.equal(time('recent'), 5 * DAY, 'one day old: left alone');
  assert.deepEqual(backend.log.filter((o) => o.op === 'touch').length, 1);
});

test('a dry run renews nothing', async () => {
  const { base, gc, time, all } = await setup();
  await uploadPaths(all, { ...base, gc, dryRun: true });
  assert.equal(time('old'), 0);
});

test('a narinfo that vanished while being renewed is uploaded again', async () => {
  const { infos, backend, base, gc, all } = await setup();
  const oldKey = narInfoKey(infos.get('old')!.path);
  backend.gate = async (op, key) => {
    if (op === 'touch' && key === oldKey) backend.objects.delete(oldKey);
  };
  const r = await uploadPaths(all, { ...base, gc });
  assert.deepEqual(r.uploaded.map((u) => u.info.path.name).sort(), ['old', 'top']);
});

test('the fence: a collection that started or was running during an upload holds its narinfos back', async () => {
  const { infos, backend, base, gc, all } = await setup();
  const marker = (ended: boolean) => Buffer.from(formatGcMarker({ started: new Date(0), deadline: new Date(30 * DAY), ...(ended && { ended: new Date(DAY) }) }));
  // A collection that ended before the upload began is no conflict.
  await backend.putBytes(`${GC_MARKER_PREFIX}done.json`, marker(true), 'application/json');
  // One that starts while the NARs go up is.
  backend.gate = async (op, key) => {
    if (op === 'putBytes' && key.startsWith('nar/')) backend.objects.set(`${GC_MARKER_PREFIX}new.json`, { body: marker(false), contentType: 'application/json', lastModified: new Date() });
  };
  const r = await uploadPaths(all, { ...base, gc });
  assert.deepEqual(r.failed.map((f) => f.error.code), ['GC_CONFLICT']);
  assert.equal(backend.objects.has(narInfoKey(infos.get('top')!.path)), false);
  // Once it has ended (it is then in the first look), the next upload goes through.
  backend.gate = async () => {};
  backend.objects.set(`${GC_MARKER_PREFIX}new.json`, { body: marker(true), contentType: 'application/json', lastModified: new Date() });
  assert.equal((await uploadPaths(all, { ...base, gc })).uploaded.length, 1);
});

test("the fence: a running collection's marker counts until its deadline, plus the skew allowed", async () => {
  const backend = new MemoryBackend();
  let now = 0;
  await backend.putBytes(`${GC_MARKER_PREFIX}crashed.json`, Buffer.from(formatGcMarker({ started: new Date(0), deadline: new Date(1000) })), 'application/json');
  const fence = (skew: number) => new GcFence(backend, { clock: () => new Date(now), clockSkewMs: skew });
  now = 1500;
  const during = fence(1000);
  await during.open();
  assert.equal((await during.check())?.code, 'GC_CONFLICT');
  const past = fence(100);
  await past.open();
  assert.equal(await past.check(), undefined);
});
