// A frozen S3 (the s3rver process stopped with SIGSTOP: connections are
// accepted by the kernel, nothing is ever answered) under the real daemon
// and real Nix: attempts end in the idle timeout instead of hanging, are
// retried with the daemon's backoff and shown by `status` and the metrics; after SIGCONT
// everything uploads and Nix substitutes it back with signatures required.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { runHook } from '../../src/daemon/hook.js';
import { assertCacheHas, httpFetcher, nixClosure } from '../helpers/cache-check.js';
import { nixEnv, requireNix } from '../helpers/nix.js';
import { httpGet, parseExposition, sampleValue } from '../helpers/prometheus.js';
import { FIXTURES, narpush, run } from '../helpers/run.js';
import { S3RVER_ENV } from '../helpers/s3rver.js';
import { startS3rverProcess, type S3rverProcess } from '../helpers/s3rver-child.js';
import { killLeftoverDaemons, startDaemonProcess } from './daemon-process.js';
import { eventually, tempDir } from './fakes.js';

let work: { dir: string; remove(): Promise<void> };
let secretKey: string;
let publicKey: string;

before(async () => {
  await requireNix();
  work = await tempDir('narpush-frozen-');
  secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  const r = await narpush(['generate-key', 'narpush-frozen-test-1', secretKey, pub]);
  assert.equal(r.code, 0, r.stderr);
  publicKey = (await readFile(pub, 'utf8')).trim();
});

after(async () => {
  await killLeftoverDaemons();
  await work?.remove();
});

test('S3 frozen by SIGSTOP: attempts time out, status and the metrics show them, everything uploads after SIGCONT', async (t) => {
  const s3: S3rverProcess = await startS3rverProcess();
  // Registered first: whatever fails below, the server is resumed and killed.
  t.after(() => s3.stop());
  const salt = randomUUID();
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')};
    dep = lib.mk { name = "np-frozen-dep"; salt = "${salt}"; script = "mkdir $out; echo dep > $out/f"; };
  in builtins.genList (i: lib.mk { name = "np-frozen-p\${toString i}"; salt = "${salt}"; script = "mkdir $out; echo \${toString i} > $out/f; echo \${dep} > $out/dep"; }) 3`;
  // Out-links are GC roots: a garbage collection elsewhere on the machine must not take the paths mid-test.
  const built = await run('nix-build', ['-E', expr, '-o', path.join(work.dir, 'result')], { env: nixEnv() });
  assert.equal(built.code, 0, built.stderr);
  const outs = built.stdout.toString().trim().split('\n');
  const closure = await nixClosure(outs);

  const idleS = 1;
  const socket = path.join(work.dir, 'd.sock');
  const stateDir = path.join(work.dir, 'state');
  const d = await startDaemonProcess({
    to: `${s3.url}&connect-timeout=1&idle-timeout=${idleS}`,
    socket,
    stateDir,
    env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
    args: ['--secret-key-file', secretKey, '--compression', 'none', '--retry-delay', '0.2', '--retry-max-delay', '1', '--metrics-listen', '127.0.0.1:0'],
  });
  t.after(() => d.stop('SIGKILL'));
  await eventually(() => /metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/.test(d.log()), 10_000, 'the metrics address in the log');
  const metricsUrl = /metrics at (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(d.log())![1]!;
  const scrape = async (): Promise<ReturnType<typeof parseExposition>> => {
    const r = await httpGet(metricsUrl);
    assert.equal(r.status, 200);
    return parseExposition(r.body);
  };

  s3.freeze();
  const t0 = Date.now();
  const hooked = await runHook({ OUT_PATHS: outs.join(' '), NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir });
  assert.equal(hooked.result, 'queued', JSON.stringify(hooked));
  let firstFailureMs = 0;
  await eventually(
    async () => {
      const s = await d.status();
      if (s.failures >= 1 && firstFailureMs === 0) firstFailureMs = Date.now() - t0;
      return s.failures >= 3 && s.failing.length > 0;
    },
    60_000,
    'three failed attempts shown by status',
  );
  const s = await d.status();
  assert.equal(s3.ended(), undefined, 'the frozen s3rver is still there');
  console.log(`frozen S3, idle-timeout ${idleS} s: first failed attempt after ${firstFailureMs} ms; status: failures ${s.failures}, failing ${JSON.stringify(s.failing[0])}`);
  // Two attempts of one request end in the idle timeout, then the daemon's queue takes over;
  // the bound is generous for a loaded 2-core machine, an endless hang is what it rules out.
  assert.ok(firstFailureMs < 30_000, `first failure after ${firstFailureMs} ms`);
  assert.equal(s.uploaded, 0);
  for (const f of s.failing) assert.match(f.lastError, /timed out: no data for 1 s \(idle-timeout\)/);
  assert.ok(s.failing.every((f) => f.attempts >= 1));
  assert.match(d.log(), /idle-timeout/);
  const frozen = await scrape();
  assert.ok(sampleValue(frozen, 'narpush_paths_failed_total') >= 3, 'failed attempts counted');
  assert.equal(sampleValue(frozen, 'narpush_paths_uploaded_total'), 0);
  assert.equal(
    sampleValue(frozen, 'narpush_queue_paths') + sampleValue(frozen, 'narpush_in_flight_paths'),
    outs.length,
    'every hooked path still queued',
  );
  assert.equal(sampleValue(frozen, 'narpush_last_success_timestamp_seconds'), 0);

  s3.thaw();
  const done = await d.idle(120_000);
  assert.equal(done.uploaded, closure.length, d.log());
  assert.deepEqual(done.failing, []);
  await assertCacheHas(httpFetcher(s3.httpUrl), closure, publicKey);
  const thawed = await scrape();
  assert.equal(sampleValue(thawed, 'narpush_paths_uploaded_total'), closure.length);
  assert.equal(sampleValue(thawed, 'narpush_queue_paths') + sampleValue(thawed, 'narpush_in_flight_paths'), 0);
  assert.ok(sampleValue(thawed, 'narpush_last_success_timestamp_seconds') > 0);

  // Nix itself takes the result back from the cache.
  await d.stop();
  for (const name of await readdir(work.dir)) if (name.startsWith('result')) await rm(path.join(work.dir, name));
  await eventually(async () => (await run('nix-store', ['--delete', ...closure], { env: nixEnv() })).code === 0, 10_000, 'closure deleted');
  const r = await run(
    'nix-store',
    ['-r', ...outs, '--option', 'substituters', s3.httpUrl, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
});
