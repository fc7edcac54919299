// GC roots for queued work with the real collector as the referee: S3
// refuses every connection; paths the daemon acknowledged and paths the
// hook spooled while the daemon was down (killed) survive `nix-store
// --delete` of their closure and `nix-store --gc`, before and after a daemon
// restart; once S3 is back every one is in the cache, Nix substitutes it
// back with signatures required, and no root is left (the links in the
// state directory and their /nix/var/nix/gcroots/auto entries).
//
// SERIAL: `nix-store --gc` deletes every unrooted path of the machine's
// store, including what other test files have just built with
// --no-out-link. Run this file alone (the .serial.test.ts suffix).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile, readdir, readlink } from 'node:fs/promises';
import * as path from 'node:path';
import { gcRootsDir } from '../../src/daemon/gc-roots.js';
import { runHook } from '../../src/daemon/hook.js';
import { spoolDir } from '../../src/daemon/spool.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { type FaultProxy, startFaultProxy } from '../helpers/fault-proxy.js';
import { nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { S3RVER_ENV, startS3rver, type S3rverHandle } from '../helpers/s3rver.js';
import { killLeftoverDaemons, startDaemonProcess, type DaemonProcess } from './daemon-process.js';
import { eventually, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
const AUTO = '/nix/var/nix/gcroots/auto';
let work: { dir: string; remove(): Promise<void> };
let secretKey: string;
let publicKey: string;
let s3: S3rverHandle;
let proxy: FaultProxy;

before(async () => {
  await requireNix();
  work = await tempDir('narpush-gc-roots-');
  secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  const r = await narpush(['generate-key', 'narpush-gc-roots-test-1', secretKey, pub]);
  assert.equal(r.code, 0, r.stderr);
  publicKey = (await readFile(pub, 'utf8')).trim();
  s3 = await startS3rver();
  proxy = await startFaultProxy({ targetPort: s3.port, seed: 16 });
});

after(async () => {
  await killLeftoverDaemons();
  await proxy?.stop();
  await s3?.stop();
  await work?.remove();
});

function start(socket: string, stateDir: string): Promise<DaemonProcess> {
  return startDaemonProcess({
    to: `s3://${s3.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`,
    socket,
    stateDir,
    env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
    args: ['--secret-key-file', secretKey, '--compression', 'none', '--retry-delay', '0.2', '--retry-max-delay', '0.5'],
  });
}

/** `count` fresh paths sharing one fresh dependency; with `hookEnv`, built with narpush-hook as the post-build-hook. */
async function build(label: string, count: number, hookEnv?: NodeJS.ProcessEnv): Promise<{ outs: string[]; stderr: string }> {
  const salt = randomUUID();
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')};
    dep = lib.mk { name = "np-gc-${label}-dep"; salt = "${salt}"; script = "mkdir $out; echo dep > $out/f"; };
  in builtins.genList (i: lib.mk { name = "np-gc-${label}\${toString i}"; salt = "${salt}"; script = "mkdir $out; echo \${toString i} > $out/f; echo \${dep} > $out/dep"; }) ${count}`;
  const args = ['-E', expr, '--no-out-link', ...(hookEnv ? ['--option', 'post-build-hook', HOOK] : [])];
  const r = await run('nix-build', args, { env: nixEnv(hookEnv ?? {}) });
  assert.equal(r.code, 0, `nix-build failed: ${r.stderr}`);
  return { outs: r.stdout.toString().trim().split('\n'), stderr: r.stderr };
}

const exists = async (p: string): Promise<boolean> => (await run('test', ['-e', p])).code === 0;

/** Try to delete each path of `closure` alone, then collect all garbage; every path must still be there. */
async function collectAndCheck(closure: readonly string[], when: string): Promise<void> {
  for (const p of closure) {
    const r = await run('nix-store', ['--delete', p], { env: nixEnv() });
    assert.notEqual(r.code, 0, `${when}: nix-store --delete ${p} must refuse`);
    assert.match(r.stderr, /still alive/, `${when}: ${r.stderr}`);
  }
  const gc = await run('nix-store', ['--gc'], { env: nixEnv() });
  assert.equal(gc.code, 0, gc.stderr);
  for (const p of closure) assert.ok(await exists(p), `${when}: ${p} survived nix-store --gc`);
}

/** Entries of /nix/var/nix/gcroots/auto that point into `dir`. */
async function autoRootsInto(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(AUTO).catch(() => [] as string[])) {
    const target = await readlink(path.join(AUTO, n)).catch(() => '');
    if (target.startsWith(`${dir}/`)) out.push(target);
  }
  return out.sort();
}

test('S3 refusing: acknowledged and spooled paths survive nix-store --delete and --gc across a daemon restart; after S3 recovers they are all in the cache and no root is left', async () => {
  const socket = path.join(work.dir, 'd.sock');
  const stateDir = path.join(work.dir, 'state');
  const roots = gcRootsDir(stateDir);
  await proxy.down();

  // 1. Acknowledged by a daemon that cannot reach S3.
  const acked = await build('acked', 3);
  const first = await start(socket, stateDir);
  const h = await runHook({ OUT_PATHS: acked.outs.join(' '), NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
  assert.equal(h.result, 'queued', JSON.stringify(h));
  const ackedClosure = await nixClosure(acked.outs);
  await eventually(async () => (await first.status()).failures > 0, 30_000, 'a failed attempt');
  await collectAndCheck(ackedClosure, 'daemon up, S3 refusing');

  // 2. The daemon crashes; builds go on, and the hook spools (and roots) their outputs.
  assert.equal((await first.stop('SIGKILL')).signal, 'SIGKILL');
  const spooled = await build('spooled', 2, { NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
  assert.match(spooled.stderr, /narpush-hook: no narpush daemon is listening on .*; spooled the request/);
  assert.doesNotMatch(spooled.stderr, /GC root/, 'the hook registered its roots');
  const spoolFiles = (await readdir(spoolDir(stateDir))).length;
  assert.equal(spoolFiles, 3, 'one spool file per build (Nix 2.8 passes the .drv)');
  const spooledClosure = await nixClosure(spooled.outs);
  const all = [...new Set([...ackedClosure, ...spooledClosure])];
  assert.ok((await autoRootsInto(roots)).length >= acked.outs.length + spooled.outs.length, 'registered with the Nix daemon');
  await collectAndCheck(all, 'no daemon running');

  // 3. Restarted, S3 still refusing: it adopts the spooled roots and keeps them.
  const second = await start(socket, stateDir);
  try {
    await eventually(async () => (await readdir(spoolDir(stateDir))).length === 0, 30_000, 'spool ingested');
    await eventually(async () => (await second.status()).failures > 0, 30_000, 'a failed attempt');
    await collectAndCheck(all, 'after the restart');

    // 4. S3 is back: everything goes up, and every root goes.
    await proxy.up();
    const s = await second.idle(120_000);
    await assertCacheHas(httpFetcher(s3.httpUrl), all, publicKey);
    await eventually(async () => (await readdir(roots)).length === 0, 10_000, 'no link left in the state directory');

    // Nothing holds them now: deleting the closure works, and Nix gets it back from the cache.
    const del = await run('nix-store', ['--delete', ...all], { env: nixEnv() });
    assert.equal(del.code, 0, `nothing roots them any more: ${del.stderr}`);
    for (const p of all) assert.equal(await exists(p), false, `${p} deleted`);
    assert.deepEqual(await autoRootsInto(roots), [], 'the collector removed its gcroots/auto entries');
    const outs = [...acked.outs, ...spooled.outs];
    const r = await run(
      'nix-store',
      ['-r', ...outs, '--option', 'substituters', s3.httpUrl, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
      { env: nixEnv() },
    );
    assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
    assert.equal((await run('nix-store', ['--verify-path', ...all], { env: nixEnv() })).code, 0);

    console.log(
      `gc-roots scenario: acknowledged ${acked.outs.length} paths, spooled ${spooledClosure.length} paths (${spoolFiles} spool files, one per build), ` +
        `survived GC ${all.length} closure paths (3 rounds), uploaded ${s.uploaded}, substituted back ${outs.length}`,
    );
  } finally {
    assert.equal((await second.stop()).code, 0, second.log());
  }
});
