// The work queue with a fake journal and clock: durability before the
// answer, deduplication, order, retries with backoff, release on shutdown;
// and the backoff schedule itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_RETRY_POLICY, retryDelayMs } from '../../src/daemon/backoff.js';
import { WorkQueue } from '../../src/daemon/queue.js';
import { RecordingJournal, fakePath } from './fakes.js';

const policy = { initialDelayMs: 1000, maxDelayMs: 60_000 };

function setup(random = () => 0.5) {
  let now = 1_000_000;
  const journal = new RecordingJournal();
  const queue = new WorkQueue(journal, { retry: policy, now: () => now, random });
  return { journal, queue, advance: (ms: number) => (now += ms), now: () => now };
}

test('enqueue resolves only after the journal has the paths; until then they cannot be taken', async () => {
  const { journal, queue } = setup();
  let open!: () => void;
  journal.gate = new Promise<void>((r) => (open = r));
  const a = fakePath('a');
  let acked = false;
  const p = queue.enqueue([a]).then((r) => {
    acked = true;
    return r;
  });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(acked, false, 'no acknowledgement before the journal write completes');
  assert.deepEqual(queue.take(10), [], 'not uploadable before it is durable');
  open();
  assert.deepEqual(await p, { queued: [a], duplicates: [] });
  assert.deepEqual(journal.records.map((r) => r.op), ['queued']);
  assert.deepEqual(queue.take(10), [a]);
});

test('dedup: a path queued many times, even concurrently, is journaled and taken once', async () => {
  const { journal, queue } = setup();
  const [a, b] = [fakePath('a'), fakePath('b')];
  const results = await Promise.all([queue.enqueue([a, a, b]), queue.enqueue([a]), queue.enqueue([b, a])]);
  assert.deepEqual(results[0], { queued: [a, b], duplicates: [] });
  assert.deepEqual(results[1], { queued: [], duplicates: [a] });
  assert.equal(journal.records.filter((r) => r.op === 'queued').length, 2);
  assert.deepEqual(queue.take(10), [a, b]);
  // While running, queueing it again adds nothing.
  assert.deepEqual(await queue.enqueue([a]), { queued: [], duplicates: [a] });
  assert.deepEqual(queue.take(10), []);
  await queue.complete(a);
  // Once done it may be queued again (the pipeline then skips it as present in the cache).
  assert.deepEqual((await queue.enqueue([a])).queued, [a]);
});

