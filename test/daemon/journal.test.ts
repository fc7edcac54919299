// The queue journal: replay (torn last line, damaged lines), compaction, and
// what survives a crash cut at any byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import fc from 'fast-check';
import { Journal, type JournalRecord, type PendingPath, applyRecord, replayJournal } from '../../src/daemon/journal.js';
import { sendRequest } from '../../src/daemon/client.js';
import type { LogEvent } from '../../src/daemon/log.js';
import { fakePath, startFakeDaemon, tempDir } from './fakes.js';

const line = (r: JournalRecord): string => `${JSON.stringify(r)}\n`;

/** The pending set after `records`, computed independently of the journal module: a plain fold. */
function model(records: readonly JournalRecord[]): Map<string, { queuedAt: number; attempts: number }> {
  const m = new Map<string, { queuedAt: number; attempts: number }>();
  for (const r of records) {
    if (r.op === 'queued' && !m.has(r.path)) m.set(r.path, { queuedAt: r.at, attempts: 0 });
    if (r.op === 'failed' && m.has(r.path)) m.set(r.path, { ...m.get(r.path)!, attempts: r.attempts });
    if (r.op === 'done' || r.op === 'dropped') m.delete(r.path);
  }
  return m;
}

function simplify(p: ReadonlyMap<string, PendingPath>): Map<string, { queuedAt: number; attempts: number }> {
  return new Map([...p].map(([k, v]) => [k, { queuedAt: v.queuedAt, attempts: v.attempts }]));
}

test('replay: queued minus done, failures keep their count and error, order of first queueing', () => {
  const [a, b, c] = [fakePath('a'), fakePath('b'), fakePath('c')];
  const text = [
    line({ op: 'queued', path: a, at: 1 }),
    line({ op: 'queued', path: b, at: 2 }),
    line({ op: 'queued', path: c, at: 3 }),
    line({ op: 'failed', path: b, attempts: 2, error: 'S3 said no' }),
    line({ op: 'done', path: a }),
    line({ op: 'dropped', path: c, reason: 'gone' }),
    line({ op: 'queued', path: a, at: 9 }),
  ].join('');
  const r = replayJournal(text);
  assert.deepEqual([...r.pending.keys()], [b, a]);
  assert.deepEqual(r.pending.get(b), { path: b, queuedAt: 2, attempts: 2, lastError: 'S3 said no' });
  assert.equal(r.pending.get(a)?.queuedAt, 9);
  assert.equal(r.tornTail, false);
  assert.equal(r.badLines, 0);
});

test('replay: a torn last line is ignored, damaged lines are skipped and counted', () => {
  const [a, b] = [fakePath('a'), fakePath('b')];
  const full = line({ op: 'queued', path: a, at: 1 }) + 'garbage\n' + '{"op":"queued"}\n' + line({ op: 'queued', path: b, at: 2 });
  const torn = full + line({ op: 'done', path: a }).slice(0, 10);
  const r = replayJournal(torn);
  assert.deepEqual([...r.pending.keys()], [a, b]);
  assert.equal(r.tornTail, true);
  assert.equal(r.badLines, 2);
});

test('property: a journal cut at any byte replays to the state of its complete lines', () => {
  const arbRecords = fc.array(
    fc.tuple(fc.constantFrom('queued', 'done', 'failed', 'dropped'), fc.nat(4), fc.nat(5)),
    { maxLength: 25 },
  );
  const names = Array.from({ length: 5 }, (_, i) => fakePath(`p${i}`));
  fc.assert(
    fc.property(arbRecords, fc.nat(), (spec, cutSeed) => {
      const records: JournalRecord[] = spec.map(([op, i, n]) => {
        const p = names[i]!;
        if (op === 'queued') return { op, path: p, at: n };
        if (op === 'failed') return { op, path: p, attempts: n + 1, error: `e${n}` };
        if (op === 'dropped') return { op, path: p, reason: 'r' };
        return { op: 'done', path: p };
      });
      const text = records.map(line).join('');
      const cut = text.length === 0 ? 0 : cutSeed % (text.length + 1);
      const complete = text.slice(0, cut).split('\n').length - 1;
      const r = replayJournal(text.slice(0, cut));
      assert.deepEqual(simplify(r.pending), model(records.slice(0, complete)));
      assert.equal(r.badLines, 0);
    }),
    { numRuns: 500 },
  );
});

