// Full file systems, on a small tmpfs: the daemon's state directory (the
// journal cannot be appended to, nor the spool written) and a file:// cache
// (a NAR cannot be written). Nothing acknowledged is lost or damaged, no
// partial object or temporary file is left, and work resumes once there
// is space again.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdir, readFile, rm } from 'node:fs/promises';
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

test('file:// cache on a full disk: the upload fails and is retried, no partial NAR, narinfo or temporary file is ever left, and it succeeds once there is space', async (t) => {
  await requireNix();
  const work = await tempDir('narpush-full-cache-');
  let stopDaemon: (() => Promise<unknown>) | undefined;
  const fs = await mountTmpfs(t, '1m', async () => {
    await stopDaemon?.();
    await work.remove();
  });
  if (!fs) return;
  const secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  assert.equal((await narpush(['generate-key', 'narpush-full-test-1', secretKey, pub])).code, 0);
  const publicKey = (await readFile(pub, 'utf8')).trim();
  const cache = path.join(fs.dir, 'cache');

  // A small path first (the cache gets its nix-cache-info), then one of 600 KiB that cannot fit.
  const salt = randomUUID();
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')}; in {
    small = lib.mk { name = "np-full-small"; salt = "${salt}"; script = "mkdir $out; echo small > $out/f"; };
    big = lib.mk { name = "np-full-big"; salt = "${salt}"; script = "mkdir $out; head -c 600000 /dev/urandom > $out/blob"; };
  }`;
  // Out-links are GC roots: a garbage collection elsewhere on the machine must not take the paths mid-test.
  const built = await run('nix-build', ['-E', expr, '-o', path.join(work.dir, 'result')], { env: nixEnv() });
  assert.equal(built.code, 0, built.stderr);
  const outs = built.stdout.toString().trim().split('\n');
  const small = outs.find((o) => o.endsWith('-np-full-small'))!;
  const big = outs.find((o) => o.endsWith('-np-full-big'))!;
  assert.ok(small && big, built.stdout.toString());

  const socket = path.join(work.dir, 'd.sock');
  const stateDir = path.join(work.dir, 'state');
  const d = await startDaemonProcess({
    to: `file://${cache}`,
    socket,
    stateDir,
    env: nixEnv(),
    args: ['--secret-key-file', secretKey, '--compression', 'none', '--retry-delay', '0.2', '--retry-max-delay', '0.5'],
  });
  stopDaemon = () => d.stop('SIGKILL');
  assert.equal((await runHook({ OUT_PATHS: small, NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir })).result, 'queued');
  await d.idle();
  const before = await filesUnder(cache);

  // About 300 KiB left: the NAR starts to be written and cannot be finished.
  await fs.fill(300 * 1024);
  assert.equal((await runHook({ OUT_PATHS: big, NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir })).result, 'queued');
  // Sample the cache while the failures repeat: at no moment may a partial object be visible.
  const seen = new Set<string>();
  await eventually(
    async () => {
      for (const f of await filesUnder(cache)) seen.add(f);
      return (await d.status()).failures >= 3;
    },
    60_000,
    'three failed attempts',
  ).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(await d.status())}\n${d.log()}`);
  });
  const s = await d.status();
  assert.equal(s.failing.length, 1);
  assert.match(s.failing[0]!.lastError, /ENOSPC|no space left/i);
  assert.equal(s.failing[0]!.path, big);
  const narinfoOfBig = `${path.basename(big).slice(0, 32)}.narinfo`;
  assert.ok(![...seen].includes(narinfoOfBig), 'no narinfo of the path that failed');
  const added = [...seen].filter((f) => !before.includes(f));
  assert.ok(added.every((f) => path.basename(f).includes('.narpush-')), `only temporary files ever appeared: ${added.join(', ')}`);
  console.log(`full file:// cache: ${s.failures} failed attempts, last error: ${s.failing[0]!.lastError}`);
  // Stopped while the disk is still full: whatever it was writing is cleaned up.
  assert.deepEqual(await d.stop(), { code: 0, signal: null });
  assert.deepEqual(await filesUnder(cache), before, 'nothing was added: no partial NAR, narinfo or temporary file');

  await fs.free();
  const again = await startDaemonProcess({ to: `file://${cache}`, socket, stateDir, env: nixEnv(), args: ['--secret-key-file', secretKey, '--compression', 'none'] });
  stopDaemon = () => again.stop('SIGKILL');
  assert.match(again.log(), /1 path\(s\) resumed from the journal/);
  const done = await again.idle(60_000);
  assert.equal(done.uploaded, 1);
  const closure = await nixClosure([small, big]);
  await assertCacheHas((k) => readFile(path.join(cache, k)).catch(() => undefined), closure, publicKey);
  assert.deepEqual((await filesUnder(cache)).filter((f) => f.includes('.narpush-')), [], 'no temporary file left');
  await again.stop();
  stopDaemon = undefined;

  // Nix takes it back from the cache.
  for (const name of await readdir(work.dir)) if (name.startsWith('result')) await rm(path.join(work.dir, name));
  await eventually(async () => (await run('nix-store', ['--delete', big], { env: nixEnv() })).code === 0, 10_000, 'path deleted');
  const r = await run(
    'nix-store',
    ['-r', big, '--option', 'substituters', `file://${cache}`, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
});

test('a daemon started on a full state directory fails with one line and leaves no empty pid file; it starts once there is space', async (t) => {
  const fs = await mountTmpfs(t, '1m');
  if (!fs) return;
  const first = await startFakeDaemon({ dir: fs.dir });
  await first.stop();
  await fs.fill();
  await assert.rejects(startFakeDaemon({ dir: fs.dir }), (e: NodeJS.ErrnoException) => {
    assert.equal(e.code, 'STATE_DIR_UNUSABLE');
    assert.match(e.message, /^cannot write to the state directory .*\/state \(ENOSPC: no space left\); free space there or choose another --state-dir$/);
    return true;
  });
  assert.deepEqual((await readdir(path.join(fs.dir, 'state'))).filter((n) => n !== 'spool' && n !== 'gcroots' && n !== 'queue.journal'), [], 'no pid file left');
  await fs.free();
  const again = await startFakeDaemon({ dir: fs.dir });
  await again.stop();
});
