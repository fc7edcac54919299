// The daemon and bin/narpush-hook end to end with real Nix and s3rver: the
// Nix manual's post-build-hook scenario (Nix substitutes the result back,
// signatures required), SIGKILL and SIGTERM mid-upload through a slow S3,
// the daemon down during a build (its cache with narinfo- and
// ls-compression=br), 200 hook calls at once, hostile clients,
// `narpush status`, and systemd socket activation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { createConnection } from 'node:net';
import * as path from 'node:path';
import { nixAutoRootsDir } from '../../src/daemon/gc-roots.js';
import { runHook } from '../../src/daemon/hook.js';
import { replayJournal } from '../../src/daemon/journal.js';
import { spoolDir } from '../../src/daemon/spool.js';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { nix, nixBuildExpr, nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { HAS_STRACE, dirSyncedAt } from '../helpers/strace.js';
import { S3RVER_ENV, startS3rver, storedObject, type S3rverHandle } from '../helpers/s3rver.js';
import { killLeftoverDaemons, startDaemonProcess, type DaemonProcess } from './daemon-process.js';
import { eventually, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let work: { dir: string; remove(): Promise<void> };
let secretKey: string;
let publicKey: string;
let s3: S3rverHandle;

const daemonEnv = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

before(async () => {
  await requireNix();
  work = await tempDir('narpush-daemon-nix-');
  secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  const r = await narpush(['generate-key', 'narpush-daemon-test-1', secretKey, pub]);
  assert.equal(r.code, 0, r.stderr);
  publicKey = (await readFile(pub, 'utf8')).trim();
  s3 = await startS3rver();
});

after(async () => {
  await killLeftoverDaemons();
  await s3?.stop();
  await work?.remove();
});

let n = 0;
/** A fresh socket path and state dir (short: socket paths are limited to 107 bytes). */
function places(): { socket: string; stateDir: string } {
  n++;
  return { socket: path.join(work.dir, `d${n}.sock`), stateDir: path.join(work.dir, `state${n}`) };
}

function start(p: { socket: string; stateDir: string }, to = s3.url, args: readonly string[] = []): Promise<DaemonProcess> {
  return startDaemonProcess({
    to,
    ...p,
    env: daemonEnv(),
    args: ['--secret-key-file', secretKey, '--compression', 'none', '--retry-delay', '0.2', '--retry-max-delay', '1', ...args],
  });
}

/** `count` independent small paths sharing one dependency, fresh (salted); returns their output paths. */
async function buildPaths(count: number, extraEnv: NodeJS.ProcessEnv = {}, hook = false): Promise<{ outs: string[]; stderr: string; ms: number }> {
  const salt = randomUUID();
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')};
    dep = lib.mk { name = "np-daemon-dep"; salt = "${salt}"; script = "mkdir $out; echo dep > $out/f"; };
  in builtins.genList (i: lib.mk { name = "np-daemon-p\${toString i}"; salt = "${salt}"; script = "mkdir $out; echo \${toString i} > $out/f; echo \${dep} > $out/dep"; }) ${count}`;
  const args = ['-E', expr, '--no-out-link', ...(hook ? ['--option', 'post-build-hook', HOOK] : [])];
  const t0 = Date.now();
  const r = await run('nix-build', args, { env: nixEnv(extraEnv) });
  assert.equal(r.code, 0, `nix-build failed: ${r.stderr}`);
  return { outs: r.stdout.toString().trim().split('\n'), stderr: r.stderr, ms: Date.now() - t0 };
}

/** Every key in the bucket, through S3's ListObjectsV2 as s3rver serves it. */
async function listBucket(): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const q = new URLSearchParams({ 'list-type': '2', 'max-keys': '1000', ...(token ? { 'continuation-token': token } : {}) });
    const xml = await (await fetch(`${s3.httpUrl}?${q}`)).text();
    for (const m of xml.matchAll(/<Key>([^<]*)<\/Key>/g)) keys.push(m[1]!);
    token = /<IsTruncated>true<\/IsTruncated>/.test(xml) ? /<NextContinuationToken>([^<]*)</.exec(xml)?.[1] : undefined;
  } while (token);
  return keys;
}

/** The invariant a crash must not break: every narinfo in the bucket points at a NAR that is there. */
async function assertNoNarinfoWithoutNar(): Promise<number> {
  const keys = await listBucket();
  const set = new Set(keys);
  const narinfos = keys.filter((k) => k.endsWith('.narinfo'));
  for (const k of narinfos) {
    const ni = parseNarInfo(await (await fetch(`${s3.httpUrl}/${k}`)).text());
    assert.ok(set.has(ni.url), `${k} points at ${ni.url}, which is in the bucket`);
  }
  return narinfos.length;
}

/** Delete paths from the store (the daemon's temporary GC roots are gone once it is idle; allow it a moment). */
async function deleteFromStore(paths: readonly string[]): Promise<void> {
  let last = '';
  for (let i = 0; i < 50; i++) {
    const r = await run('nix-store', ['--delete', ...paths], { env: nixEnv() });
    if (r.code === 0) return;
    last = r.stderr;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`nix-store --delete failed: ${last}`);
}

test('the Nix manual scenario: nix-build with post-build-hook = narpush-hook; the daemon uploads; Nix substitutes it back with signatures required', async () => {
  const p = places();
  const d = await start(p);
  try {
    const { outs, stderr, ms } = await buildPaths(3, { NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir }, true);
    assert.match(stderr, /running post-build-hook/);
    assert.doesNotMatch(stderr, /narpush-hook:/, 'the hook had nothing to complain about');
    assert.ok(ms < 60_000);
    const closure = await nixClosure(outs);
    assert.equal(closure.length, 4);
    const s = await d.idle();
    assert.equal(s.uploaded, 4);
    assert.deepEqual(await readdir(spoolDir(p.stateDir)), [], 'nothing was spooled');
    // Nix 2.8.0 gives the hook an empty OUT_PATHS: the daemon resolved each .drv to its outputs.
    assert.match(d.log(), /queued \/nix\/store\/\S+-np-daemon-dep\.drv/);
    await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);

    await deleteFromStore(closure);
    for (const q of closure) assert.notEqual((await run('test', ['-e', q])).code, 0, `${q} deleted`);
    const r = await run(
      'nix-store',
      ['-r', ...outs, '--option', 'substituters', s3.httpUrl, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
      { env: nixEnv() },
    );
    assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
    assert.equal((await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() })).code, 0);
  } finally {
    const e = await d.stop();
    assert.deepEqual(e, { code: 0, signal: null }, d.log());
  }
});

test('SIGKILL while uploads are in flight through a slow S3: after a restart every queued path is in the cache, no narinfo without its NAR', async () => {
  const proxy = await startFaultProxy({ targetPort: s3.port, seed: 3, rates: { delay: 1 }, delayMs: 300 });
  const p = places();
  try {
    const { outs } = await buildPaths(8);
    const closure = await nixClosure(outs);
    const slow = await start(p, `s3://${s3.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`, ['--jobs', '3']);
    const hooked = await Promise.all(outs.map((o) => runHook({ OUT_PATHS: o, NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir })));
    assert.ok(hooked.every((h) => h.result === 'queued'), JSON.stringify(hooked));
    // Wait until a narinfo is published while other uploads are under way, then kill it mid-flight.
    // (One condition, checked on one status: the builds' outputs share one dependency, so after it
    // they finish together, 300 ms later; "2 done" and then "some in flight" could miss that window.)
    await eventually(
      async () => {
        const s = await slow.status();
        return s.uploaded >= 1 && s.inFlight.length > 0;
      },
      30_000,
      'some uploads done and others in flight',
    );
    const killed = await slow.stop('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    const journal = replayJournal(await readFile(path.join(p.stateDir, 'queue.journal'), 'utf8'));
    assert.ok(journal.pending.size > 0, 'work was left in the journal');
    await assertNoNarinfoWithoutNar();

    const d = await start(p);
    try {
      assert.match(d.log(), new RegExp(`${journal.pending.size} path\\(s\\) resumed from the journal`));
      await d.idle();
      await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
      await assertNoNarinfoWithoutNar();
      assert.deepEqual(await s3.pendingUploads(), []);
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  } finally {
    await proxy.stop();
  }
});

test('the daemon down during a build: the build succeeds at once, the paths are uploaded when the daemon starts', async () => {
  const p = places();
  const { outs, stderr, ms } = await buildPaths(2, { NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir }, true);
  assert.match(stderr, /narpush-hook: no narpush daemon is listening on .*; spooled the request/);
  assert.ok(ms < 30_000, `build took ${ms} ms`);
  assert.equal((await readdir(spoolDir(p.stateDir))).length, 3, 'one spool file per build');
  const closure = await nixClosure(outs);
  for (const q of closure) assert.equal((await fetch(`${s3.httpUrl}/${path.basename(q).slice(0, 32)}.narinfo`)).status, 404);

  // The default method, for once; and narinfos and listings Brotli-compressed, as Hydra writes cache.nixos.org's listings.
  const d = await start(p, `${s3.url}&narinfo-compression=br&ls-compression=br&write-nar-listing=true`, ['--compression', 'xz']);
  try {
    const s = await d.idle();
    assert.equal(s.uploaded, 3);
    assert.deepEqual(await readdir(spoolDir(p.stateDir)), []);
    const nis = await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
    assert.ok(nis.every((ni) => ni.compression === 'xz'));
    for (const q of closure) {
      for (const key of [`${path.basename(q).slice(0, 32)}.narinfo`, `${path.basename(q).slice(0, 32)}.ls`]) {
        assert.equal((await storedObject(`${s3.httpUrl}/${key}`)).encoding, 'br', `${key}: stored with Content-Encoding br`);
      }
    }
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

test('200 hook calls at once (20 of them real hook processes): all acknowledged, each path uploaded once', async () => {
  const p = places();
  const { outs } = await buildPaths(40);
  const closure = await nixClosure(outs);
  const d = await start(p, s3.url, ['--jobs', '8']);
  try {
    const before = s3.requests.length;
    // A generous ack timeout: 20 node processes starting at once starve a small CI machine's CPUs
    // (the test's own event loop included) for longer than the default 2 s; then the hook would
    // rightly spool, but this test is about the daemon acknowledging everything.
    const env = (i: number) => ({
      OUT_PATHS: outs[i % outs.length]!,
      NARPUSH_SOCKET: p.socket,
      NARPUSH_STATE_DIR: p.stateDir,
      NARPUSH_HOOK_TIMEOUT: '30',
    });
    const clean = { ...process.env };
    delete clean.OUT_PATHS;
    delete clean.DRV_PATH;
    const [inProcess, processes] = await Promise.all([
      Promise.all(Array.from({ length: 180 }, (_, i) => runHook(env(i)))),
      Promise.all(Array.from({ length: 20 }, (_, i) => run(HOOK, [], { env: { ...clean, ...env(180 + i) } }))),
    ]);
    assert.ok(inProcess.every((h) => h.result === 'queued'), JSON.stringify(inProcess.filter((h) => h.result !== 'queued')));
    for (const r of processes) {
      assert.equal(r.code, 0);
      assert.equal(r.stderr, '', 'acknowledged, not spooled');
    }
    assert.deepEqual(await readdir(spoolDir(p.stateDir)), []);
    const s = await d.idle();
    assert.equal(s.uploaded, 41);
    await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
    // Count what reached S3: one NAR PUT and one narinfo PUT per path.
    const puts = s3.requests
      .slice(before)
      .filter((r) => r.startsWith(`PUT /${s3.bucket}/`))
      .map((r) => r.split('?')[0]!);
    const narPuts = puts.filter((r) => r.includes('/nar/'));
    const narinfoPuts = puts.filter((r) => r.endsWith('.narinfo'));
    assert.equal(narPuts.length, 41, 'each NAR uploaded once');
    assert.equal(new Set(narinfoPuts).size, 41);
    assert.equal(narinfoPuts.length, 41, 'each narinfo written once');
  } finally {
    assert.equal((await d.stop()).code, 0);
  }
});

function rawExchange(socket: string, bytes: string | Buffer, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection({ path: socket });
    let text = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(text);
    }, ms);
    s.on('data', (b) => (text += b.toString()));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    s.write(bytes);
  });
}

test('garbage, oversized and hostile requests are rejected with reasons and the daemon still serves; narpush status', async () => {
  const p = places();
  const d = await start(p);
  try {
    const answers = (await rawExchange(p.socket, 'garbage\n{"op":"enqueue","paths":[1]}\n', 1000)).trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(answers.map((a) => a.code), ['BAD_REQUEST', 'BAD_REQUEST']);
    assert.match(await rawExchange(p.socket, Buffer.alloc(2 * 1024 * 1024, 'x')), /longer than 1048576 bytes/);

    const { outs } = await buildPaths(1);
    const [out] = outs;
    const notBuilt = '/nix/store/00000000000000000000000000000000-not-built';
    const h = await runHook({ OUT_PATHS: `/etc/passwd ${out}/../../../etc/shadow ${notBuilt} ${out}`, NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir });
    assert.equal(h.result, 'rejected');
    assert.match(h.message!, /rejected 3 path\(s\)/);
    assert.match(d.log(), /rejected \/nix\/store\/0{32}-not-built: not valid in the local store/);
    assert.match(d.log(), /rejected \/etc\/passwd: not a store path/);
    await d.idle();
    await assertCacheHas(httpFetcher(s3.httpUrl), await nixClosure([out!]), publicKey);

    const human = await narpush(['status', '--socket', p.socket]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout.toString(), /^narpush daemon \(pid \d+\) up .*\nqueued: 0 .*\nuploaded: 2 paths .*rejected: 5/);
    const json = await narpush(['status', '--json'], { env: { ...process.env, NARPUSH_SOCKET: p.socket } });
    const s = JSON.parse(json.stdout.toString());
    assert.equal(s.uploaded, 2);
    assert.equal(s.rejected, 5);
    assert.equal(typeof s.uptimeSeconds, 'number');
    assert.equal(typeof s.narBytesPerSecond, 'number');
  } finally {
    assert.equal((await d.stop('SIGINT')).code, 0);
  }
  const none = await narpush(['status', '--socket', p.socket]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^narpush: error: no narpush daemon is listening on .*\n$/);
});

test('SIGTERM during uploads: exit 0 at once, interrupted paths stay queued and are uploaded after a restart', async () => {
  const proxy = await startFaultProxy({ targetPort: s3.port, seed: 5, rates: { delay: 1 }, delayMs: 400 });
  const p = places();
  try {
    const { outs } = await buildPaths(6);
    const closure = await nixClosure(outs);
    const slow = await start(p, `s3://${s3.bucket}?endpoint=${proxy.endpoint}&region=us-east-1`, ['--jobs', '2', '--shutdown-grace', '0.3']);
    await runHook({ OUT_PATHS: outs.join(' '), NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir });
    await eventually(async () => (await slow.status()).inFlight.length > 0 && proxy.counts.delay > 2, 30_000, 'uploads in flight');
    const t0 = Date.now();
    const exit = await slow.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, slow.log());
    assert.ok(Date.now() - t0 < 10_000, `stopped in ${Date.now() - t0} ms`);
    assert.match(slow.log(), /stopped: \d+ path\(s\) left in the queue/);
    assert.doesNotMatch(slow.log(), /\n\s+at /);
    const left = replayJournal(await readFile(path.join(p.stateDir, 'queue.journal'), 'utf8')).pending;
    assert.ok(left.size > 0, 'interrupted work is in the journal');
    await assertNoNarinfoWithoutNar();

    const d = await start(p);
    try {
      await d.idle();
      await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
    } finally {
      assert.equal((await d.stop()).code, 0);
    }
  } finally {
    await proxy.stop();
  }
});

