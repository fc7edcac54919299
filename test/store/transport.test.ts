/**
 * How NIX_REMOTE and the socket variables choose the transport. The rules
 * are Nix's (src/libstore/globals.cc: nixDaemonSocketFile; store-api.cc:
 * "daemon", "unix://", "local", "auto"); the end-to-end check that narpush
 * and nix pick the same daemon is in path-info-cli.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { daemonSocketPath, openStream, storeTransportFromEnv } from '../../src/store/transport.js';

test('the socket path: NIX_DAEMON_SOCKET_PATH, else NIX_STATE_DIR/daemon-socket/socket, else /nix/var/nix', () => {
  assert.equal(daemonSocketPath({}), '/nix/var/nix/daemon-socket/socket');
  assert.equal(daemonSocketPath({ NIX_STATE_DIR: '/state/' }), '/state/daemon-socket/socket');
  assert.equal(daemonSocketPath({ NIX_STATE_DIR: '/state', NIX_DAEMON_SOCKET_PATH: '/s' }), '/s');
});

test('NIX_REMOTE chooses socket, spawned daemon or auto', () => {
  const env = { NIX_DAEMON_SOCKET_PATH: '/run/s' };
  assert.deepEqual(storeTransportFromEnv({ ...env, NIX_REMOTE: 'daemon' }), { kind: 'socket', path: '/run/s' });
  assert.deepEqual(storeTransportFromEnv({ NIX_REMOTE: 'unix:///other/socket' }), { kind: 'socket', path: '/other/socket' });
  const local = storeTransportFromEnv({ NIX_REMOTE: 'local' });
  assert.equal(local.kind, 'spawn');
  assert.deepEqual(local.kind === 'spawn' && local.args, ['--stdio', '--option', 'store', 'local']);
  const rooted = storeTransportFromEnv({ NIX_REMOTE: 'local?root=/tmp/r' });
  assert.deepEqual(rooted.kind === 'spawn' && rooted.args, ['--stdio', '--option', 'store', 'local?root=/tmp/r']);
  for (const remote of [undefined, '', 'auto']) {
    const t = storeTransportFromEnv({ ...env, NIX_REMOTE: remote });
    assert.equal(t.kind, 'auto');
    assert.equal(t.kind === 'auto' && t.socketPath, '/run/s');
    assert.deepEqual(t.kind === 'auto' && t.spawn.args, ['--stdio']);
  }
});

test('a remote store in NIX_REMOTE is refused with STORE_UNSUPPORTED', () => {
  for (const remote of ['ssh-ng://host', 's3://bucket', 'file:///cache']) {
    assert.throws(() => storeTransportFromEnv({ NIX_REMOTE: remote }), { code: 'STORE_UNSUPPORTED' });
  }
});

test('auto: the socket when something listens on it, else the spawned daemon, started at once when there is no socket', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-transport-'));
  const server = createServer((c) => c.end());
  try {
    const spawnT = { kind: 'spawn' as const, command: 'cat', args: [] as string[], env: process.env };
    const how = async (socketPath: string): Promise<string> => {
      const opened = await openStream({ kind: 'auto', socketPath, spawn: spawnT });
      opened.stream.on('error', () => {});
      opened.stream.destroy();
      await opened.dispose();
      return opened.description;
    };
    const listening = path.join(dir, 'listening.sock');
    await new Promise<void>((resolve) => server.listen(listening, resolve));
    assert.match(await how(listening), /^the Nix daemon at /);
    assert.match(await how(path.join(dir, 'nothing-here.sock')), /^'cat/, 'no socket: spawned');
    const file = path.join(dir, 'a-file');
    await writeFile(file, '');
    assert.match(await how(path.join(file, 'sock')), /^'cat/, 'a file where a directory should be: spawned');
    assert.match(await how(file), /^'cat/, 'nothing listens (ECONNREFUSED): spawned');
    // Started before openStream returns, with no turn of the event loop (bin/narpush loads its code meanwhile).
    const children = (): string[] => readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').split(' ').filter(Boolean);
    const before = children();
    const opening = openStream({ kind: 'auto', socketPath: path.join(dir, 'absent.sock'), spawn: spawnT });
    const now = children();
    const opened = await opening;
    opened.stream.on('error', () => {});
    opened.stream.destroy();
    await opened.dispose();
    assert.equal(now.length, before.length + 1, 'the daemon was a child process already');
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
