// A whole collection on the in-memory backend: its marker (written before the
// listing, ended after the last delete), a stop by signal (nothing deleted
// after it, the end still recorded), and the deadline.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { uploadPaths } from '../../src/cache/upload.js';
import { GC_MARKER_PREFIX, parseGcMarker } from '../../src/cache/gc-fence.js';
import { collectGarbage } from '../../src/gc/gc.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { memoryInvariantViolations } from '../helpers/cache-invariant.js';
import { makeStore } from '../cache/upload-fake-store.js';

const threads = new ThreadPool();
after(() => threads.close());
const DAY = 86_400_000;

async function oldCache(): Promise<{ backend: MemoryBackend; setNow: (t: number) => void }> {
  const { infos } = await makeStore({ a: ['b'], b: ['c'], c: [], d: [] }, 10);
  const backend = new MemoryBackend();
  let now = 0;
  backend.clock = () => new Date(now);
  await uploadPaths([...infos.values()], { backend, compression: { method: 'none' }, signingKeys: [], threads, jobs: 2 });
  return { backend, setNow: (t) => (now = t) };
}

function markers(backend: MemoryBackend) {
  return [...backend.objects].filter(([k]) => k.startsWith(GC_MARKER_PREFIX)).map(([, o]) => parseGcMarker(o.body.toString())!);
}

test('a collection announces itself before listing and records its end after its last delete', async () => {
  const { backend, setNow } = await oldCache();
  setNow(10 * DAY);
  const order: string[] = [];
  backend.gate = async (op, key) => void order.push(`${op} ${key.split(' ')[0]}`);
  const r = await collectGarbage(backend, { keepSinceMs: DAY, clock: () => new Date(10 * DAY) });
  assert.equal(r.narinfos, 4);
  assert.match(order[0]!, /^putBytes narpush-gc\//);
  assert.match(order[order.length - 1]!, /^putBytes narpush-gc\//);
  assert.ok(order.findIndex((o) => o.startsWith('list')) > 0);
  const [m] = markers(backend);
  assert.ok(m?.ended, 'ended');
  assert.deepEqual([...backend.objects.keys()].filter((k) => !k.startsWith(GC_MARKER_PREFIX)), []);
});

test('a stop by signal sends no delete after it, leaves the cache sound and still records the end', async () => {
  const { backend, setNow } = await oldCache();
  setNow(10 * DAY);
  const stop = new AbortController();
  let deletes = 0;
  backend.gate = async (op) => {
    if (op === 'delete' && ++deletes === 1) stop.abort();
  };
  const r = await collectGarbage(backend, { keepSinceMs: DAY, clock: () => new Date(10 * DAY), signal: stop.signal, jobs: 1 });
  assert.equal(r.timedOut, true);
  assert.equal(deletes, 1, 'the batch in flight settles; no other is sent');
  assert.deepEqual(memoryInvariantViolations(backend.objects), []);
  assert.ok(markers(backend)[0]?.ended, 'ended');
});

test('past its deadline a collection sends no delete at all', async () => {
  const { backend, setNow } = await oldCache();
  let now = 10 * DAY;
  setNow(now);
  const before = backend.objects.size;
  backend.gate = async (op) => {
    if (op === 'list') now += 2 * 3600_000;
  };
  const r = await collectGarbage(backend, { keepSinceMs: DAY, clock: () => new Date(now), timeLimitMs: 3600_000 });
  assert.equal(r.timedOut, true);
  assert.equal(r.freed.objects, 0);
  assert.equal(backend.objects.size, before + 1, 'only the marker was added');
});
