// The daemon's upstream filtering with real Nix, through the post-build hook:
// a dependency signed locally by a key named cache.nixos.org-1 and one an
// s3:// upstream (s3rver) serves are not uploaded to the daemon's file://
// cache; the builds are, with References intact; status and metrics count
// the skips apart; Nix substitutes everything from the two caches together,
// signatures required. A failing upstream never fails the daemon's uploads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { assertCacheHas, nixClosure } from '../helpers/cache-check.js';
import { nix, nixEnv, requireNix } from '../helpers/nix.js';
import { httpGet, parseExposition, sampleValue } from '../helpers/prometheus.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { S3RVER_ENV, startS3rver, type S3rverHandle } from '../helpers/s3rver.js';
import { killLeftoverDaemons, startDaemonProcess } from './daemon-process.js';
import { eventually, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let work: { dir: string; remove(): Promise<void> };
let ours: { secret: string; pub: string };
let upstreamKey: { secret: string; pub: string };
let s3: S3rverHandle;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

async function key(name: string): Promise<{ secret: string; pub: string }> {
  const secret = path.join(work.dir, `${name}.secret`);
  const pubFile = path.join(work.dir, `${name}.public`);
  const r = await narpush(['generate-key', name, secret, pubFile]);
  assert.equal(r.code, 0, r.stderr);
  return { secret, pub: (await readFile(pubFile, 'utf8')).trim() };
}

before(async () => {
  await requireNix();
  work = await tempDir('narpush-daemon-upstream-');
  ours = await key('narpush-daemon-ours-1');
  upstreamKey = await key('cache.nixos.org-1');
  s3 = await startS3rver();
});

after(async () => {
  await killLeftoverDaemons();
  await s3?.stop();
  await work?.remove();
});

/** Two dependencies (`signed`, `served`) and `count` builds that refer to both; fresh. */
function expression(salt: string, count: number): string {
  return `let lib = import ${path.join(FIXTURES, 'lib.nix')};
    signed = lib.mk { name = "np-up-signed"; salt = "${salt}"; script = "mkdir $out; echo signed > $out/f"; };
    served = lib.mk { name = "np-up-served"; salt = "${salt}"; script = "mkdir $out; echo \${signed} > $out/f"; };
  in { inherit signed served; builds = builtins.genList (i: lib.mk { name = "np-up-b\${toString i}"; salt = "${salt}"; script = "mkdir $out; echo \${served} \${signed} > $out/refs; echo \${toString i} > $out/i"; }) ${count}; }`;
}

async function build(expr: string, attr: string, link: string, extraArgs: readonly string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<string[]> {
  // With a GC root (-o): a collection another test runs meanwhile must not take the paths.
  const r = await run('nix-build', ['-E', expr, '-A', attr, '-o', link, ...extraArgs], { env: nixEnv(extraEnv) });
  assert.equal(r.code, 0, `nix-build failed: ${r.stderr}`);
  return r.stdout.toString().trim().split('\n');
}

test('through the hook: signed and upstream-served dependencies are skipped, the builds uploaded, Nix substitutes from both caches', async () => {
  const salt = randomUUID();
  const expr = expression(salt, 3);
  const [signed] = await build(expr, 'signed', path.join(work.dir, 'r-signed'));
  const [served] = await build(expr, 'served', path.join(work.dir, 'r-served'));
  await nix('nix', ['store', 'sign', '--key-file', upstreamKey.secret, signed!]);
  // The upstream (s3rver) serves both dependencies, signed with the upstream key.
  const seed = await narpush(['upload-path', '--to', s3.url, '--no-upstream', '--compression', 'none', '--secret-key-file', upstreamKey.secret, served!], { env: env() });
  assert.equal(seed.code, 0, seed.stderr);

  const socket = path.join(work.dir, 'u.sock');
  const stateDir = path.join(work.dir, 'u-state');
  const cache = path.join(work.dir, 'u-cache');
  const d = await startDaemonProcess({
    to: `file://${cache}`,
    socket,
    stateDir,
    env: env(),
    // Only `served` is left to the lookup: `signed` is known by its signature (default key name).
    args: ['--secret-key-file', ours.secret, '--compression', 'none', '--upstream', s3.url, '--metrics-listen', '127.0.0.1:0'],
  });
  try {
    await eventually(() => /metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/.test(d.log()), 10_000, 'the metrics address in the log');
    const metricsBase = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(d.log())![1]!;
    const builds = await build(expr, 'builds', path.join(work.dir, 'r-builds'), ['--option', 'post-build-hook', HOOK], { NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
    assert.equal(builds.length, 3);
    const s = await d.idle();
    assert.equal(s.uploaded, 3, d.log());
    assert.ok(s.skippedUpstream >= 2, `skipped as upstream: ${s.skippedUpstream}`);
    assert.equal(s.failures, 0, d.log());
    assert.doesNotMatch(d.log(), /warning/);
    assert.match(d.log(), new RegExp(`skipped ${signed} \\(served upstream\\)`));
    assert.match(d.log(), new RegExp(`skipped ${served} \\(served upstream\\)`));
    const status = await narpush(['status', '--socket', socket]);
    assert.match(status.stdout.toString(), new RegExp(`skipped: 0 already in the cache, ${s.skippedUpstream} served upstream`));
    const m = parseExposition((await httpGet(`${metricsBase}/metrics`)).body);
    assert.equal(sampleValue(m, 'narpush_paths_skipped_upstream_total'), s.skippedUpstream);
    assert.equal(sampleValue(m, 'narpush_paths_uploaded_total'), 3);

    const local = (k: string): Promise<Buffer | undefined> => readFile(path.join(cache, k)).catch(() => undefined);
    await assertCacheHas(local, builds, ours.pub);
    for (const dep of [signed!, served!]) assert.equal(await local(`${path.basename(dep).slice(0, 32)}.narinfo`), undefined, `${dep} is not in our cache`);

    const closure = await nixClosure(builds);
    assert.equal(closure.length, 5);
    await run('rm', ['-f', path.join(work.dir, 'r-signed'), path.join(work.dir, 'r-served'), ...builds.map((_b, i) => path.join(work.dir, i === 0 ? 'r-builds' : `r-builds-${i + 1}`))]);
    await eventually(async () => (await run('nix-store', ['--delete', ...closure], { env: nixEnv() })).code === 0, 10_000, 'the closure deleted');
    const r = await run(
      'nix-store',
      ['-r', ...builds, '--option', 'substituters', `file://${cache} ${s3.httpUrl}`, '--option', 'trusted-public-keys', `${ours.pub} ${upstreamKey.pub}`, '--option', 'require-sigs', 'true'],
      { env: nixEnv() },
    );
    assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
    assert.equal((await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() })).code, 0);
  } finally {
    const e = await d.stop();
    assert.deepEqual(e, { code: 0, signal: null }, d.log());
  }
});

test('the daemon with failing upstreams (a closed port, one answering 500): everything is uploaded, each said once in the log', async () => {
  let requests = 0;
  const broken: Server = createServer((_req, res) => {
    requests++;
    res.writeHead(500).end('boom');
  });
  await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', resolve));
  const brokenUrl = `http://127.0.0.1:${(broken.address() as AddressInfo).port}`;
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));

  const socket = path.join(work.dir, 'f.sock');
  const stateDir = path.join(work.dir, 'f-state');
  const cache = path.join(work.dir, 'f-cache');
  const d = await startDaemonProcess({
    to: `file://${cache}`,
    socket,
    stateDir,
    env: env(),
    args: ['--secret-key-file', ours.secret, '--compression', 'none', '--upstream', `http://127.0.0.1:${closedPort}`, '--upstream', brokenUrl],
  });
  try {
    const builds = await build(expression(randomUUID(), 2), 'builds', path.join(work.dir, 'f-builds'), ['--option', 'post-build-hook', HOOK], { NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
    const s = await d.idle();
    const closure = await nixClosure(builds);
    assert.equal(s.failures, 0, d.log());
    assert.equal(s.skippedUpstream, 0);
    await assertCacheHas((k) => readFile(path.join(cache, k)).catch(() => undefined), closure, ours.pub);
    const warnings = d.log().split('\n').filter((l) => /warning: upstream/.test(l));
    assert.equal(warnings.filter((w) => w.includes(`:${closedPort}`)).length, 1, d.log());
    assert.equal(warnings.filter((w) => w.includes(brokenUrl)).length, 1, d.log());
    assert.ok(requests >= 1);
  } finally {
    const e = await d.stop();
    await new Promise<void>((resolve) => { broken.closeAllConnections(); broken.close(() => resolve()); });
    assert.deepEqual(e, { code: 0, signal: null }, d.log());
  }
});