test('Journal: appends are on disk when they resolve; open() replays, drops the torn tail and compacts', async () => {
  const t = await tempDir();
  try {
    const file = path.join(t.dir, 'queue.journal');
    const [a, b, c] = [fakePath('a'), fakePath('b'), fakePath('c')];
    const { journal, replayed } = await Journal.open(file);
    assert.equal(replayed.pending.size, 0);
    await journal.append([{ op: 'queued', path: a, at: 1 }, { op: 'queued', path: b, at: 2 }]);
    await journal.append([{ op: 'done', path: a }]);
    // Read back by another reader right away: it is in the file.
    assert.deepEqual([...replayJournal(await readFile(file, 'utf8')).pending.keys()], [b]);
    await journal.close();

    // A crash mid-write leaves a partial line; the next start must not glue a record onto it.
    await appendFile(file, line({ op: 'queued', path: c, at: 3 }).slice(0, 20));
    const again = await Journal.open(file);
    assert.equal(again.replayed.tornTail, true);
    assert.deepEqual([...again.replayed.pending.keys()], [b]);
    assert.equal(await readFile(file, 'utf8'), line({ op: 'queued', path: b, at: 2 }), 'compacted to what is pending');
    await again.journal.append([{ op: 'queued', path: c, at: 4 }]);
    await again.journal.close();
    const third = await Journal.open(file);
    assert.deepEqual([...third.replayed.pending.keys()], [b, c]);
    assert.equal(third.replayed.badLines, 0);
    await third.journal.close();
  } finally {
    await t.remove();
  }
});

test('Journal: 500 concurrent appends are group-committed, all durable, in order', async () => {
  const t = await tempDir();
  try {
    const file = path.join(t.dir, 'queue.journal');
    const { journal } = await Journal.open(file);
    const paths = Array.from({ length: 500 }, (_, i) => fakePath(`p${i}`));
    await Promise.all(paths.map((p, i) => journal.append([{ op: 'queued', path: p, at: i }])));
    const r = replayJournal(await readFile(file, 'utf8'));
    assert.deepEqual([...r.pending.keys()], paths);
    await journal.close();
    await assert.rejects(journal.append([{ op: 'done', path: paths[0]! }]), /closed/);
  } finally {
    await t.remove();
  }
});

test('Journal: grows past the threshold, is compacted, and keeps exactly what is pending', async () => {
  const t = await tempDir();
  try {
    const file = path.join(t.dir, 'queue.journal');
    const { journal } = await Journal.open(file, { compactAtBytes: 4096 });
    const keep = fakePath('keep');
    await journal.append([{ op: 'queued', path: keep, at: 0 }, { op: 'failed', path: keep, attempts: 3, error: 'boom' }]);
    for (let i = 0; i < 200; i++) {
      const p = fakePath(`p${i}`);
      await journal.append([{ op: 'queued', path: p, at: i }]);
      await journal.append([{ op: 'done', path: p }]);
    }
    assert.ok((await stat(file)).size < 4096 + 200, `compacted: ${(await stat(file)).size} bytes`);
    assert.ok(journal.bytes < 4096 + 200);
    await journal.close();
    const r = replayJournal(await readFile(file, 'utf8'));
    assert.deepEqual([...r.pending.values()], [{ path: keep, queuedAt: 0, attempts: 3, lastError: 'boom' }]);
  } finally {
    await t.remove();
  }
});

test('Journal: a file truncated mid-record by a crash (every cut of a real file) opens and replays', async () => {
  const t = await tempDir();
  try {
    const file = path.join(t.dir, 'queue.journal');
    const recs: JournalRecord[] = [];
    const ps = Array.from({ length: 4 }, (_, i) => fakePath(`p${i}`));
    for (const [i, p] of ps.entries()) recs.push({ op: 'queued', path: p, at: i });
    recs.push({ op: 'done', path: ps[1]! }, { op: 'failed', path: ps[2]!, attempts: 1, error: 'x' });
    const text = recs.map(line).join('');
    for (let cut = 0; cut <= text.length; cut += 7) {
      await writeFile(file, text);
      await truncate(file, cut);
      const { journal, replayed } = await Journal.open(file);
      const complete = text.slice(0, cut).split('\n').length - 1;
      assert.deepEqual(simplify(replayed.pending), model(recs.slice(0, complete)), `cut at ${cut}`);
      await journal.close();
      assert.equal(replayJournal(await readFile(file, 'utf8')).tornTail, false, 'no torn line after open');
    }
  } finally {
    await t.remove();
  }
});

