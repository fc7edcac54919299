/**
 * How NIX_REMOTE and the socket variables choose the transport. The rules
 * are Nix's (src/libstore/globals.cc: nixDaemonSocketFile; store-api.cc:
 * "daemon", "unix://", "local", "auto"); the end-to-end check that narpush
 * and nix pick the same daemon is in path-info-cli.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonSocketPath, storeTransportFromEnv } from '../../src/store/transport.js';

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