test('a duplicate of a path still being journaled is acknowledged only when that write is durable', async () => {
  const { journal, queue } = setup();
  let open!: () => void;
  journal.gate = new Promise<void>((r) => (open = r));
  const a = fakePath('a');
  const first = queue.enqueue([a]);
  let second = false;
  const dup = queue.enqueue([a]).then(() => (second = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(second, false);
  open();
  await Promise.all([first, dup]);
  assert.equal(second, true);
});

test('a journal failure fails the enqueue and leaves nothing behind', async () => {
  const { journal, queue } = setup();
  journal.fail = new Error('disk full');
  const a = fakePath('a');
  await assert.rejects(queue.enqueue([a]), /disk full/);
  assert.equal(queue.size, 0);
  journal.fail = undefined;
  assert.deepEqual((await queue.enqueue([a])).queued, [a]);
});

test('take: oldest first, at most max; failures wait their backoff, then run again; never dropped', async () => {
  const { journal, queue, advance } = setup(() => 0);
  const ps = Array.from({ length: 5 }, (_, i) => fakePath(`p${i}`));
  for (const p of ps) await queue.enqueue([p]);
  assert.deepEqual(queue.take(2), ps.slice(0, 2));
  assert.deepEqual(queue.take(10), ps.slice(2));
  const f = await queue.fail(ps[0]!, 'S3 is down');
  // random() = 0: exactly half the nominal delay of the first attempt.
  assert.deepEqual(f, { attempts: 1, delayMs: 500 });
  assert.deepEqual(queue.take(10), []);
  advance(499);
  assert.deepEqual(queue.take(10), []);
  advance(1);
  assert.deepEqual(queue.take(10), [ps[0]]);
  const g = await queue.fail(ps[0]!, 'still down');
  assert.deepEqual(g, { attempts: 2, delayMs: 1000 });
  const item = queue.list().find((i) => i.path === ps[0]);
  assert.equal(item?.state, 'waiting');
  assert.equal(item?.lastError, 'still down');
  assert.deepEqual(journal.records.filter((r) => r.op === 'failed').map((r) => (r as { attempts: number }).attempts), [1, 2]);
  for (let i = 0; i < 40; i++) {
    advance(60_000);
    assert.deepEqual(queue.take(10), [ps[0]]);
    await queue.fail(ps[0]!, 'down forever');
  }
  assert.equal(queue.list().find((i) => i.path === ps[0])?.attempts, 42, 'still queued after 42 failures');
});

test('release puts interrupted paths back without counting an attempt; restore resumes a journal', async () => {
  const { queue } = setup();
  const [a, b] = [fakePath('a'), fakePath('b')];
  await queue.enqueue([a, b]);
  assert.deepEqual(queue.take(10), [a, b]);
  queue.release([a, b]);
  assert.deepEqual(queue.list().map((i) => [i.state, i.attempts]), [['queued', 0], ['queued', 0]]);

  const other = setup();
  other.queue.restore([
    { path: a, queuedAt: 1, attempts: 3, lastError: 'x' },
    { path: b, queuedAt: 2, attempts: 0 },
  ]);
  assert.deepEqual(other.queue.take(10), [a, b], 'resumed paths run at once, failures included');
  assert.equal(other.queue.list()[0]?.attempts, 3);
});

test('waitForWork wakes on enqueue and when a retry falls due', async () => {
  const journal = new RecordingJournal();
  const queue = new WorkQueue(journal, { retry: { initialDelayMs: 40, maxDelayMs: 40 }, random: () => 1 });
  const a = fakePath('a');
  const woke = queue.waitForWork();
  await queue.enqueue([a]);
  await woke;
  assert.deepEqual(queue.take(1), [a]);
  await queue.fail(a, 'x');
  const t0 = Date.now();
  await queue.waitForWork();
  assert.ok(Date.now() - t0 >= 30, 'woke when the retry was due');
  assert.deepEqual(queue.take(1), [a]);
  const ac = new AbortController();
  const waiting = queue.waitForWork(ac.signal);
  ac.abort();
  await waiting;
});

test('backoff: doubles from the initial delay, capped, with at most half of it jitter', () => {
  const p = { initialDelayMs: 5000, maxDelayMs: 600_000 };
  assert.equal(retryDelayMs(1, p, () => 1), 5000);
  assert.equal(retryDelayMs(2, p, () => 1), 10_000);
  assert.equal(retryDelayMs(3, p, () => 1), 20_000);
  assert.equal(retryDelayMs(1, p, () => 0), 2500);
  assert.equal(retryDelayMs(8, p, () => 1), 600_000, '5 s * 2^7 = 640 s is capped');
  assert.equal(retryDelayMs(1e6, p, () => 1), 600_000, 'no overflow for absurd attempt counts');
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 200 }), fc.double({ min: 0, max: 1, noNaN: true }), (n, r) => {
      const d = retryDelayMs(n, DEFAULT_RETRY_POLICY, () => r);
      const nominal = Math.min(DEFAULT_RETRY_POLICY.maxDelayMs, DEFAULT_RETRY_POLICY.initialDelayMs * 2 ** (n - 1));
      assert.ok(d >= Math.floor(nominal / 2) && d <= nominal, `${n}: ${d} within [${nominal / 2}, ${nominal}]`);
      assert.ok(retryDelayMs(n + 1, DEFAULT_RETRY_POLICY, () => 1) >= retryDelayMs(n, DEFAULT_RETRY_POLICY, () => 1), 'never shrinks');
    }),
  );
});