test('applyRecord is the fold the journal replays with', () => {
  const m = new Map<string, PendingPath>();
  const p = fakePath();
  applyRecord(m, { op: 'failed', path: p, attempts: 1, error: 'x' });
  assert.equal(m.size, 0, 'a failure of an unknown path adds nothing');
  applyRecord(m, { op: 'queued', path: p, at: 5 });
  applyRecord(m, { op: 'queued', path: p, at: 6 });
  assert.equal(m.get(p)?.queuedAt, 5, 'queueing again keeps the first time');
});

test('property: a journal cut at any byte, UTF-8 in the records, keeps every complete record and reports the torn tail', () => {
  const names = Array.from({ length: 4 }, (_, i) => fakePath(`u${i}`));
  // Errors are free text (S3 messages, file names): multi-byte characters, escapes, newlines.
  const arbRecord: fc.Arbitrary<JournalRecord> = fc.oneof(
    fc.record({ op: fc.constant('queued' as const), path: fc.constantFrom(...names), at: fc.nat() }),
    fc.record({ op: fc.constant('done' as const), path: fc.constantFrom(...names) }),
    fc.record({ op: fc.constant('failed' as const), path: fc.constantFrom(...names), attempts: fc.integer({ min: 1, max: 99 }), error: fc.string({ unit: 'binary', maxLength: 12 }) }),
    fc.record({ op: fc.constant('dropped' as const), path: fc.constantFrom(...names), reason: fc.string({ unit: 'grapheme', maxLength: 8 }) }),
  );
  fc.assert(
    fc.property(fc.array(arbRecord, { maxLength: 20 }), fc.nat(), (records, cutSeed) => {
      const bytes = Buffer.from(records.map(line).join(''), 'utf8');
      const cut = cutSeed % (bytes.length + 1);
      // As Journal.open reads it: the bytes on disk decoded as UTF-8 (a cut character becomes U+FFFD).
      const r = replayJournal(bytes.subarray(0, cut).toString('utf8'));
      const lineEnds = [...bytes.subarray(0, cut)].filter((b) => b === 0x0a).length;
      const complete = records.slice(0, lineEnds);
      const want = new Map<string, PendingPath>();
      for (const rec of complete) applyRecord(want, rec);
      assert.deepEqual(r.pending, want);
      assert.equal(r.records, complete.length, 'every complete record is read');
      assert.equal(r.badLines, 0);
      assert.equal(r.tornTail, cut > 0 && bytes[cut - 1] !== 0x0a);
    }),
    { numRuns: 1000 },
  );
});

/** An upload that only ends when the daemon aborts it at stop: the path stays in the journal. */
const stuck = (_p: string, signal: AbortSignal): Promise<never> =>
  new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));

test('a torn journal is reported once: the daemon warns at the start that found it, and the next start finds it repaired', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const first = await startFakeDaemon({ dir: t.dir, outcome: stuck });
    const [a, b] = [fakePath('a'), fakePath('b')];
    // Both stay in flight until the stop aborts them, so both stay in the journal.
    await sendRequest(first.socket, { op: 'enqueue', paths: [a, b] }, { timeoutMs: 5000 });
    await first.daemon.stop();
    const file = path.join(stateDir, 'queue.journal');
    const queued = ['é', '中'].map((ch) => line({ op: 'failed', path: a, attempts: 1, error: `nope ${ch}` })).join('');
    // A crash in the middle of the second record's multi-byte character.
    const torn = Buffer.from(queued, 'utf8');
    await appendFile(file, torn.subarray(0, torn.length - 4));
    const torns = (logs: LogEvent[]): number => logs.filter((e) => e.event === 'warning' && /partial line/.test(e.detail ?? '')).length;

    const second = await startFakeDaemon({ dir: t.dir, outcome: stuck });
    assert.equal(second.daemon.resumed, 2);
    assert.equal(torns(second.logs), 1, 'reported at the start that found it');
    await second.daemon.stop();
    const text = await readFile(file, 'utf8');
    assert.ok(text.endsWith('\n'), 'the torn tail is gone from the file');
    const r = replayJournal(text);
    assert.equal(r.tornTail, false);
    assert.equal(r.pending.get(a)?.lastError, 'nope é', 'the complete record before the cut was kept');

    const third = await startFakeDaemon({ dir: t.dir, outcome: stuck });
    assert.equal(third.daemon.resumed, 2);
    assert.equal(torns(third.logs), 0, 'not reported again');
    await third.daemon.stop();
  } finally {
    await t.remove();
  }
});
