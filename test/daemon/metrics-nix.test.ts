// The metrics endpoint of the real `narpush daemon` process with real Nix:
// bin/narpush-hook hands it one build, it uploads the closure to a file://
// cache, and /metrics counts exactly that closure and that one hook request;
// a port already taken stops the daemon at start with one line.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import * as path from 'node:path';
import { assertCacheHas, nixClosure, nixPathInfos } from '../helpers/cache-check.js';
import { nixEnv, requireNix } from '../helpers/nix.js';
import { httpGet as get, parseExposition, sampleValue } from '../helpers/prometheus.js';
import { FIXTURES, REPO_ROOT, narpush, run } from '../helpers/run.js';
import { killLeftoverDaemons, startDaemonProcess } from './daemon-process.js';
import { eventually, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let work: { dir: string; remove(): Promise<void> };
let secretKey: string;
let publicKey: string;

before(async () => {
  await requireNix();
  work = await tempDir('narpush-metrics-nix-');
  secretKey = path.join(work.dir, 'secret.key');
  const pub = path.join(work.dir, 'public.key');
  const r = await narpush(['generate-key', 'narpush-metrics-test-1', secretKey, pub]);
  assert.equal(r.code, 0, r.stderr);
  publicKey = (await readFile(pub, 'utf8')).trim();
});

after(async () => {
  await killLeftoverDaemons();
  await work?.remove();
});


test('one build handed over by the hook: uploaded paths equal its closure, one hook request', async () => {
  const socket = path.join(work.dir, 'm.sock');
  const stateDir = path.join(work.dir, 'm-state');
  const cache = path.join(work.dir, 'm-cache');
  const d = await startDaemonProcess({
    to: `file://${cache}`,
    socket,
    stateDir,
    env: nixEnv(),
    args: ['--secret-key-file', secretKey, '--compression', 'none', '--metrics-listen', '127.0.0.1:0'],
  });
  let base = '';
  try {
    await eventually(() => /metrics at http:\/\/127\.0\.0\.1:\d+\/metrics/.test(d.log()), 10_000, 'the metrics address in the log');
    base = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(d.log())![1]!;
    assert.deepEqual(await get(`${base}/healthz`), { status: 200, body: 'ok\n' });

    // Built with a GC root (the -o link): a garbage collection that another test runs meanwhile must not take it.
    const salt = randomUUID();
    const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')};
        a = lib.mk { name = "np-metrics-a"; salt = "${salt}"; script = "echo a > $out"; };
        b = lib.mk { name = "np-metrics-b"; salt = "${salt}"; script = "echo \${a} > $out"; };
      in lib.mk { name = "np-metrics-top"; salt = "${salt}"; script = "mkdir $out; echo \${a} > $out/a; echo \${b} > $out/b"; }`;
    const built = await run('nix-build', ['-E', expr, '-o', path.join(work.dir, 'result')], { env: nixEnv() });
    assert.equal(built.code, 0, built.stderr);
    const out = built.stdout.toString().trim();
    const closure = await nixClosure([out]);
    assert.equal(closure.length, 3);
    const hook = await run(HOOK, [], { env: { PATH: process.env.PATH, OUT_PATHS: out, DRV_PATH: '', NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir } });
    assert.equal(hook.code, 0, hook.stderr);
    await d.idle();
    await assertCacheHas((key) => readFile(path.join(cache, key)).catch(() => undefined), closure, publicKey);

    const r = await get(`${base}/metrics`);
    assert.equal(r.status, 200);
    const m = parseExposition(r.body);
    assert.equal(sampleValue(m, 'narpush_paths_uploaded_total'), closure.length);
    assert.equal(sampleValue(m, 'narpush_upload_duration_seconds_count'), closure.length);
    assert.equal(sampleValue(m, 'narpush_paths_skipped_total'), 0);
    assert.equal(sampleValue(m, 'narpush_paths_failed_total'), 0);
    assert.equal(sampleValue(m, 'narpush_hook_requests_total', { source: 'socket', outcome: 'ok' }), 1);
    const hookTotal = m.get('narpush_hook_requests_total')!.samples.reduce((n, s) => n + s.value, 0);
    assert.equal(hookTotal, 1, '`narpush status` requests are not hook requests');
    const infos = await nixPathInfos(closure);
    const narBytes = [...infos.values()].reduce((n, i) => n + i.narSize, 0);
    assert.equal(sampleValue(m, 'narpush_nar_bytes_total'), narBytes);
    assert.equal(sampleValue(m, 'narpush_file_bytes_total'), narBytes, 'compression none: files are the NARs');
    assert.equal(sampleValue(m, 'narpush_queue_paths'), 0);
    assert.ok(sampleValue(m, 'narpush_last_success_timestamp_seconds') > Date.now() / 1000 - 600);
    assert.ok(sampleValue(m, 'process_resident_memory_bytes') > 1e6);
    const s = await d.status();
    assert.equal(s.uploaded, closure.length, 'status agrees');
  } finally {
    const { code } = await d.stop();
    assert.equal(code, 0, d.log());
  }
  await assert.rejects(get(`${base}/healthz`), /ECONNREFUSED/, 'closed with the daemon');
});

test('a metrics port already taken: the daemon does not start, one line says why', async () => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const { port } = busy.address() as AddressInfo;
  const socket = path.join(work.dir, 'busy.sock');
  try {
    const r = await narpush(
      ['daemon', '--to', `file://${work.dir}/busy-cache`, '--socket', socket, '--state-dir', path.join(work.dir, 'busy-state'), '--metrics-listen', `127.0.0.1:${port}`],
      { env: nixEnv() },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, `narpush: error: cannot serve metrics on 127.0.0.1:${port}: the address is in use\n`);
    assert.equal(existsSync(socket), false, 'the hook socket was never opened');
  } finally {
    await new Promise((resolve) => busy.close(resolve));
  }
});
