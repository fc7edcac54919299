// The hook's GC roots against a real nix-daemon, as the NixOS module runs
// it: not root (setpriv to an unprivileged user), talking to nix-daemon's
// socket. Nix 2.8 lets such a user register an indirect root, and the
// collector (root) follows the link into a state directory only that user
// can read. Uses `nix-store --delete` of one fresh path, never --gc.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, mkdir, readFile, readlink, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { gcRootsDir, nixAutoRootsDir } from '../../src/daemon/gc-roots.js';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { type NixDaemon, startNixDaemon } from '../helpers/nix-daemon.js';
import { REPO_ROOT, run, runOk } from '../helpers/run.js';
import { HAS_STRACE, dirSyncedAt } from '../helpers/strace.js';
import { tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let daemon: NixDaemon;
let work: { dir: string; remove(): Promise<void> };

before(async () => {
  daemon = await startNixDaemon();
  work = await tempDir('narpush-hook-roots-');
});

after(async () => {
  await daemon?.stop();
  await work?.remove();
});

test('the hook as an unprivileged user roots what it spools through the nix-daemon socket; nix-store --delete refuses the path', async (t) => {
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  if (!setpriv || process.getuid?.() !== 0) return t.skip('needs setpriv and root');
  const uid = Number((await runOk('id', ['-u', 'nobody'])).stdout.toString().trim());
  const gid = Number((await runOk('id', ['-g', 'nobody'])).stdout.toString().trim());
  // The user may reach the daemon's socket, and owns a state directory nobody else can read (0700).
  await chmod(work.dir, 0o755);
  await chmod(path.dirname(daemon.socketPath), 0o755);
  const stateDir = path.join(work.dir, 'state');
  await mkdir(stateDir, { mode: 0o700 });
  await chown(stateDir, uid, gid);

  const [out] = await nixBuildExpr(`lib.mk { name = "np-hook-root"; salt = "${randomUUID()}"; script = "echo rooted > $out"; }`);
  const clean = { ...process.env };
  delete clean.OUT_PATHS;
  delete clean.DRV_PATH;
  delete clean.NIX_REMOTE;
  // Under strace where there is one: the hook, as that user, syncs Nix's gcroots/auto after registering.
  const trace = path.join(work.dir, 'hook.trace');
  const hook = [setpriv, '--reuid', String(uid), '--regid', String(gid), '--clear-groups', '--', HOOK];
  const traced = HAS_STRACE ? ['strace', '-f', '-qq', '-o', trace, '-e', 'trace=openat,fsync', ...hook] : hook;
  const r = await run(traced[0]!, traced.slice(1), {
    env: {
      ...clean,
      OUT_PATHS: out!,
      NARPUSH_SOCKET: path.join(work.dir, 'no-narpush.sock'),
      NARPUSH_STATE_DIR: stateDir,
      NIX_DAEMON_SOCKET_PATH: daemon.socketPath,
    },
  });
  assert.equal(r.code, 0);
  assert.match(r.stderr, /^narpush-hook: no narpush daemon is listening on .*; spooled the request to .*\n$/);
  assert.doesNotMatch(r.stderr, /GC root/, 'the root was registered');

  if (HAS_STRACE) {
    const lines = (await readFile(trace, 'utf8')).split('\n');
    const auto = nixAutoRootsDir(process.env);
    assert.ok(dirSyncedAt(lines, auto) >= 0, `the hook opened and fsynced ${auto}: ${lines.filter((l) => l.includes('gcroots')).join(' / ')}`);
  }

  const link = path.join(gcRootsDir(stateDir), path.basename(out!));
  assert.equal(await readlink(link), out);
  assert.equal((await readdir(path.join(stateDir, 'spool'))).length, 1);
  const roots = (await runOk('nix-store', ['--query', '--roots', out!], { env: nixEnv() })).stdout.toString();
  assert.match(roots, new RegExp(`^${link} -> ${out}$`, 'm'), 'the collector sees the root in the 0700 state directory');
  const refused = await run('nix-store', ['--delete', out!], { env: nixEnv() });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /still alive/);
  // Released (the daemon would do this after the upload): the path can go, and the auto entry with it.
  await run('rm', [link]);
  await runOk('nix-store', ['--delete', out!], { env: nixEnv() });
  assert.equal(existsSync(out!), false);
});
