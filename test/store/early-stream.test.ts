// The store stream opened before the command loads (store/early-stream.ts,
// cli/early-store.ts): a stream nobody takes is closed and its daemon
// reaped; a failure to open shows only when taken; the CLI starts it for
// upload-path and closes it when the command fails before using it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { openStreamEarly } from '../../src/store/early-stream.js';
import { startStoreEarly } from '../../src/cli/early-store.js';
import { narpush } from '../helpers/run.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A stand-in daemon: writes its pid, then echoes stdin until it ends. */
async function fakeDaemon(dir: string): Promise<{ command: string; pidFile: string }> {
  const pidFile = path.join(dir, 'pid');
  const command = path.join(dir, 'nix-daemon');
  await writeFile(command, `#!/bin/sh\necho $$ > '${pidFile}'\nexec cat\n`);
  await chmod(command, 0o755);
  return { command, pidFile };
}

async function readPid(pidFile: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const text = await readFile(pidFile, 'utf8').catch(() => '');
    if (text.endsWith('\n')) return Number(text.trim());
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the fake daemon never started');
}

test('a stream nobody took is closed by release, and its daemon reaped', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-early-'));
  try {
    const fake = await fakeDaemon(dir);
    const early = openStreamEarly({ kind: 'spawn', command: fake.command, args: [], env: process.env });
    const pid = await readPid(fake.pidFile);
    assert.ok(alive(pid));
    await early.release();
    assert.ok(!alive(pid), 'the daemon has exited once release returns');
    assert.equal(early.take(), undefined, 'nothing to take after release');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a taken stream is the caller\'s: taken once, left open by release', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-early-'));
  try {
    const fake = await fakeDaemon(dir);
    const early = openStreamEarly({ kind: 'spawn', command: fake.command, args: [], env: process.env });
    const opening = early.take();
    assert.ok(opening);
    assert.equal(early.take(), undefined, 'the second take gets nothing');
    const opened = await opening;
    await early.release();
    // Still open: the stand-in echoes what is written.
    const echoed = new Promise<Buffer>((resolve) => opened.stream.once('data', resolve));
    opened.stream.write('ping');
    assert.equal((await echoed).toString(), 'ping');
    opened.stream.end();
    await opened.dispose();
    assert.ok(!alive(await readPid(fake.pidFile)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failure to open shows only when the stream is taken', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  try {
    const notTaken = openStreamEarly({ kind: 'spawn', command: 'narpush-no-such-daemon', args: [], env: process.env });
    await notTaken.release();
    const taken = openStreamEarly({ kind: 'spawn', command: 'narpush-no-such-daemon', args: [], env: process.env });
    await assert.rejects(taken.take()!, (e: Error & { code?: string }) => e.code === 'STORE_UNAVAILABLE');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, []);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('only the commands that read the store at once start it early', () => {
  const env = { NIX_REMOTE: 'unix:///nonexistent/socket' };
  const started = (args: string[]): boolean => {
    const early = startStoreEarly(['node', 'narpush', ...args], env);
    void early?.release();
    return early !== undefined;
  };
  assert.equal(started(['upload-path', '--to', 'file:///x', '/nix/store/a']), true);
  assert.equal(started(['--debug', 'path-info', '/nix/store/a']), true);
  assert.equal(started(['upload-path', '--help']), false);
  assert.equal(started(['--version']), false);
  assert.equal(started(['generate-key', 'k', 'a', 'b']), false);
  assert.equal(started(['daemon', '--to', 'file:///x']), false);
  // An unusable NIX_REMOTE is left for the command to report.
  assert.equal(startStoreEarly(['node', 'narpush', 'upload-path'], { NIX_REMOTE: 'ssh-ng://host' }), undefined);
});

test('upload-path with a bad cache URL says so in one line and leaves no daemon behind', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-early-'));
  try {
    const fake = await fakeDaemon(dir);
    const env = {
      ...process.env,
      PATH: `${dir}:${process.env.PATH ?? ''}`,
      NIX_REMOTE: 'local',
    };
    const r = await narpush(['upload-path', '--to', 'gopher://cache', '/nix/store/00000000000000000000000000000000-x'], { env });
    assert.notEqual(r.code, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /gopher/);
    // The daemon was started before the URL was read, and is gone now.
    const pid = await readPid(fake.pidFile);
    assert.ok(!alive(pid), 'the early daemon was reaped');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a daemon that cannot be started early is reported by the command as one line, not as a bug', async () => {
  // The early stream's error is made in bin/narpush's entry and reported by its
  // commands, two copies of errors.ts in the bundle (scripts/bundle.mjs).
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-early-'));
  try {
    const onlyNode = path.join(dir, 'bin');
    await mkdir(onlyNode);
    await symlink(process.execPath, path.join(onlyNode, 'node'));
    const r = await narpush(['upload-path', '--to', `file://${dir}/cache`, '/nix/store/00000000000000000000000000000000-x'], {
      env: { ...process.env, PATH: onlyNode, NIX_REMOTE: 'local' },
    });
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, "narpush: error: cannot run 'nix-daemon --stdio --option store local': spawn nix-daemon ENOENT\n");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
