// Uploaders and collectors racing on one cache (the in-memory backend), with
// fast-check's scheduler choosing the order in which every backend operation
// takes effect and a virtual clock advancing at each one. The invariant (each
// narinfo's NAR and reference narinfos exist) is checked before every
// operation and at the end. Without the refresh, or without the fence, the
// same property must find a counterexample.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { uploadPaths } from '../../src/cache/upload.js';
import { GC_MARKER_PREFIX } from '../../src/cache/gc-fence.js';
import { collectGarbage } from '../../src/gc/gc.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { memoryInvariantViolations } from '../helpers/cache-invariant.js';
import { makeStore } from '../cache/upload-fake-store.js';

const threads = new ThreadPool();
after(() => threads.close());

// Virtual milliseconds. A run has at most ~300 operations of at most STEP each, so
// every upload is shorter than KEEP - REFRESH and than GRACE, as the design requires.
const STEP = 2;
const KEEP = 1000;
const REFRESH = 400;
const GRACE = 650;

// top -> mid -> base, side -> base; lone alone.
const GRAPH = { top: ['mid'], mid: ['base'], base: [], side: ['base'], lone: [], other: ['lone'] };
const NAMES = Object.keys(GRAPH) as (keyof typeof GRAPH)[];

function closure(infos: Map<string, PathInfo>, roots: readonly string[]): PathInfo[] {
  const seen = new Map<string, PathInfo>();
  const visit = (name: string): void => {
    const info = infos.get(name)!;
    if (seen.has(name)) return;
    seen.set(name, info);
    for (const r of GRAPH[name as keyof typeof GRAPH]) visit(r);
  };
  roots.forEach(visit);
  return [...seen.values()];
}

interface Variant {
  readonly refresh: boolean;
  readonly fence: boolean;
  /** Start from a cache whose every path is older than KEEP (where the dangers are), with one collector. */
  readonly oldCache?: boolean;
}

async function raceProperty(variant: Variant, numRuns: number, seed?: number): Promise<void> {
  const { infos } = await makeStore(GRAPH, 10);
  const pick = fc.subarray([...NAMES], { minLength: 1 });
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      // What was uploaded before, and when (virtual time), then where the clock starts.
      fc.array(fc.record({ roots: pick, at: fc.integer({ min: 0, max: 3000 }) }), { minLength: 1, maxLength: 3 }),
      fc.integer({ min: 0, max: 3000 }),
      fc.array(pick, { minLength: 1, maxLength: 2 }),
      fc.integer({ min: 1, max: 2 }),
      fc.array(fc.integer({ min: 0, max: STEP }), { minLength: 1, maxLength: 20 }),
      fc.constantFrom(1, 3, 1000),
      // How many scheduler steps each actor waits before it starts (uploads first, then collectors).
      fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 30 })),
      async (s, seeds, start, uploads, collectors, steps, listPage, delays) => {
        const backend = new MemoryBackend();
        backend.listPage = listPage;
        let now = 0;
        backend.clock = () => new Date(now);
        const base = { backend, compression: { method: 'none' as const }, signingKeys: [], threads, jobs: 2 };
        if (variant.oldCache) {
          seeds = [{ roots: ['mid', 'lone'], at: 0 }];
          start = KEEP + (start % 500);
          collectors = 1;
        }
        for (const seed of [...seeds].sort((a, b) => a.at - b.at)) {
          now = seed.at;
          await uploadPaths(closure(infos, seed.roots), base);
        }
        now = Math.max(now, start);
        const violations: string[] = [];
        let k = 0;
        backend.gate = async (op, key) => {
          for (const v of memoryInvariantViolations(backend.objects)) violations.push(`before ${op} ${key} at ${now}: ${v}`);
          await s.schedule(Promise.resolve(), `${op} ${key}`);
          now += steps[k++ % steps.length]!;
        };
        const gc = {
          clock: () => new Date(now),
          ...(variant.refresh && { refreshAgeMs: REFRESH }),
          // A skew below minus all time disables the fence.
          clockSkewMs: variant.fence ? 0 : -1e15,
        };
        const later = async <T>(n: number, run: () => Promise<T>): Promise<T> => {
          for (let i = 0; i < n; i++) await s.schedule(Promise.resolve(), 'idle');
          return run();
        };
        const actors = [
          ...uploads.map((roots, i) => later(delays[i]!, () => uploadPaths(closure(infos, roots), { ...base, gc }))),
          ...Array.from({ length: collectors }, (_, i) =>
            later(delays[2 + i]!, () => collectGarbage(backend, { keepSinceMs: KEEP, graceMs: GRACE, clock: () => new Date(now), jobs: 2 })),
          ),
        ];
        let settled = false;
        const all = Promise.allSettled(actors).then((r) => ((settled = true), r));
        while (!settled) {
          if (s.count() > 0) await s.waitOne();
          else await new Promise((r) => setImmediate(r));
        }
        for (const r of await all) if (r.status === 'rejected') throw r.reason;
        violations.push(...memoryInvariantViolations(backend.objects).map((v) => `at the end: ${v}`));
        if (violations.length > 0) throw new Error(violations.join('\n'));
      },
    ),
    { numRuns, ...(seed !== undefined && { seed }) },
  );
}

test('uploads and collections in any order never leave a narinfo without its NAR or references', async () => {
  await raceProperty({ refresh: true, fence: true }, 1000);
  await raceProperty({ refresh: true, fence: true, oldCache: true }, 500);
});

/** The property fails, and for the reason checked (not an error of the test itself). */
async function findsViolation(run: Promise<void>): Promise<void> {
  await assert.rejects(run, (e: Error) => {
    const why = String((e.cause as Error | undefined)?.message ?? e.message);
    assert.match(why, /(its reference|its NAR) .* is missing/);
    return true;
  });
}

test('without the refresh, the same race finds a narinfo whose reference was collected', async () => {
  await findsViolation(raceProperty({ refresh: false, fence: true, oldCache: true }, 3000));
});

test('without the fence, the same race finds a narinfo whose reference was collected', async () => {
  await findsViolation(raceProperty({ refresh: true, fence: false, oldCache: true }, 3000));
});
