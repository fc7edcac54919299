import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { closure, fetchClosure, sortByReferences } from '../../src/store/closure.js';
import { StoreClient } from '../../src/store/client.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { StorePath, parseStorePath } from '../../src/store/store-path.js';
import { sha256 } from '../../src/hash/hash.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import { nix, nixEnv } from '../helpers/nix.js';
import { storeTransportFromEnv } from '../../src/store/transport.js';
import { storeFixture } from './fixture.js';

function fakePath(i: number): StorePath {
  return new StorePath(nix32Encode(sha256(`p${i}`).digest.subarray(0, 20)), `p${i}`);
}

function fakeInfo(path: StorePath, references: StorePath[]): PathInfo {
  return {
    path,
    deriver: undefined,
    narHash: sha256(path.path),
    references: [...references].sort((a, b) => (a.baseName < b.baseName ? -1 : 1)),
    registrationTime: 0,
    narSize: 0,
    ultimate: false,
    sigs: [],
    ca: undefined,
  };
}

/** A random DAG over n paths: edges go from higher to lower index only; self-references allowed. */
const dag = fc.integer({ min: 1, max: 30 }).chain((n) =>
  fc
    .array(fc.tuple(fc.nat(n - 1), fc.nat(n - 1)), { maxLength: n * 3 })
    .map((edges) => {
      const paths = Array.from({ length: n }, (_, i) => fakePath(i));
      const refs = paths.map(() => new Set<number>());
      for (const [a, b] of edges) {
        if (a >= b) refs[a]!.add(b); // a > b: a refers to b; a == b: self-reference
      }
      return paths.map((p, i) => fakeInfo(p, [...refs[i]!].map((j) => paths[j]!)));
    }),
);

function assertReferencesFirst(order: readonly PathInfo[]): void {
  const position = new Map(order.map((info, i) => [info.path.baseName, i]));
  for (const [i, info] of order.entries()) {
    for (const r of info.references) {
      const j = position.get(r.baseName);
      if (j !== undefined) assert.ok(j <= i, `${r.baseName} must come before ${info.path.baseName}`);
    }
  }
}

test('property: every path comes after its references, each path exactly once', () => {
  fc.assert(
    fc.property(dag, (infos) => {
      const order = sortByReferences(infos);
      assert.equal(order.length, infos.length);
      assert.deepEqual(new Set(order.map((i) => i.path.baseName)), new Set(infos.map((i) => i.path.baseName)));
      assertReferencesFirst(order);
    }),
    { numRuns: 300 },
  );
});

test('property: the order does not depend on the order of the input', () => {
  fc.assert(
    fc.property(
      dag.chain((infos) => fc.tuple(fc.constant(infos), fc.shuffledSubarray(infos, { minLength: infos.length }))),
      ([infos, shuffled]) => {
        assert.deepEqual(
          sortByReferences(shuffled).map((i) => i.path.baseName),
          sortByReferences(infos).map((i) => i.path.baseName),
        );
      },
    ),
    { numRuns: 200 },
  );
});

test('property: fetchClosure finds exactly the reachable paths, with pipelined lookups', async () => {
  await fc.assert(
    fc.asyncProperty(dag, fc.nat(), async (infos, pick) => {
      const byName = new Map(infos.map((i) => [i.path.baseName, i]));
      const root = infos[pick % infos.length]!;
      const source = { queryPathInfo: async (p: StorePath) => byName.get(p.baseName) };
      const reachable = new Set<string>();
      const walk = (i: PathInfo): void => {
        if (reachable.has(i.path.baseName)) return;
        reachable.add(i.path.baseName);
        for (const r of i.references) walk(byName.get(r.baseName)!);
      };
      walk(root);
      const got = await closure(source, [root.path]);
      assert.deepEqual(new Set(got.map((i) => i.path.baseName)), reachable);
      assertReferencesFirst(got);
    }),
    { numRuns: 100 },
  );
});

test('a diamond: the shared path once, before both sides', () => {
  const [leaf, left, right, top] = [0, 1, 2, 3].map(fakePath) as [StorePath, StorePath, StorePath, StorePath];
  const order = sortByReferences([
    fakeInfo(top, [left, right, top]),
    fakeInfo(right, [leaf]),
    fakeInfo(left, [leaf]),
    fakeInfo(leaf, []),
  ]).map((i) => i.path);
  assert.equal(order.length, 4);
  assert.equal(order[0], leaf);
  assert.equal(order[3], top);
});

test('a reference cycle between two paths is an error', () => {
  const [a, b] = [fakePath(0), fakePath(1)];
  assert.throws(() => sortByReferences([fakeInfo(a, [b]), fakeInfo(b, [a])]), { code: 'STORE_CYCLE' });
});

test('a missing reference is an INVALID_PATH error naming the referrer', async () => {
  const [a, b] = [fakePath(0), fakePath(1)];
  const source = { queryPathInfo: async (p: StorePath) => (p.equals(a) ? fakeInfo(a, [b]) : undefined) };
  await assert.rejects(fetchClosure(source, [a]), {
    code: 'INVALID_PATH',
    message: new RegExp(`path '${b.path}' is not valid \\(it is a reference of '${a.path}'`),
  });
});

test("on a real closure: the paths of nix-store -qR, in the order of nix path-info -r", async () => {
  const fx = await storeFixture();
  const client = await StoreClient.open({ transport: storeTransportFromEnv(nixEnv({ NIX_REMOTE: 'local' })) });
  try {
    const got = await closure(client, [parseStorePath(fx.top)]);
    const nixOrder = (await nix('nix', ['path-info', '-r', fx.top])).toString().trim().split('\n');
    assert.deepEqual(got.map((i) => i.path.path), nixOrder);
    const qR = (await nix('nix-store', ['-qR', fx.top])).toString().trim().split('\n').sort();
    assert.deepEqual(got.map((i) => i.path.path).sort(), qR);
    assertReferencesFirst(got);
  } finally {
    await client.close();
  }
});
