// bin/narpush-hook and the function behind it: queued when the daemon
// answers, spooled when it is down or silent, never a failure exit and never
// a stack trace, whatever the environment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { chmod, mkdir, readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { runHook } from '../../src/daemon/hook.js';
import { spoolDir } from '../../src/daemon/spool.js';
import { REPO_ROOT, run } from '../helpers/run.js';
import { eventually, fakePath, startFakeDaemon, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');

function hookProcess(env: NodeJS.ProcessEnv) {
  const clean = { ...process.env };
  delete clean.OUT_PATHS;
  delete clean.DRV_PATH;
  return run(HOOK, [], { env: { ...clean, ...env } });
}

test('daemon up: the hook process is acknowledged and exits 0 silently', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({ dir: t.dir });
  try {
    const [a, b] = [fakePath('out'), fakePath('out-dev')];
    const r = await hookProcess({ OUT_PATHS: `${a} ${b}`, DRV_PATH: fakePath('x.drv'), NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: d.stateDir });
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
    await eventually(() => d.done.has(a) && d.done.has(b));
    assert.deepEqual(await readdir(spoolDir(d.stateDir)), [], 'nothing spooled');
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('daemon down: the request is spooled and uploaded once the daemon starts', async () => {
  const t = await tempDir();
  try {
    const socket = path.join(t.dir, 'sock');
    const stateDir = path.join(t.dir, 'state');
    const drv = fakePath('built.drv');
    const t0 = Date.now();
    const r = await hookProcess({ OUT_PATHS: '', DRV_PATH: drv, NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
    assert.equal(r.code, 0);
    assert.ok(Date.now() - t0 < 5000, 'the build was not held up');
    assert.match(r.stderr, /^narpush-hook: no narpush daemon is listening on .*; spooled the request to .*\n$/);
    const files = await readdir(spoolDir(stateDir));
    assert.equal(files.length, 1);
    assert.deepEqual(JSON.parse(await readFile(path.join(spoolDir(stateDir), files[0]!), 'utf8')), { op: 'enqueue', paths: [], drv });

    const d = await startFakeDaemon({ dir: t.dir });
    try {
      await eventually(() => d.done.has(drv), 5000, 'spooled drv uploaded');
      assert.deepEqual(await readdir(spoolDir(stateDir)), []);
    } finally {
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

test('a daemon that accepts but never answers: the hook spools after its ack timeout', async () => {
  const t = await tempDir();
  const held: Socket[] = [];
  const silent = createServer((s) => held.push(s));
  const socket = path.join(t.dir, 'silent.sock');
  await new Promise<void>((r) => silent.listen(socket, r));
  try {
    const a = fakePath('a');
    const t0 = Date.now();
    const out = await runHook({ OUT_PATHS: a, NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: t.dir }, { ackTimeoutMs: 300 });
    const ms = Date.now() - t0;
    assert.equal(out.result, 'spooled');
    assert.match(out.message!, /did not answer within 300 ms/);
    assert.ok(ms >= 300 && ms < 3000, `${ms} ms`);
    assert.equal((await readdir(spoolDir(t.dir))).length, 1);
  } finally {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
    await t.remove();
  }
});

test('a request the daemon refuses is reported, not spooled', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({ dir: t.dir });
  try {
    const out = await runHook({ OUT_PATHS: '/etc/passwd /nix/store/../../etc/shadow', NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: d.stateDir });
    assert.equal(out.result, 'rejected');
    assert.match(out.message!, /rejected 2 path\(s\): \/etc\/passwd \(not a store path/);
    assert.deepEqual(await readdir(spoolDir(d.stateDir)), []);
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('nothing works (no daemon, state dir unwritable): still exit 0, one line, no stack trace', async () => {
  const t = await tempDir();
  try {
    const locked = path.join(t.dir, 'locked');
    await mkdir(locked, { mode: 0o500 });
    await chmod(locked, 0o500);
    const cases: NodeJS.ProcessEnv[] = [
      { OUT_PATHS: fakePath('a'), NARPUSH_SOCKET: path.join(t.dir, 'none.sock'), NARPUSH_STATE_DIR: '/proc/self/nonexistent' },
      { OUT_PATHS: fakePath('a'), NARPUSH_SOCKET: '/dev/null', NARPUSH_STATE_DIR: '/dev/null' },
      { OUT_PATHS: 'x'.repeat(100_000), NARPUSH_SOCKET: path.join(t.dir, 'none.sock'), NARPUSH_STATE_DIR: path.join(t.dir, 'ok') },
      {},
    ];
    for (const env of cases) {
      const r = await hookProcess(env);
      assert.equal(r.code, 0, JSON.stringify(env).slice(0, 200));
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(r.stderr.split('\n').filter(Boolean).length <= 1, r.stderr);
      assert.match(r.stderr, /^narpush-hook: /);
    }
    const lost = await runHook({ OUT_PATHS: fakePath('a'), NARPUSH_SOCKET: path.join(t.dir, 'none.sock'), NARPUSH_STATE_DIR: '/proc/self/nonexistent' });
    assert.equal(lost.result, 'lost');
    assert.match(lost.message!, /cannot spool .* these paths will not be uploaded/);
  } finally {
    await t.remove();
  }
});
