// The upload pipeline's ordering guarantees, checked on a log of what the
// backend did and when, for random reference graphs with random failures:
//  (a) a narinfo becomes visible only after its NAR is complete and durable;
//  (b) ... only after the narinfos of all its references are visible;
//  (c) `uploaded` is reported only once the narinfo is durable;
//  and a failed path (or one above a failed path) is never published.
// Run against the file:// backend (which stages narinfos: visibility and
// durability are separate steps) and against a backend without staging.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import type { CacheBackend, ListedObject, PutStreamOptions, SmallObject, StagedObject } from '../../src/cache/backend.js';
import { FileBackend, TEMP_MARKER } from '../../src/cache/file-backend.js';
import { narKey } from '../../src/cache/nar-upload.js';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import { newSecretKey } from '../../src/signing/keys.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { makeStore } from './upload-fake-store.js';

// This file's worker threads, as a command's edge owns them.
const threads = new ThreadPool();
after(() => threads.close());

/**
 * A backend that passes everything to `inner` and logs, in order, when each
 * put finished (`put-done`), when each narinfo started and finished becoming
 * visible (`show-start`, `show-done`) and became durable (`durable`). With
 * `staging` off it hides the inner backend's stageBatch, so the pipeline
 * falls back to putBytes (visible and durable at once, as on S3).
 */
class RecordingBackend implements CacheBackend {
  readonly description = 'recording';
  readonly log: string[] = [];
  stageBatch?: (objects: readonly SmallObject[]) => Promise<PromiseSettledResult<StagedObject>[]>;

  constructor(
    private readonly inner: CacheBackend,
    staging: boolean,
    private readonly failKey: (key: string) => boolean = () => false,
  ) {
    if (staging && inner.stageBatch) {
      const stage = inner.stageBatch.bind(inner);
      this.stageBatch = async (objects) => {
        const failing = objects.filter((o) => this.failKey(o.key));
        const staged = await stage(objects.filter((o) => !this.failKey(o.key)));
        return objects.map((o): PromiseSettledResult<StagedObject> => {
          if (failing.includes(o)) return { status: 'rejected', reason: new Error(`injected failure staging ${o.key}`) };
          const r = staged.shift()!;
          if (r.status === 'rejected') return r;
          const s = r.value;
          const narinfo = o.key.endsWith('.narinfo');
          return {
            status: 'fulfilled',
            value: {
              publish: async () => {
                if (narinfo) this.log.push(`show-start ${o.key}`);
                await s.publish();
                if (narinfo) this.log.push(`show-done ${o.key}`);
              },
              // A NAR is stored once it is durable.
              durable: async () => {
                await s.durable();
                this.log.push(narinfo ? `durable ${o.key}` : `put-done ${o.key}`);
              },
              discard: () => s.discard(),
            },
          };
        });
      };
    }
  }

