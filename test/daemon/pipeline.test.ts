// The daemon's upload function against the real Nix store and an in-memory
// cache: a .drv resolves to its outputs, the whole closure goes up, a failing
// dependency fails its dependents with the dependency's own error, and paths
// that left the store are dropped. Also the store handle's reconnection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createPipeline, type PipelineOptions } from '../../src/daemon/pipeline.js';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { StoreHandle } from '../../src/daemon/store-handle.js';
import type { PathOutcome, PipelineEvent } from '../../src/daemon/worker.js';
import { NarpushError } from '../../src/errors.js';
import { nixPathInfos } from '../helpers/cache-check.js';
import { parseHash } from '../../src/hash/hash.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import { StoreClient } from '../../src/store/client.js';
import { storeTransportFromEnv } from '../../src/store/transport.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { nix, nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { fakePath } from './fakes.js';

async function buildPair(): Promise<{ top: string; dep: string; drv: string }> {
  const salt = randomUUID();
  const [top] = await nixBuildExpr(`let dep = lib.mk { name = "np-pipe-dep"; salt = "${salt}"; script = "mkdir $out; echo dep > $out/f"; };
    in lib.mk { name = "np-pipe-top"; salt = "${salt}"; script = "mkdir $out; echo \${dep} > $out/dep"; }`);
  const refs = (await nix('nix-store', ['-q', '--references', top!])).toString().trim().split('\n');
  const drv = (await nix('nix-store', ['-q', '--deriver', top!])).toString().trim();
  return { top: top!, dep: refs.find((r) => r.endsWith('-np-pipe-dep'))!, drv };
}

function pipelineFor(backend: MemoryBackend, more: Partial<PipelineOptions> = {}) {
  return createPipeline({
    storeDir: '/nix/store',
    openStore: () => StoreClient.open({ transport: storeTransportFromEnv(nixEnv()) }),
    backend,
    cacheInfo: { storeDir: '/nix/store', wantMassQuery: true },
    compression: { method: 'none' },
    signingKeys: [],
    jobs: 2,
    ...more,
  });
}

test('a .drv (as Nix 2.8.0 sends it) uploads its outputs with their closure; present paths are skipped next time', async () => {
  const { top, dep, drv } = await buildPair();
  const backend = new MemoryBackend();
  const pipeline = pipelineFor(backend);
  try {
    const events: PipelineEvent[] = [];
    const out = await pipeline.upload([drv], { signal: new AbortController().signal, onEvent: (e) => events.push(e) });
    assert.deepEqual(out.get(drv), { kind: 'done' } satisfies PathOutcome);
    for (const p of [top, dep]) assert.ok(backend.objects.has(`${p.slice(11, 43)}.narinfo`), `${p} in the cache`);
    assert.ok(backend.objects.has('nix-cache-info'));
    assert.deepEqual(events.filter((e) => e.type === 'uploaded').map((e) => e.path).sort(), [dep, top].sort());
    const again: PipelineEvent[] = [];
    const out2 = await pipeline.upload([top], { signal: new AbortController().signal, onEvent: (e) => again.push(e) });
    assert.deepEqual(out2.get(top), { kind: 'done' });
    assert.deepEqual(again.map((e) => e.type), ['skipped', 'skipped']);
  } finally {
    await pipeline.close();
  }
});

