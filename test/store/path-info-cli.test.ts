/**
 * `narpush path-info` against `nix path-info` (Nix 2.8) on the same store:
 * through a running nix-daemon, through `nix-daemon --stdio` (NIX_REMOTE=local),
 * and with NIX_REMOTE unset (auto) both with and without a daemon.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixEnv } from '../helpers/nix.js';
import { type NixDaemon, startNixDaemon } from '../helpers/nix-daemon.js';
import { narpush } from '../helpers/run.js';
import { type StoreFixture, storeFixture } from './fixture.js';

interface NixJsonEntry {
  path: string;
  references: string[];
  deriver?: string;
  ca?: string;
  signatures?: string[];
}

async function compare(args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<string> {
  const expected = (await nix('nix', ['path-info', ...args], env)).toString();
  const r = await narpush(['path-info', ...args], { env, ...(cwd ? { cwd } : {}) });
  assert.equal(r.stderr, '', 'narpush wrote nothing on stderr');
  assert.equal(r.code, 0);
  assert.equal(r.stdout.toString(), expected);
  return expected;
}

let fx: StoreFixture;
let daemon: NixDaemon;
let scratch: string;

before(async () => {
  fx = await storeFixture();
  daemon = await startNixDaemon();
  scratch = await mkdtemp(path.join(tmpdir(), 'narpush-path-info-'));
});

after(async () => {
  await daemon?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

test('the fixture closure has every shape the comparison must cover (checked with Nix)', async () => {
  const entries = JSON.parse((await nix('nix', ['path-info', '--json', '-r', fx.top])).toString()) as NixJsonEntry[];
  const by = new Map(entries.map((e) => [e.path, e]));
  assert.match(by.get(fx.added)?.ca ?? '', /^fixed:r:sha256:/, 'nix-store --add path is content-addressed');
  assert.match(by.get(fx.text)?.ca ?? '', /^text:sha256:/, 'builtins.toFile path is content-addressed');
  assert.match(by.get(fx.fixed)?.ca ?? '', /^fixed:sha256:/, 'fixed-output path is content-addressed');
  assert.equal(by.get(fx.added)?.deriver, undefined, 'a path without deriver');
  assert.ok(by.get(fx.top)?.references.includes(fx.top), 'a self-reference');
  assert.ok(by.get(fx.left)?.references.includes(fx.leaf) && by.get(fx.right)?.references.includes(fx.leaf), 'a diamond');
  assert.ok(by.get(fx.leaf)?.signatures?.length, 'a signed path');
});

const modes: [string, () => NodeJS.ProcessEnv][] = [
  ['a running nix-daemon (NIX_REMOTE=daemon)', () => daemon.env],
  ['no daemon: nix-daemon --stdio (NIX_REMOTE=local)', () => nixEnv({ NIX_REMOTE: 'local' })],
  [
    'no daemon listening, NIX_REMOTE unset (auto falls back to nix-daemon --stdio)',
    () => {
      const env = nixEnv({ NIX_DAEMON_SOCKET_PATH: path.join(scratch, 'no-daemon-here') });
      delete env.NIX_REMOTE;
      return env;
    },
  ],
];

for (const [label, env] of modes) {
  describe(`path-info equals nix path-info through ${label}`, () => {
    test('--json --recursive on the whole closure', async () => {
      await compare(['--json', '--recursive', fx.top], env());
    });
    test('--json on several paths given out of order, including content-addressed ones', async () => {
      await compare(['--json', fx.right, fx.added, fx.text, fx.leaf, fx.fixed, fx.top], env());
    });
    test('-r without --json: one path per line, references first', async () => {
      await compare(['-r', fx.top], env());
    });
    test('without flags on several paths', async () => {
      await compare([fx.top, fx.leaf, fx.left, fx.added], env());
    });
  });
}

describe('path-info arguments', () => {
  test('NIX_REMOTE unset with a daemon listening: narpush uses the daemon', async () => {
    const env = { ...daemon.env };
    delete env.NIX_REMOTE;
    const before = (daemon.output().match(/accepted connection/g) ?? []).length;
    await compare(['--json', fx.top], env);
    const afterCount = (daemon.output().match(/accepted connection/g) ?? []).length;
    assert.ok(afterCount > before, 'the daemon logged a connection from narpush');
  });

  test('a symlink such as ./result is followed', async () => {
    await symlink(fx.top, path.join(scratch, 'result'));
    const expected = (await nix('nix', ['path-info', '--json', '-r', fx.top])).toString();
    const r = await narpush(['path-info', '--json', '-r', './result'], { env: daemon.env, cwd: scratch });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), expected);
  });

  test('a .drv stands for its outputs, as in Nix 2.8', async () => {
    await compare(['--json', fx.multiDrv], daemon.env);
    await compare(['-r', fx.topDrv], daemon.env);
  });

  test('an invalid store path is a one-line error and exit 1, with and without --json', async () => {
    const missing = '/nix/store/00000000000000000000000000000000-narpush-not-there';
    for (const args of [[missing], ['--json', missing], ['-r', fx.top, missing]]) {
      const r = await narpush(['path-info', ...args], { env: daemon.env });
      assert.equal(r.code, 1);
      assert.equal(r.stdout.length, 0);
      assert.equal(r.stderr, `narpush: error: path '${missing}' is not valid\n`);
    }
  });

  test('a path that does not exist or is outside the store is a one-line error', async () => {
    for (const p of [path.join(scratch, 'nothing-here'), scratch]) {
      const r = await narpush(['path-info', p], { env: daemon.env });
      assert.equal(r.code, 1);
      assert.equal(r.stderr.split('\n').length, 2, r.stderr);
      assert.match(r.stderr, /^narpush: error: /);
    }
  });

  test('an unusable NIX_REMOTE is a one-line error', async () => {
    const r = await narpush(['path-info', fx.top], { env: nixEnv({ NIX_REMOTE: 'ssh-ng://example.org' }) });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^narpush: error: NIX_REMOTE='ssh-ng:\/\/example.org' is not a local Nix store/);
  });
});