  get(key: string): Promise<Buffer | undefined> {
    return this.inner.get(key);
  }

  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }

  list(prefix: string): AsyncIterable<ListedObject> {
    return this.inner.list(prefix);
  }

  async putBytes(key: string, body: Uint8Array, contentType: string): Promise<void> {
    if (this.failKey(key)) throw new Error(`injected failure for ${key}`);
    const narinfo = key.endsWith('.narinfo');
    if (narinfo) this.log.push(`show-start ${key}`);
    await this.inner.putBytes(key, body, contentType);
    this.log.push(narinfo ? `show-done ${key}` : `put-done ${key}`);
    if (narinfo) this.log.push(`durable ${key}`);
  }

  async putStream(key: string, body: AsyncIterable<Uint8Array>, contentType: string, opts?: PutStreamOptions): Promise<{ bytes: number }> {
    if (this.failKey(key)) throw new Error(`injected failure for ${key}`);
    const r = await this.inner.putStream(key, body, contentType, opts);
    this.log.push(`put-done ${key}`);
    return r;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Check (a), (b), (c) and the failure rules on one run's log. */
function checkOrder(
  log: readonly string[],
  infos: readonly PathInfo[],
  failing: ReadonlySet<string>,
  report: Awaited<ReturnType<typeof uploadPaths>>,
): void {
  const at = (entry: string): number => log.indexOf(entry);
  const byName = new Map(infos.map((i) => [i.path.baseName, i]));
  // Expected failures: the failing paths, and everything that refers to one, transitively.
  const fails = new Map<string, boolean>();
  const shouldFail = (i: PathInfo): boolean => {
    let f = fails.get(i.path.baseName);
    if (f === undefined) {
      fails.set(i.path.baseName, false);
      f = failing.has(i.path.name) || i.references.some((r) => !r.equals(i.path) && shouldFail(byName.get(r.baseName)!));
      fails.set(i.path.baseName, f);
    }
    return f;
  };
  const uploaded = new Set(report.uploaded.map((u) => u.info.path.baseName));
  const failed = new Set(report.failed.map((f) => f.info.path.baseName));
  for (const info of infos) {
    const key = narInfoKey(info.path);
    if (shouldFail(info)) {
      assert.ok(failed.has(info.path.baseName) && !uploaded.has(info.path.baseName), `${info.path.name} failed`);
      assert.equal(at(`show-start ${key}`), -1, `${info.path.name} was never shown`);
      continue;
    }
    assert.ok(uploaded.has(info.path.baseName), `${info.path.name} uploaded`);
    const shown = at(`show-start ${key}`);
    assert.ok(shown >= 0);
    const nar = at(`put-done ${narKey(info.narHash, 'zstd')}`);
    assert.ok(nar >= 0 && nar < shown, `(a) ${info.path.name}: narinfo shown after its NAR was stored`);
    for (const r of info.references) {
      if (r.equals(info.path)) continue;
      const refShown = at(`show-done ${narInfoKey(r)}`);
      assert.ok(refShown >= 0 && refShown < shown, `(b) ${info.path.name} shown after its reference ${r.name}`);
    }
    const durable = at(`durable ${key}`);
    const reported = at(`uploaded ${info.path.baseName}`);
    assert.ok(durable > shown && reported > durable, `(c) ${info.path.name} reported uploaded after it was durable`);
  }
}

/** A random DAG of `n` paths: path i may refer to itself and to any path before it. */
const dag = (n: number): fc.Arbitrary<Record<string, string[]>> =>
  fc.tuple(...Array.from({ length: n }, (_, i) => fc.tuple(fc.subarray(Array.from({ length: i }, (_, j) => `p${j}`), { maxLength: Math.min(i, 3) }), fc.boolean()))).map(
    (nodes) => Object.fromEntries(nodes.map(([refs, self], i) => [`p${i}`, self ? [...refs, `p${i}`] : refs])),
  );

for (const staging of [true, false]) {
  test(`ordering holds on random graphs with random failures (${staging ? 'file://, staged narinfos' : 'no staging, as on S3'})`, async () => {
    const key = newSecretKey('order-1');
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }).chain((n) => fc.tuple(dag(n), fc.subarray(Array.from({ length: n }, (_, i) => `p${i}`), { maxLength: Math.min(n, 2) }))),
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom('nar', 'narinfo'),
        fc.array(fc.nat(), { minLength: 12, maxLength: 12 }),
        fc.integer({ min: 1, max: 5 }),
        async ([refs, failingNames], jobs, failWhat, rank, batchPaths) => {
          const { dir, infos } = await makeStore(refs, 200);
          const cache = await mkdtemp(path.join(tmpdir(), 'narpush-order-'));
          try {
            // Any input order must give a safe order of publication.
            const at = (i: PathInfo): number => rank[Number(i.path.name.slice(1))]!;
            const all = [...infos.values()].sort((x, y) => at(x) - at(y));
            const failing = new Set(failingNames);
            const failKeys = new Set(
              all
                .filter((i) => failing.has(i.path.name))
                .map((i) => (failWhat === 'nar' ? narKey(i.narHash, 'zstd') : narInfoKey(i.path))),
            );
            // Distinct paths here have distinct NARs (random data), so a failing NAR key fails one path.
            const inner = staging ? new FileBackend(cache) : new MemoryBackend();
            const backend = new RecordingBackend(inner, staging, (k) => failKeys.has(k));
            const report = await uploadPaths(all, {
              backend,
              compression: { method: 'zstd' },
              signingKeys: [key],
              threads,
              jobs,
              batchPaths,
              onEvent: (e) => {
                if (e.type === 'uploaded') backend.log.push(`uploaded ${e.info.path.baseName}`);
              },
            });
            checkOrder(backend.log, all, failing, report);
            if (staging) {
              const left = (await readdir(cache, { recursive: true })).filter((f) => String(f).includes(TEMP_MARKER));
              assert.deepEqual(left, [], 'no temporary files left');
              for (const u of report.uploaded) {
                const text = await backend.get(narInfoKey(u.info.path));
                assert.equal(parseNarInfo(text!.toString(), dir).url, u.nar.url);
              }
            }
          } finally {
            await rm(dir, { recursive: true, force: true });
            await rm(cache, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 25 },
    );
  });
}

test('a deep chain on file:// publishes in order, and each narinfo is durable before it is reported', async () => {
  // Like the benchmark's closure: each path refers to the two before it.
  const refs: Record<string, string[]> = {};
  for (let i = 0; i < 60; i++) refs[`c${i}`] = [i >= 1 ? `c${i - 1}` : '', i >= 2 ? `c${i - 2}` : ''].filter(Boolean);
  const { dir, infos } = await makeStore(refs, 100);
  const cache = await mkdtemp(path.join(tmpdir(), 'narpush-order-'));
  try {
    const backend = new RecordingBackend(new FileBackend(cache), true);
    const all = [...infos.values()].reverse(); // the worst input order
    const report = await uploadPaths(all, {
      backend,
      compression: { method: 'zstd' },
      signingKeys: [],
      threads,
      jobs: 4,
      onEvent: (e) => {
        if (e.type === 'uploaded') backend.log.push(`uploaded ${e.info.path.baseName}`);
      },
    });
    assert.equal(report.failed.length, 0, report.failed.map((f) => f.error.message).join('; '));
    checkOrder(backend.log, all, new Set(), report);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }
});
