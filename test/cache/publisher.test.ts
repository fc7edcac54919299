// The publisher (src/cache/publisher.ts) against its invariant, alone: fed
// step-1 completions and failures in random orders for random reference
// graphs (some references already in the cache, served upstream, or
// missing), with fast-check's scheduler choosing when every publish,
// durable, discard and fence check completes. After every step:
//  - a narinfo is shown (publish called) only after its NAR is done and the
//    narinfos of all its references are shown (or the reference is
//    available without this upload);
//  - a path is reported uploaded only once its narinfo is durable;
//  - a path whose reference failed is never shown (failures propagate).
// At the end every path has ended exactly once, as predicted from the graph.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { StagedObject } from '../../src/cache/backend.js';
import type { UploadedNar } from '../../src/cache/nar-upload.js';
import { Publisher } from '../../src/cache/publisher.js';
import { NarpushError } from '../../src/errors.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { StorePath } from '../../src/store/store-path.js';
import { monotonicMs } from '../../src/clock.js';

/** What a path is to the publisher: uploaded by it, or judged by `available` (in the cache, upstream, absent). */
type Kind = 'upload' | 'present' | 'upstream' | 'absent';

interface Node {
  readonly refs: readonly number[];
  readonly kind: Kind;
  /** For uploaded paths: whether step 1 (NAR, narinfo staged), publish and durable succeed. */
  readonly nar: boolean;
  readonly publish: boolean;
  readonly durable: boolean;
}

const nodeArb = (i: number): fc.Arbitrary<Node> =>
  fc.record({
    // Earlier paths only (a DAG), and sometimes itself, as Nix allows.
    refs: fc.tuple(fc.subarray(Array.from({ length: i }, (_, j) => j), { maxLength: Math.min(i, 3) }), fc.boolean()).map(([rs, self]) => (self ? [...rs, i] : rs)),
    kind: fc.constantFrom<Kind>('upload', 'upload', 'upload', 'upload', 'present', 'upstream', 'absent'),
    nar: fc.constantFrom(true, true, true, false),
    publish: fc.constantFrom(true, true, true, true, false),
    durable: fc.constantFrom(true, true, true, true, false),
  });

const graphArb = fc.integer({ min: 1, max: 12 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => nodeArb(i))));

function storePath(i: number): StorePath {
  return new StorePath(nix32Encode(createHash('sha1').update(`publisher-${i}`).digest()), `p${i}`);
}

function pathInfo(i: number, node: Node): PathInfo {
  return {
    path: storePath(i),
    deriver: undefined,
    narHash: { algo: 'sha256', digest: Buffer.alloc(32, i) },
    references: node.refs.map(storePath),
    registrationTime: 0,
    narSize: 100,
    ultimate: true,
    sigs: [],
    ca: undefined,
  };
}

function fakeNar(i: number): UploadedNar {
  const hash = { algo: 'sha256' as const, digest: Buffer.alloc(32, i) };
  return { url: `nar/${i}.nar`, compression: 'none', fileHash: hash, fileSize: 100, narHash: hash, narSize: 100 };
}

/** The fence's answers for a whole run: never a collector, always one, or markers that cannot be read. */
type FenceMode = 'clear' | 'conflict' | 'unreadable';