test('SIGTERM while the daemon starts: it finishes starting, stops gracefully and exits 0, never killed by the signal', async () => {
  // The pid file is taken first thing in the start; the journal, the spool, the GC roots and the
  // socket follow. A SIGTERM in between used to find no handler and kill the process.
  for (let round = 0; round < 3; round++) {
    const p = places();
    const d = await startDaemonProcess({ to: `file://${work.dir}/sigterm-cache`, ...p, env: daemonEnv(), noWait: true });
    const pidFile = path.join(p.stateDir, 'daemon.pid');
    await eventually(async () => (await readFile(pidFile, 'utf8').catch(() => '')).endsWith('\n'), 30_000, 'the pid file');
    const exit = await d.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, d.log());
    assert.match(d.log(), /received SIGTERM/);
    assert.match(d.log(), /stopped: 0 path\(s\) left in the queue/);
  }
});

test('systemd socket activation: the daemon serves the inherited socket (LISTEN_FDS)', async () => {
  const which = await run('sh', ['-c', 'command -v systemd-socket-activate']);
  if (which.code !== 0) throw new Error('this test needs systemd-socket-activate (Debian: systemd)');
  const p = places();
  const d = await startDaemonProcess({
    to: s3.url,
    ...p,
    env: daemonEnv(),
    args: ['--secret-key-file', secretKey, '--compression', 'none'],
    // It passes on only the environment named with -E.
    wrapper: ['systemd-socket-activate', '-l', p.socket, ...['PATH', 'NIX_CONFIG', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'].flatMap((v) => ['-E', v])],
    noWait: true,
  });
  try {
    await eventually(async () => (await run('test', ['-S', p.socket])).code === 0, 10_000, 'socket');
    const s = await d.status(); // the first connection starts the daemon
    assert.equal(s.socket, 'fd:3');
    const { outs } = await buildPaths(1);
    assert.equal((await runHook({ OUT_PATHS: outs[0], NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir })).result, 'queued');
    await d.idle();
    await assertCacheHas(httpFetcher(s3.httpUrl), await nixClosure(outs), publicKey);
  } finally {
    assert.equal((await d.stop()).code, 0, d.log());
  }
});

test('bad daemon options: one line each, non-zero exit', async () => {
  const p = places();
  // Exit 2 for bad usage (a value no run could accept), 1 for a failure of the world (error-codes.ts).
  const cases: [string[], RegExp, number][] = [
    [['--to', 'ftp://x'], /unknown scheme 'ftp'/, 2],
    [['--to', s3.url, '--secret-key-file', path.join(work.dir, 'nope.key')], /nope\.key/, 1],
    [['--to', s3.url, '--compression', 'gzip'], /unknown compression/, 2],
    [['--to', s3.url, '--jobs', '0'], /--jobs/, 2],
    [['--to', s3.url, '--state-dir', '/proc/narpush'], /state directory/, 1],
    [['--to', s3.url, '--shutdown-grace', 'soon'], /--shutdown-grace/, 2],
  ];
  for (const [args, re, code] of cases) {
    const r = await narpush(['daemon', '--socket', p.socket, '--state-dir', p.stateDir, ...args], { env: daemonEnv() });
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  await nix('nix-store', ['--version']);
});

test("before it acknowledges a path, the daemon syncs Nix's gcroots/auto, where Nix linked the path's indirect root (seen by strace)", { skip: !HAS_STRACE && 'strace not installed' }, async () => {
  const p = places();
  const trace = path.join(work.dir, `trace${n}.txt`);
  const [out] = await nixBuildExpr(`lib.mk { name = "np-auto-sync"; salt = "${randomUUID()}"; script = "echo synced > $out"; }`);
  const d = await startDaemonProcess({ to: `file://${work.dir}/cache-auto-sync`, ...p, env: daemonEnv(), args: ['--compression', 'none'] });
  const pid = d.child.pid!;
  // Attached to every thread of the running daemon (libuv's pool makes the file system calls).
  const tracer = spawn('strace', ['-f', '-qq', '-o', trace, '-e', 'trace=openat,fsync,write', '-p', String(pid)], { stdio: 'ignore' });
  const traced = new Promise((resolve) => tracer.once('exit', resolve));
  try {
    await eventually(async () => (await readFile(`/proc/${pid}/status`, 'utf8')).match(/^TracerPid:\s+(\d+)/m)?.[1] === String(tracer.pid), 10_000, 'strace attached');
    const h = await runHook({ OUT_PATHS: out!, NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir });
    assert.equal(h.result, 'queued', h.message);
    await d.idle();
  } finally {
    tracer.kill('SIGINT');
    await traced;
    assert.equal((await d.stop()).code, 0);
  }
  const lines = (await readFile(trace, 'utf8')).split('\n');
  const auto = nixAutoRootsDir(daemonEnv());
  const synced = dirSyncedAt(lines, auto);
  assert.ok(synced >= 0, `the daemon opened and fsynced ${auto}: ${lines.filter((l) => l.includes('gcroots')).join(' / ')}`);
  // The answer, written by the daemon's main thread.
  const answered = lines.findIndex((l) => l.startsWith(`${pid} `) && l.includes('write(') && l.includes('{\\"ok\\":true,\\"queued\\":1'));
  assert.ok(answered > synced, `the answer (line ${answered}) after the sync (line ${synced})`);
});
