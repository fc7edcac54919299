// The collector's decisions from an inventory (pure): roots, closure, the
// order of deletion (referrers first), shared NARs, grace, pins, cycles;
// and the durations its flags take.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Inventory } from '../../src/gc/inventory.js';
import { planGc } from '../../src/gc/plan.js';
import { parseDuration } from '../../src/cli/duration.js';

const H = (c: string): string => c.repeat(32);
const DAY = 86_400_000;
const NOW = 100 * DAY;

/** Paths by one-letter name: [age in days, NAR key, references]. */
function inventory(paths: Record<string, [number, string, string[]]>, others: [string, number][] = []): Inventory {
  const inv = new Inventory();
  for (const [n, [age]] of Object.entries(paths)) inv.addNarInfo(H(n), { key: `${H(n)}.narinfo`, size: 10, lastModified: new Date(NOW - age * DAY) });
  for (const [n, [, nar, refs]] of Object.entries(paths)) {
    const i = inv.index.get(H(n))!;
    inv.nar[i] = inv.narNumber(nar);
    inv.refs[i] = Int32Array.from(refs.map((r) => inv.index.get(H(r))!));
  }
  for (const [key, age] of others) inv.others.push({ key, size: 100, mtime: NOW - age * DAY });
  return inv;
}

const names = (inv: Inventory, round: number[]): string[] => round.map((i) => inv.hashes[i]![0]!).sort();

test('referrers are deleted in earlier rounds than their references; the young and their closure stay', () => {
  const inv = inventory(
    { a: [50, 'nar/a', ['b']], b: [50, 'nar/b', ['c']], c: [50, 'nar/c', []], y: [1, 'nar/y', ['k']], k: [60, 'nar/k', []] },
    [['nar/a', 50], ['nar/b', 50], ['nar/c', 50], ['nar/y', 1], ['nar/k', 60], ['nar/orphan', 60], ['nar/fresh-orphan', 0]],
  );
  const plan = planGc(inv, { now: NOW, keepSinceMs: 30 * DAY, graceMs: 3600_000, pins: new Set() });
  assert.deepEqual(plan.rounds.map((r) => names(inv, r)), [['a'], ['b'], ['c']]);
  assert.deepEqual(plan.nars.map((o) => o.key).sort(), ['nar/a', 'nar/b', 'nar/c', 'nar/orphan']);
});

test('a NAR shared with a kept narinfo stays; pins keep their closure; grace protects everything young', () => {
  const inv = inventory(
    { o: [50, 'nar/shared', []], n: [1, 'nar/shared', []], p: [90, 'nar/p', ['q']], q: [90, 'nar/q', []], g: [0.01, 'nar/g', []] },
    [['nar/shared', 50], ['nar/p', 90], ['nar/q', 90], ['log/' + H('z') + '-x.drv', 90]],
  );
  const plan = planGc(inv, { now: NOW, keepSinceMs: 0, graceMs: 3600_000, pins: new Set([H('p')]) });
  assert.deepEqual(plan.rounds.flatMap((r) => names(inv, r)), ['n', 'o']);
  assert.deepEqual(plan.nars.map((o) => o.key), ['nar/shared'], 'with keep-since 0, n goes too, and so does the NAR');
  const kept = planGc(inv, { now: NOW, keepSinceMs: 30 * DAY, graceMs: 3600_000, pins: new Set([H('p')]) });
  assert.deepEqual(kept.rounds.flatMap((r) => names(inv, r)), ['o']);
  assert.deepEqual(kept.nars, [], 'the shared NAR stays while n uses it');
  assert.deepEqual(kept.logs.map((o) => o.key), [`log/${H('z')}-x.drv`]);
});

test('a cycle of references stops the plan before anything is deleted', () => {
  const inv = inventory({ a: [50, 'nar/a', ['b']], b: [50, 'nar/b', ['a']] });
  assert.throws(() => planGc(inv, { now: NOW, keepSinceMs: DAY, graceMs: 0, pins: new Set() }), { code: 'GC_REFERENCE_CYCLE' });
});

test('durations: units, sums, and one-line errors', () => {
  assert.equal(parseDuration('--x', '30d'), 30 * DAY);
  assert.equal(parseDuration('--x', '1d12h'), 36 * 3600_000);
  assert.equal(parseDuration('--x', '1.5s'), 1500);
  assert.equal(parseDuration('--x', '2w'), 14 * DAY);
  for (const bad of ['', '30', 'd', '30 d', '-1d', '1y', '1d x']) {
    assert.throws(() => parseDuration('--keep-since', bad), { code: 'BAD_OPTION', message: /^--keep-since takes a duration/ });
  }
});