test('large NARs go whole to worker threads, one alone and however small, so that the daemon\'s own thread stays free for the hook', async (t) => {
  const salt = randomUUID();
  // Two NARs of 1 MiB: over the in-memory size, far under upload-path's WHOLE_MIN_BYTES.
  const [top] = await nixBuildExpr(`let big = i: lib.mk { name = "np-pipe-big-\${toString i}"; salt = "${salt}"; script = "head -c 1048576 /dev/urandom > $out"; };
    in lib.mk { name = "np-pipe-bigs"; salt = "${salt}"; script = "mkdir $out; echo \${big 1} \${big 2} > $out/refs"; }`);
  const threads = new ThreadPool({ maxThreads: 2 });
  t.after(() => threads.close());
  const backend = new MemoryBackend();
  const pipeline = pipelineFor(backend, { compression: { method: 'zstd' }, threads });
  try {
    const out = await pipeline.upload([top!], { signal: new AbortController().signal, onEvent: () => {} });
    assert.deepEqual(out.get(top!), { kind: 'done' });
    assert.equal([...backend.objects.keys()].filter((k) => k.endsWith('.narinfo')).length, 3);
    assert.equal(threads.running, 2, 'one worker thread a core: the NARs went whole to them');
    // One large NAR alone goes whole too (upload-path would produce it on its own thread).
    const [one] = await nixBuildExpr(`lib.mk { name = "np-pipe-one"; salt = "${salt}"; script = "head -c 1048576 /dev/urandom > $out"; }`);
    const alone = new ThreadPool({ maxThreads: 2 });
    t.after(() => alone.close());
    const single = pipelineFor(new MemoryBackend(), { compression: { method: 'zstd' }, threads: alone });
    try {
      assert.deepEqual((await single.upload([one!], { signal: new AbortController().signal, onEvent: () => {} })).get(one!), { kind: 'done' });
      assert.equal(alone.running, 1, 'one NAR, one worker thread');
    } finally {
      await single.close();
    }
  } finally {
    await pipeline.close();
  }
  assert.equal(threads.running, 2, "the caller's threads are the caller's to close");
});

test("a dependency's failure fails the queued path with the dependency's error; invalid paths are dropped", async () => {
  const { top, dep } = await buildPair();
  const info = (await nixPathInfos([dep])).get(dep)!;
  const depNar = `nar/${nix32Encode(parseHash(info.narHash).digest)}.nar`;
  const backend = new MemoryBackend();
  backend.failPut = (key) => key === depNar;
  const pipeline = pipelineFor(backend);
  try {
    const gone = fakePath('never-built');
    const out = await pipeline.upload([top, gone], { signal: new AbortController().signal, onEvent: () => {} });
    const o = out.get(top);
    assert.equal(o?.kind, 'failed');
    assert.match((o as { error: string }).error, new RegExp(`injected failure for ${depNar}`), 'the cause, not "a reference failed"');
    assert.equal(backend.objects.has(`${top.slice(11, 43)}.narinfo`), false, 'no narinfo for a path whose dependency is missing');
    assert.equal(out.get(gone)?.kind, 'dropped');
    // Once the cache works again, the retry completes it.
    backend.failPut = () => false;
    const retry = await pipeline.upload([top], { signal: new AbortController().signal, onEvent: () => {} });
    assert.deepEqual(retry.get(top), { kind: 'done' });
  } finally {
    await pipeline.close();
  }
});

test('StoreHandle: opens lazily, drops a broken connection, retries idempotent queries once, keeps answers that are errors', async () => {
  let opened = 0;
  let closed = 0;
  const fake = () => {
    opened++;
    return Promise.resolve({ id: opened, close: async () => void closed++ } as unknown as StoreClient);
  };
  const h = new StoreHandle(fake);
  assert.equal(opened, 0);
  const id = (s: StoreClient) => (s as unknown as { id: number }).id;
  assert.equal(await h.use(async (s) => id(s)), 1);
  assert.equal(await h.use(async (s) => id(s)), 1, 'kept open');
  let calls = 0;
  const r = await h.use(
    async (s) => {
      calls++;
      if (calls === 1) throw new NarpushError('STORE_CONNECTION_CLOSED', 'the Nix daemon went away');
      return id(s);
    },
    { retry: true },
  );
  assert.equal(r, 2, 'retried on a fresh connection');
  assert.equal(closed, 1, 'the broken one was closed');
  await assert.rejects(h.use(async () => Promise.reject(new NarpushError('INVALID_PATH', 'not valid'))), /not valid/);
  assert.equal(await h.use(async (s) => id(s)), 2, 'an error answer does not cost the connection');
  await h.reset();
  assert.equal(await h.use(async (s) => id(s)), 3, 'reset: a fresh connection next time');
  await h.close();
  assert.equal(closed, 3);
});