test('the publisher shows a narinfo only after its NAR and its references, and failures propagate', async () => {
  await fc.assert(
    fc.asyncProperty(graphArb, fc.constantFrom<FenceMode>('clear', 'clear', 'clear', 'conflict', 'unreadable'), fc.scheduler(), async (nodes, fenceMode, s) => {
      const infos = nodes.map((node, i) => pathInfo(i, node));
      const index = new Map(infos.map((info, i) => [info.path.baseName, i]));
      const uploads = nodes.flatMap((node, i) => (node.kind === 'upload' ? [i] : []));
      const fed = new Set<number>();
      const publishing = new Set<number>();
      const shown = new Set<number>();
      const durable = new Set<number>();
      const discarded = new Set<number>();
      const uploaded = new Set<number>();
      const failed = new Map<number, NarpushError>();
      const violations: string[] = [];
      const ended = (i: number): void => {
        if (uploaded.has(i) || failed.has(i)) violations.push(`p${i} ended twice`);
      };
      const refShown = (i: number, r: number): boolean => r === i || (nodes[r]!.kind === 'upload' ? shown.has(r) : nodes[r]!.kind !== 'absent');

      const publisher = new Publisher(
        uploads.map((i) => infos[i]!),
        {
          available: (ref) => {
            const r = index.get(ref.baseName)!;
            assert.notEqual(nodes[r]!.kind, 'upload', `available asked about p${r}, which is being uploaded`);
            return nodes[r]!.kind === 'present' || nodes[r]!.kind === 'upstream';
          },
          fence: {
            check: () =>
              s.schedule(Promise.resolve(), 'fence').then(() => {
                if (fenceMode === 'unreadable') throw new Error('cannot list the markers');
                return fenceMode === 'conflict' ? new NarpushError('GC_CONFLICT', 'a collector ran') : undefined;
              }),
          },
          onUploaded: ({ info }) => {
            const i = index.get(info.path.baseName)!;
            if (!durable.has(i)) violations.push(`p${i} reported uploaded before it was durable`);
            ended(i);
            uploaded.add(i);
          },
          onFailed: (info, error) => {
            const i = index.get(info.path.baseName)!;
            ended(i);
            failed.set(i, error);
          },
        },
      );

      const staged = (i: number): StagedObject => ({
        publish: async () => {
          if (!fed.has(i)) violations.push(`p${i} shown before its NAR was done`);
          for (const r of nodes[i]!.refs) if (!refShown(i, r)) violations.push(`p${i} shown before its reference p${r}`);
          publishing.add(i);
          await s.schedule(Promise.resolve(), `publish p${i}`);
          if (!nodes[i]!.publish) throw new Error(`injected: publishing p${i}`);
          shown.add(i);
        },
        durable: async () => {
          if (!shown.has(i)) violations.push(`p${i} made durable before it was shown`);
          await s.schedule(Promise.resolve(), `durable p${i}`);
          if (!nodes[i]!.durable) throw new Error(`injected: syncing p${i}`);
          durable.add(i);
        },
        discard: async () => {
          if (publishing.has(i)) violations.push(`p${i} discarded after publishing`);
          discarded.add(i);
          await s.schedule(Promise.resolve(), `discard p${i}`);
        },
      });

      // Step 1 ends for each uploaded path at a moment the scheduler picks.
      const ends: Promise<void>[] = [];
      for (const i of uploads) {
        void s.schedule(Promise.resolve(), `step 1 p${i}`).then(() => {
          if (!nodes[i]!.nar) return publisher.failed(infos[i]!, new NarpushError('UPLOAD_FAILED', `injected: NAR of p${i}`));
          fed.add(i);
          ends.push(publisher.staged(infos[i]!, { nar: fakeNar(i), staged: staged(i) }, monotonicMs()));
        });
      }

      const check = (): void => {
        assert.deepEqual(violations, []);
        // A path is shown only if everything below it is.
        for (const i of shown) for (const r of nodes[i]!.refs) assert.ok(refShown(i, r), `p${i} shown, its reference p${r} not`);
      };
      for (;;) {
        // Let the publisher run until it waits on something the scheduler holds.
        await new Promise((resolve) => setImmediate(resolve));
        check();
        if (s.count() === 0) break;
        await s.waitNext(1);
      }
      await Promise.all(ends);
      check();

      // Which paths end shown, and uploaded, follows from the graph alone.
      const expectShown = new Map<number, boolean>();
      const willShow = (i: number): boolean => {
        let v = expectShown.get(i);
        if (v === undefined) {
          const n = nodes[i]!;
          v = fenceMode === 'clear' && n.nar && n.publish && n.refs.every((r) => r === i || (nodes[r]!.kind === 'upload' ? willShow(r) : nodes[r]!.kind !== 'absent'));
          expectShown.set(i, v);
        }
        return v;
      };
      for (const i of uploads) {
        const n = nodes[i]!;
        assert.equal(shown.has(i), willShow(i), `p${i} shown`);
        assert.equal(uploaded.has(i), willShow(i) && n.durable, `p${i} uploaded`);
        assert.equal(failed.has(i), !uploaded.has(i), `p${i} failed`);
        // A staged narinfo that is not shown is discarded, not left behind.
        assert.equal(discarded.has(i), n.nar && !publishing.has(i), `p${i} discarded`);
        const refFailed = n.refs.some((r) => r !== i && !refShown(i, r));
        if (n.nar && refFailed) assert.equal(failed.get(i)?.code, 'REFERENCE_MISSING', `p${i}: ${failed.get(i)?.message}`);
      }
      assert.equal(uploaded.size + failed.size, uploads.length, 'every path ended');
    }),
    { numRuns: 300 },
  );
});

test('an unreadable fence fails the path with its own message, naming it', async () => {
  const node: Node = { refs: [], kind: 'upload', nar: true, publish: true, durable: true };
  const info = pathInfo(0, node);
  const failures: NarpushError[] = [];
  let published = false;
  const publisher = new Publisher([info], {
    available: () => false,
    fence: { check: () => Promise.reject(new Error('listing refused')) },
    onUploaded: () => assert.fail('not uploaded'),
    onFailed: (_, e) => failures.push(e),
  });
  await publisher.staged(
    info,
    {
      nar: fakeNar(0),
      staged: { publish: async () => void (published = true), durable: async () => {}, discard: async () => {} },
    },
    monotonicMs(),
  );
  assert.equal(published, false);
  assert.equal(failures.length, 1);
  assert.equal(failures[0]!.code, 'UPLOAD_FAILED');
  assert.match(failures[0]!.message, /p0' failed: listing refused/);
});
