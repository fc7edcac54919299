/**
 * StoreClient against a real nix-daemon (socket) and a spawned
 * `nix-daemon --stdio`, with Nix's own tools as the referee.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { StoreClient } from '../../src/store/client.js';
import { type StoreTransport, storeTransportFromEnv } from '../../src/store/transport.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { formatHash } from '../../src/hash/hash.js';
import { nix, nixEnv } from '../helpers/nix.js';
import { run } from '../helpers/run.js';
import { type NixDaemon, startNixDaemon } from '../helpers/nix-daemon.js';
import { type StoreFixture, storeFixture } from './fixture.js';

let fx: StoreFixture;
let daemon: NixDaemon;

before(async () => {
  fx = await storeFixture();
  daemon = await startNixDaemon();
});

after(async () => {
  await daemon?.stop();
});

const transports: [string, () => StoreTransport][] = [
  ['the daemon socket', () => ({ kind: 'socket', path: daemon.socketPath })],
  ['nix-daemon --stdio', () => storeTransportFromEnv(nixEnv({ NIX_REMOTE: 'local' }))],
];

for (const [label, transport] of transports) {
  describe(`StoreClient over ${label}`, () => {
    let client: StoreClient;
    before(async () => {
      client = await StoreClient.open({ transport: transport() });
    });
    after(async () => {
      await client?.close();
    });

    test('speaks protocol 1.34 with Nix 2.8', () => {
      assert.equal(client.protocolVersion, 0x122);
      assert.equal(client.daemonNixVersion, '2.8.0');
    });

    test('queryPathInfo matches nix-store --query', async () => {
      const info = await client.queryPathInfo(parseStorePath(fx.top));
      assert.ok(info);
      const q = async (flag: string): Promise<string> => (await nix('nix-store', ['-q', flag, fx.top])).toString().trim();
      assert.equal(formatHash(info.narHash, 'nix32'), await q('--hash'));
      assert.equal(String(info.narSize), await q('--size'));
      assert.deepEqual(info.references.map((r) => r.path).sort(), (await q('--references')).split('\n').sort());
      assert.equal(info.deriver?.path, await q('--deriver'));
    });

    test('an invalid path has no info', async () => {
      assert.equal(await client.queryPathInfo(parseStorePath('/nix/store/00000000000000000000000000000000-nope')), undefined);
    });

    test('a daemon error (unknown .drv) is a clean INVALID_PATH error and the next request works', async () => {
      const missing = parseStorePath('/nix/store/00000000000000000000000000000000-nope.drv');
      await assert.rejects(client.derivationOutputs(missing), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'INVALID_PATH');
        assert.equal(e.message, `nix-daemon: path '${missing.path}' is not valid`);
        return true;
      });
      assert.equal((await client.queryPathInfo(parseStorePath(fx.leaf)))?.path.path, fx.leaf);
    });

    test("a derivation's outputs equal nix-store -q --outputs", async () => {
      for (const drv of [fx.multiDrv, fx.topDrv]) {
        const outputs = await client.derivationOutputs(parseStorePath(drv));
        const expected = (await nix('nix-store', ['-q', '--outputs', drv])).toString().trim().split('\n').sort();
        assert.deepEqual([...outputs.values()].map((p) => p?.path).sort(), expected);
      }
      const multi = await client.derivationOutputs(parseStorePath(fx.multiDrv));
      assert.deepEqual([...multi.keys()].sort(), ['dev', 'lib', 'out']);
      assert.equal(multi.get('out')?.path, fx.multiOut);
    });

    test('queryValidPaths and isValidPath', async () => {
      const missing = parseStorePath('/nix/store/00000000000000000000000000000000-nope');
      const valid = await client.queryValidPaths([parseStorePath(fx.top), missing, parseStorePath(fx.leaf)]);
      assert.deepEqual(valid.map((p) => p.path), [fx.top, fx.leaf].sort());
      assert.equal(await client.isValidPath(missing), false);
      assert.equal(await client.isValidPath(parseStorePath(fx.text)), true);
    });

    test('a thousand pipelined queries come back in order', async () => {
      const paths = [fx.top, fx.leaf, fx.left, fx.right, fx.added, fx.text, fx.fixed].map((p) => parseStorePath(p));
      const wanted = Array.from({ length: 1000 }, (_, i) => paths[i % paths.length]!);
      const infos = await Promise.all(wanted.map((p) => client.queryPathInfo(p)));
      assert.deepEqual(
        infos.map((i) => i?.path.path),
        wanted.map((p) => p.path),
      );
    });
  });
}

test('a pool of connections answers like one connection', async () => {
  const pool = await StoreClient.open({ transport: { kind: 'socket', path: daemon.socketPath }, connections: 3 });
  try {
    assert.equal(pool.connectionCount, 3);
    const paths = [fx.top, fx.leaf, fx.left, fx.right].map((p) => parseStorePath(p));
    const infos = await Promise.all(Array.from({ length: 40 }, (_, i) => pool.queryPathInfo(paths[i % 4]!)));
    assert.deepEqual(
      infos.map((i) => i?.path.path),
      Array.from({ length: 40 }, (_, i) => paths[i % 4]!.path),
    );
  } finally {
    await pool.close();
  }
});

async function tempRootsMention(p: string): Promise<boolean> {
  const dir = '/nix/var/nix/temproots';
  for (const f of await readdir(dir)) {
    const text = await readFile(path.join(dir, f), 'utf8').catch(() => '');
    if (text.includes(p)) return true;
  }
  return false;
}

test('addTempRoot registers a GC root that lives as long as the connection', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-temproot-'));
  const file = path.join(dir, 'narpush-temproot');
  await writeFile(file, randomUUID());
  const added = (await nix('nix-store', ['--add', file])).toString().trim();
  await rm(dir, { recursive: true, force: true });
  const client = await StoreClient.open({ transport: { kind: 'socket', path: daemon.socketPath } });
  try {
    assert.equal(await tempRootsMention(added), false);
    await client.addTempRoot(parseStorePath(added));
    assert.equal(await tempRootsMention(added), true, 'the daemon wrote the temp root');
  } finally {
    await client.close();
  }
  const deadline = Date.now() + 5000;
  while ((await tempRootsMention(added)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await tempRootsMention(added), false, 'the temp root went away with the connection');
});

test('addIndirectRoot makes a symlink a GC root the way nix-build -o does: nix-store --delete refuses the path until the link is gone', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-indirect-'));
  try {
    const file = path.join(dir, 'narpush-indirect');
    await writeFile(file, randomUUID());
    const added = (await nix('nix-store', ['--add', file])).toString().trim();
    const link = path.join(dir, 'root');
    await symlink(added, link);
    const client = await StoreClient.open({ transport: { kind: 'socket', path: daemon.socketPath } });
    try {
      await client.addIndirectRoot(link);
      await assert.rejects(client.addIndirectRoot('relative/root'), { code: 'BAD_ROOT_PATH' });
    } finally {
      await client.close();
    }
    // The root outlives the connection (a temporary root would not).
    const roots = (await nix('nix-store', ['--query', '--roots', added])).toString();
    assert.match(roots, new RegExp(`^${link} -> ${added}$`, 'm'));
    const refused = await run('nix-store', ['--delete', added], { env: nixEnv() });
    assert.notEqual(refused.code, 0, 'a rooted path is not deleted');
    assert.match(refused.stderr, /is still alive|since it is still alive/);
    await unlink(link);
    await nix('nix-store', ['--delete', added]);
    assert.equal((await run('test', ['-e', added])).code, 1, 'deleted once the link is gone');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a socket nobody listens on is a clean STORE_UNAVAILABLE error', async () => {
  await assert.rejects(StoreClient.open({ transport: { kind: 'socket', path: '/nonexistent/narpush/socket' } }), {
    code: 'STORE_UNAVAILABLE',
  });
});

test('a daemon command that does not exist is a clean STORE_UNAVAILABLE error', async () => {
  await assert.rejects(
    StoreClient.open({ transport: { kind: 'spawn', command: 'narpush-no-such-daemon', args: [], env: process.env } }),
    { code: 'STORE_UNAVAILABLE', message: /cannot run 'narpush-no-such-daemon/ },
  );
});

test('a spawned daemon that dies at once gives its last stderr line in the error', async () => {
  await assert.rejects(
    StoreClient.open({
      transport: { kind: 'spawn', command: '/bin/sh', args: ['-c', 'echo "error: cannot open the store" >&2; exit 1'], env: process.env },
    }),
    { code: 'STORE_CONNECTION_CLOSED', message: /handshake.*cannot open the store/ },
  );
});
