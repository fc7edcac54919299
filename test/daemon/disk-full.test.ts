// Full file systems, on a small tmpfs: the daemon's state directory (the
// journal cannot be appended to, nor the spool written) and a file:// cache
// (a NAR cannot be written). Nothing acknowledged is lost or damaged, no
// partial object or temporary file is left, and work resumes once there
// is space again.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { sendRequest } from '../../src/daemon/client.js';
import { runHook } from '../../src/daemon/hook.js';
import { Journal, replayJournal } from '../../src/daemon/journal.js';
import { spoolDir } from '../../src/daemon/spool.js';
import { assertCacheHas, nixClosure } from '../helpers/cache-check.js';
import { nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { killLeftoverDaemons, startDaemonProcess } from './daemon-process.js';
import { eventually, fakePath, startFakeDaemon, tempDir, type FakeDaemon } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');

after(() => killLeftoverDaemons());

/** An upload that only ends when the daemon aborts it at stop: every path stays in the journal. */
const aborts = new WeakMap<AbortSignal, Promise<never>>();
function stuck(_p: string, signal: AbortSignal): Promise<never> {
  // One listener per batch, not per path.
  let p = aborts.get(signal);
  if (!p) {
    p = new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));
    aborts.set(signal, p);
  }
  return p;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  }
  return out.sort();
}

test('state directory on a full disk: the daemon answers QUEUE_UNAVAILABLE, the hook says in one line the paths are lost, nothing acknowledged is lost or damaged', async (t) => {
  let d: FakeDaemon | undefined;
  const fs = await mountTmpfs(t, '1m', async () => d?.stop());
  if (!fs) return;
  // No compaction here (the default threshold is MiBs): a rewrite from memory would hide a damaged file.
  d = await startFakeDaemon({ dir: fs.dir, outcome: stuck });
  const enqueue = (p: string): Promise<Record<string, unknown>> => sendRequest(d!.socket, { op: 'enqueue', paths: [p] }, { timeoutMs: 5000 });
  const acked: string[] = [];
  for (let i = 0; i < 10; i++) {
    const p = fakePath(`before${i}`);
    assert.equal((await enqueue(p)).ok, true);
    acked.push(p);
  }

  await fs.fill();
  // The journal's last page still takes a few records; then appends fail, the first of them
  // cut short at the page boundary (a short write: only part of the record reached the file).
  let refused = 0;
  let answer: Record<string, unknown> = {};
  for (let i = 0; i < 200 && refused < 5; i++) {
    const p = fakePath(`full${i}`);
    answer = await enqueue(p);
    if (answer.ok === true) acked.push(p);
    else refused++;
  }
  assert.equal(refused, 5, 'appends failed once the disk was full');
  assert.equal(answer.code, 'QUEUE_UNAVAILABLE');
  assert.match(String(answer.error), /^the daemon cannot write its queue: ENOSPC: no space left on device/);
  assert.doesNotMatch(String(answer.error), /\n/);

  // The hook's spool is in the state directory too: it cannot spool, and says so in one line.
  const env = { OUT_PATHS: fakePath('hooked'), NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: d.stateDir };
  const hooked = await runHook(env);
  assert.equal(hooked.result, 'lost');
  assert.match(hooked.message ?? '', /cannot write its queue: ENOSPC.*; and cannot spool to .*: ENOSPC: no space left on device.*; these paths will not be uploaded$/);
  const bin = await run(HOOK, [], { env: { ...process.env, ...env } });
  assert.equal(bin.code, 0, 'the hook never fails a build');
  const lines = bin.stderr.trim().split('\n');
  assert.equal(lines.length, 1, bin.stderr);
  assert.match(lines[0]!, /^narpush-hook: .*ENOSPC.*these paths will not be uploaded$/);
  assert.deepEqual(await readdir(spoolDir(d.stateDir)), [], 'no spool file, whole or partial');
  assert.equal((await sendRequest(d.socket, { op: 'status' }, { timeoutMs: 5000 })).ok, true, 'the daemon still answers');

  // Space again: the same daemon takes requests again (the failed append left no partial line).
  await fs.free();
  const late = fakePath('after-free');
  assert.equal((await enqueue(late)).ok, true);
  acked.push(late);
  await d.stop();
  d = undefined;

  const text = await readFile(path.join(fs.dir, 'state', 'queue.journal'), 'utf8');
  const replayed = replayJournal(text);
  assert.equal(replayed.badLines, 0, 'no damaged line');
  assert.equal(replayed.tornTail, false);
  assert.deepEqual([...replayed.pending.keys()].sort(), [...acked].sort(), 'every acknowledged path, and only those');

  d = await startFakeDaemon({ dir: fs.dir, outcome: stuck });
  assert.equal(d.daemon.resumed, acked.length);
  assert.deepEqual(d.logs.filter((e) => e.event === 'warning'), [], 'the journal loads cleanly');
  console.log(`full state directory: ${acked.length} paths acknowledged (${acked.length - 11} of them on the full disk), ${refused} refused, all resumed`);
});

test('journal compaction on a full disk never loses the old journal, and succeeds once there is space', async (t) => {
  const fs = await mountTmpfs(t, '1m');
  if (!fs) return;
  const file = path.join(fs.dir, 'queue.journal');
  const { journal } = await Journal.open(file, { compactAtBytes: 2048 });
  t.after(() => journal.close().catch(() => {}));
  const acked: string[] = [];
  const append = async (p: string): Promise<boolean> => {
    try {
      await journal.append([{ op: 'queued', path: p, at: acked.length }]);
      acked.push(p);
      return true;
    } catch (e) {
      assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
      return false;
    }
  };
  // Past the threshold: every append is followed by a compaction (all paths stay pending).
  for (let i = 0; i < 30; i++) assert.ok(await append(fakePath(`c${i}`)));
  await fs.fill();
  let refused = 0;
  for (let i = 0; i < 100 && refused < 5; i++) if (!(await append(fakePath(`f${i}`)))) refused++;
  assert.equal(refused, 5);
  const onDisk = replayJournal(await readFile(file, 'utf8'));
  assert.equal(onDisk.badLines, 0);
  assert.equal(onDisk.tornTail, false);
  assert.deepEqual([...onDisk.pending.keys()], acked, 'the file holds exactly what was acknowledged');
  assert.deepEqual(await readdir(fs.dir).then((n) => n.filter((x) => x.includes('.compact'))), [], 'no compaction temp file left');
  const bigBefore = (await readFile(file)).length;

  await fs.free();
  for (let i = 0; i < 40; i++) {
    const p = fakePath(`g${i}`);
    assert.ok(await append(p));
    await journal.append([{ op: 'done', path: p }]);
  }
  assert.ok((await readFile(file)).length < bigBefore + 40 * 200, 'compacted again');
  assert.deepEqual([...replayJournal(await readFile(file, 'utf8')).pending.keys()], acked.filter((p) => !/-g\d+$/.test(p)));
});
