// The daemon's metrics endpoint with a fake store and cache: the counters
// equal what a scripted run did (and what `status` says), the text is valid
// Prometheus exposition format (test/helpers/prometheus.ts, itself checked
// here against broken samples), the gauges follow the queue, /healthz, 404
// and 405, several daemons in one process, the address checks, and the
// server closing on stop. The real CLI and Nix: test/daemon/metrics-nix.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { request, Agent } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import * as path from 'node:path';
import { sendRequest } from '../../src/daemon/client.js';
import type { DaemonStatus } from '../../src/daemon/daemon.js';
import { parseListenAddress } from '../../src/daemon/listen-address.js';
import { UPLOAD_DURATION_BUCKETS } from '../../src/daemon/metrics.js';
import { encodeLine } from '../../src/daemon/protocol.js';
import { spoolDir, writeSpoolFile } from '../../src/daemon/spool.js';
import type { PathOutcome } from '../../src/daemon/worker.js';
import { narpush } from '../helpers/run.js';
import { type MetricFamily, parseExposition, sampleValue } from '../helpers/prometheus.js';
import { eventually, fakePath, startFakeDaemon, tempDir, type FakeDaemon } from './fakes.js';

const LOCAL = { host: '127.0.0.1', port: 0 };

interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

function http(address: string, urlPath: string, method = 'GET', agent: Agent | false = false): Promise<HttpAnswer> {
  const url = new URL(`http://${address}${urlPath}`);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port, path: url.pathname + url.search, method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`no answer from ${url.href} in 5 s`)));
    req.end();
  });
}

async function scrape(d: FakeDaemon): Promise<Map<string, MetricFamily>> {
  const r = await http(d.daemon.metricsAddress!, '/metrics');
  assert.equal(r.status, 200, r.body);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  return parseExposition(r.body);
}

async function status(d: FakeDaemon): Promise<DaemonStatus> {
  const a = await sendRequest(d.socket, { op: 'status' }, { timeoutMs: 5000 });
  assert.equal(a.ok, true);
  return a.status as DaemonStatus;
}

async function ask(d: FakeDaemon, req: object): Promise<Record<string, unknown>> {
  return sendRequest(d.socket, req as never, { timeoutMs: 5000 });
}

/** A port nobody listens on now (bound, then released). */
async function freedPort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, host, resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function connectable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer().listen({ port, host, exclusive: true });
    s.once('listening', () => s.close(() => resolve(false)));
    s.once('error', () => resolve(true));
  });
}

test('the exposition reader accepts the format and refuses what breaks it', () => {
  const good = [
    '# HELP a_total A counter, with \\\\ and \\n escaped.',
    '# TYPE a_total counter',
    'a_total{x="1",y="q\\"uote\\\\n\\n"} 3',
    'a_total{x="2",} 1e3 1700000000000',
    '# an ordinary comment',
    '',
    '# TYPE h histogram',
    'h_bucket{le="0.5"} 1',
    'h_bucket{le="1"} 2',
    'h_bucket{le="+Inf"} 2',
    'h_sum 1.25',
    'h_count 2',
    'g NaN',
    'g2 -Inf',
    '',
  ].join('\n');
  const f = parseExposition(good);
  assert.equal(f.get('a_total')!.help, 'A counter, with \\ and \n escaped.');
  assert.equal(sampleValue(f, 'a_total', { x: '1', y: 'q"uote\\n\n' }), 3);
  assert.equal(sampleValue(f, 'a_total', { x: '2' }), 1000);
  assert.equal(f.get('h')!.samples.length, 5);
  assert.ok(Number.isNaN(sampleValue(f, 'g')));
  assert.equal(sampleValue(f, 'g2'), -Infinity);

  const bad: [string, RegExp][] = [
    ['1abc 1\n', /bad metric name/],
    ['a-b 1\n', /bad metric name/],
    ['a{1x="v"} 1\n', /bad label name/],
    ['a{__name__="v"} 1\n', /reserved/],
    ['a{x="v",x="w"} 1\n', /repeated/],
    ['a{x=v} 1\n', /not quoted/],
    ['a{x="v\\t"} 1\n', /bad escape/],
    ['a{x="v"\n', /unterminated|expected/],
    ['a{x="v" y="w"} 1\n', /',' or '}' expected/],
    ['a one\n', /not a number/],
    ['a 1 2 3\n', /not 'name/],
    ['a 1 1.5\n', /bad timestamp/],
    ['a\n', /not 'name/],
    ['a 1', /no newline/],
    ['a 1\na 2\n', /repeated/],
    ['a 1\nb 1\na{x="y"} 1\n', /not together/],
    ['# TYPE a counter\n# TYPE a counter\n', /second TYPE/],
    ['# HELP a x\n# HELP a y\n', /second HELP/],
    ['# HELP a bad \\t escape\n', /bad escape/],
    ['a 1\n# TYPE a gauge\n', /after its samples/],
    ['# TYPE a countr\n', /unknown type/],
    ['# TYPE a_total counter\na_total -1\n', /counter/],
    ['# TYPE h histogram\nh_bucket 1\n', /without 'le'/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /not cumulative/],
    ['# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /increasing/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /\+Inf/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /is not the \+Inf bucket/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', /no _sum/],
    ['# TYPE h histogram\nh_bucket{le="x"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /is not a number/],
  ];
  for (const [text, why] of bad) assert.throws(() => parseExposition(text), why, JSON.stringify(text));
});

test('--metrics-listen addresses: IPv4, [IPv6], host names; anything else is refused with the reason', () => {
  const ok: [string, string, number][] = [
    ['127.0.0.1:9101', '127.0.0.1', 9101],
    ['[::1]:9101', '::1', 9101],
    ['[::]:0', '::', 0],
    ['0.0.0.0:65535', '0.0.0.0', 65535],
    ['localhost:80', 'localhost', 80],
    ['metrics.example.org:9101', 'metrics.example.org', 9101],
  ];
  for (const [s, host, port] of ok) assert.deepEqual(parseListenAddress(s), { ok: true, address: { host, port } }, s);
  const bad: [string, RegExp][] = [
    ['127.0.0.1', /no :PORT/],
    ['9101', /no :PORT/],
    ['::1:9101', /IPv6 address goes in brackets/],
    ['::1', /IPv6 address goes in brackets/],
    ['[::1]', /port is missing/],
    ['127.0.0.1:', /port is missing/],
    ['127.0.0.1:http', /port is missing/],
    ['127.0.0.1:65536', /above 65535/],
    ['127.0.0.1:123456', /port is missing/],
    [':9101', /no host/],
    ['[127.0.0.1]:9101', /not an IPv6 address/],
    ['[::1:9101', /IPv6 address goes in brackets|port is missing/],
    ['1.2.3:9101', /not an IPv4 address or a host name/],
    ['256.1.1.1:9101', /not an IPv4 address or a host name/],
    ['bad_host:9101', /not an IPv4 address or a host name/],
    ['-host:9101', /not an IPv4 address or a host name/],
    ['host name:9101', /not an IPv4 address or a host name/],
    ['', /no :PORT/],
  ];
  for (const [s, why] of bad) {
    const r = parseListenAddress(s);
    assert.equal(r.ok, false, s);
    if (!r.ok) {
      assert.match(r.error, why, s);
      assert.ok(!r.error.includes('\n'));
    }
  }
});

test('a scripted run: the counters equal what happened, status agrees, and the text is valid exposition format', async () => {
  const t = await tempDir();
  const tries = new Map<string, number>();
  const [u1, u2, u3, s1, f1, d1, notValid, sp1] = ['u1', 'u2', 'u3', 's1', 'f1', 'd1', 'not-built', 'sp1'].map((n) => fakePath(n));
  const t0 = Date.now();
  const d = await startFakeDaemon({
    dir: t.dir,
    valid: (p) => p !== notValid,
    skipped: (p) => p === s1,
    config: { metricsListen: LOCAL, spoolPollMs: 60_000 },
    outcome: async (p): Promise<PathOutcome> => {
      const n = (tries.get(p) ?? 0) + 1;
      tries.set(p, n);
      if (p === f1 && n <= 2) return { kind: 'failed', error: `S3 said 503 (try ${n})` };
      if (p === d1) return { kind: 'dropped', reason: 'garbage-collected' };
      return { kind: 'done' };
    },
  });
  try {
    assert.match(d.daemon.metricsAddress!, /^127\.0\.0\.1:\d+$/);
    assert.ok(d.logs.some((l) => l.event === 'started' && l.detail!.includes(`metrics at http://${d.daemon.metricsAddress}/metrics`)));
    // Before anything: every counter at 0, each hook label pair present.
    const before = await scrape(d);
    for (const name of ['narpush_paths_uploaded_total', 'narpush_paths_failed_total', 'narpush_nar_bytes_total']) assert.equal(sampleValue(before, name), 0);
    assert.equal(sampleValue(before, 'narpush_hook_requests_total', { source: 'spool', outcome: 'error' }), 0);
    assert.equal(sampleValue(before, 'narpush_last_success_timestamp_seconds'), 0);

    assert.equal((await ask(d, { op: 'enqueue', paths: [u1, u2, notValid] })).queued, 2);
    assert.equal((await ask(d, { op: 'enqueue', paths: [u3, s1] })).queued, 2);
    assert.equal((await ask(d, { op: 'enqueue', paths: [f1, d1] })).queued, 2);
    assert.equal((await ask(d, { op: 'enqueue', paths: 'hello' })).code, 'BAD_REQUEST');
    await status(d); // not a hook request
    await writeSpoolFile(spoolDir(d.stateDir), encodeLine({ op: 'enqueue', paths: [sp1] }));
    await writeFile(path.join(spoolDir(d.stateDir), '00000000000000-1-bad.req'), 'not json\n');
    await d.daemon.ingestSpool();

    await eventually(async () => {
      const s = await status(d);
      return s.queued === 0 && s.inFlight.length === 0 && s.failures === 2 && s.dropped === 1 && s.uploaded === 5;
    }, 10_000, 'the scripted run to finish');
    const m = await scrape(d);
    const s = await status(d);
    const expected: Record<string, number> = {
      narpush_paths_uploaded_total: 5, // u1 u2 u3 f1 sp1
      narpush_paths_skipped_total: 1,
      narpush_paths_failed_total: 2,
      narpush_paths_dropped_total: 1,
      narpush_paths_rejected_total: 1,
      narpush_nar_bytes_total: 500,
      narpush_file_bytes_total: 250,
      narpush_queue_paths: 0,
      narpush_queue_retry_paths: 0,
      narpush_in_flight_paths: 0,
      narpush_healthy: 1,
      narpush_upload_duration_seconds_count: 5,
    };
    for (const [name, value] of Object.entries(expected)) assert.equal(sampleValue(m, name), value, name);
    const hooks = { 'socket/ok': 3, 'socket/rejected': 1, 'socket/error': 0, 'spool/ok': 1, 'spool/rejected': 1, 'spool/error': 0 };
    for (const [k, value] of Object.entries(hooks)) {
      const [source, outcome] = k.split('/') as [string, string];
      assert.equal(sampleValue(m, 'narpush_hook_requests_total', { source, outcome }), value, k);
    }
    // The fake says each upload took 0.01 s: all in the first bucket (le is inclusive).
    assert.equal(sampleValue(m, 'narpush_upload_duration_seconds_bucket', { le: '0.01' }), 5);
    assert.ok(Math.abs(sampleValue(m, 'narpush_upload_duration_seconds_sum') - 0.05) < 1e-9);
    assert.deepEqual(
      m.get('narpush_upload_duration_seconds')!.samples.filter((x) => x.name.endsWith('_bucket')).map((x) => x.labels.le),
      [...UPLOAD_DURATION_BUCKETS.map(String), '+Inf'],
    );
    const last = sampleValue(m, 'narpush_last_success_timestamp_seconds');
    assert.ok(last >= t0 / 1000 && last <= Date.now() / 1000, `last success ${last}`);
    assert.ok(sampleValue(m, 'narpush_busy_seconds_total') > 0);

    // status reads the same counts.
    assert.deepEqual(
      [s.uploaded, s.skipped, s.failures, s.dropped, s.narBytes, s.fileBytes],
      [5, 1, 2, 1, 500, 250],
    );
    assert.equal(s.rejected, 3, 'one path and two unreadable requests');

    // Every narpush family has HELP and TYPE; counters end in _total; the default process metrics are there.
    for (const f of m.values()) {
      if (!f.name.startsWith('narpush_')) continue;
      assert.ok(f.help && f.help.length > 10, `${f.name} HELP`);
      assert.notEqual(f.type, 'untyped', `${f.name} TYPE`);
      if (f.type === 'counter') assert.match(f.name, /_total$/);
    }
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_open_fds', 'nodejs_heap_size_used_bytes']) {
      assert.ok(m.has(name), name);
    }
    assert.ok(sampleValue(m, 'process_resident_memory_bytes') > 1e6);
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('the queue gauges follow waiting, retrying and in-flight paths', async () => {
  const t = await tempDir();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const w = fakePath('waits-for-retry');
  const d = await startFakeDaemon({
    dir: t.dir,
    config: { metricsListen: LOCAL, maxBatch: 2, retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } },
    outcome: async (p): Promise<PathOutcome> => {
      if (p === w) return { kind: 'failed', error: 'S3 is down' };
      await gate;
      return { kind: 'done' };
    },
  });
  const gauges = async (): Promise<number[]> => {
    const m = await scrape(d);
    return ['narpush_queue_paths', 'narpush_queue_retry_paths', 'narpush_in_flight_paths'].map((n) => sampleValue(m, n));
  };
  try {
    await ask(d, { op: 'enqueue', paths: [w] });
    await eventually(async () => (await status(d)).failures === 1, 5000, 'the first attempt to fail');
    assert.deepEqual(await gauges(), [1, 1, 0]);
    const held = [fakePath('p1'), fakePath('p2'), fakePath('p3')];
    await ask(d, { op: 'enqueue', paths: held });
    await eventually(() => d.uploads.length === 3, 5000, 'a batch of two to start'); // w once, p1, p2
    assert.deepEqual(await gauges(), [2, 1, 2], 'p3 and w wait, p1 and p2 upload');
    const s = await status(d);
    assert.deepEqual([s.queued, s.waitingRetry, s.inFlight.length], [2, 1, 2], 'status agrees');
    release();
    await eventually(async () => (await gauges()).join() === '1,1,0', 5000, 'the held uploads to finish');
  } finally {
    release();
    await d.stop();
    await t.remove();
  }
});

test('/healthz, other paths 404, other methods 405, HEAD like GET; IPv6 loopback', async (t) => {
  const tmp = await tempDir();
  const d = await startFakeDaemon({ dir: tmp.dir, config: { metricsListen: LOCAL } });
  try {
    const a = d.daemon.metricsAddress!;
    const h = await http(a, '/healthz');
    assert.deepEqual([h.status, h.body], [200, 'ok\n']);
    assert.equal((await http(a, '/metrics?name[]=x')).status, 200, 'a query string is ignored');
    for (const p of ['/', '/metric', '/metrics/', '/healthz/x', '/favicon.ico']) assert.equal((await http(a, p)).status, 404, p);
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      for (const p of ['/metrics', '/healthz']) {
        const r = await http(a, p, method);
        assert.equal(r.status, 405, `${method} ${p}`);
        assert.equal(r.headers.allow, 'GET, HEAD');
      }
    }
    const head = await http(a, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.ok(Number(head.headers['content-length']) > 1000);
  } finally {
    await d.stop();
    await tmp.remove();
  }

  const probe = createServer();
  const v6 = await new Promise<boolean>((resolve) => {
    probe.once('error', () => resolve(false));
    probe.listen(0, '::1', () => probe.close(() => resolve(true)));
  });
  if (!v6) return t.skip('no IPv6 loopback on this machine');
  const tmp6 = await tempDir();
  const d6 = await startFakeDaemon({ dir: tmp6.dir, config: { metricsListen: { host: '::1', port: 0 } } });
  try {
    assert.match(d6.daemon.metricsAddress!, /^\[::1\]:\d+$/);
    assert.equal((await http(d6.daemon.metricsAddress!, '/healthz')).status, 200);
    assert.ok(d6.logs.some((l) => l.event === 'started' && l.detail!.includes(`http://[::1]:`)));
  } finally {
    await d6.stop();
    await tmp6.remove();
  }
});

test('while stopping /healthz says 503; on stop the server closes, even with a keep-alive client, and the port is free', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({
    dir: t.dir,
    config: { metricsListen: LOCAL, shutdownGraceMs: 1500 },
    outcome: (_p, signal) => new Promise((resolve) => signal.addEventListener('abort', () => resolve({ kind: 'failed', error: 'aborted' }))),
  });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const address = d.daemon.metricsAddress!;
    const port = Number(address.split(':').pop());
    assert.equal((await http(address, '/healthz', 'GET', agent)).status, 200);
    await ask(d, { op: 'enqueue', paths: [fakePath('in-flight')] });
    await eventually(() => d.uploads.length === 1);
    const stopped = d.stop();
    const h = await http(address, '/healthz', 'GET', agent);
    assert.deepEqual([h.status, h.body], [503, 'unhealthy: stopping\n']);
    assert.equal(sampleValue(parseExposition((await http(address, '/metrics', 'GET', agent)).body), 'narpush_healthy'), 0);
    const t0 = Date.now();
    await stopped;
    assert.ok(Date.now() - t0 < 3000, 'the keep-alive connection did not hold the stop');
    await assert.rejects(http(address, '/healthz'), /ECONNREFUSED/);
    assert.equal(await connectable('127.0.0.1', port), false, 'the port can be bound again');
  } finally {
    agent.destroy();
    await d.stop();
    await t.remove();
  }
});

test('several daemons in one process: each has its own registry and counts', async () => {
  const t = await tempDir();
  const dirs = [path.join(t.dir, 'a'), path.join(t.dir, 'b')];
  await Promise.all(dirs.map((dir) => mkdir(dir)));
  const [a, b] = await Promise.all(dirs.map((dir) => startFakeDaemon({ dir, config: { metricsListen: LOCAL } })));
  try {
    await ask(a!, { op: 'enqueue', paths: [fakePath('a1'), fakePath('a2')] });
    await ask(b!, { op: 'enqueue', paths: [fakePath('b1')] });
    await eventually(() => a!.done.size === 2 && b!.done.size === 1);
    assert.equal(sampleValue(await scrape(a!), 'narpush_paths_uploaded_total'), 2);
    assert.equal(sampleValue(await scrape(b!), 'narpush_paths_uploaded_total'), 1);
    assert.equal(sampleValue(await scrape(b!), 'narpush_upload_duration_seconds_count'), 1);
  } finally {
    await Promise.all([a!.stop(), b!.stop()]);
    await t.remove();
  }
});

test('a metrics address that cannot be bound stops the start with one line, before the socket opens', async () => {
  const t = await tempDir();
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const { port } = busy.address() as AddressInfo;
  try {
    await assert.rejects(
      startFakeDaemon({ dir: t.dir, config: { metricsListen: { host: '127.0.0.1', port } } }),
      (e: Error & { code?: string }) =>
        e.code === 'METRICS_LISTEN_FAILED' && e.message === `cannot serve metrics on 127.0.0.1:${port}: the address is in use`,
    );
    await assert.rejects(sendRequest(path.join(t.dir, 'sock'), { op: 'status' }, { timeoutMs: 2000 }), /no narpush daemon is listening/);
    // The state directory was released: a daemon starts there now.
    const d = await startFakeDaemon({ dir: t.dir, config: { metricsListen: { host: '127.0.0.1', port: await freedPort() } } });
    await d.stop();
  } finally {
    await new Promise((resolve) => busy.close(resolve));
    await t.remove();
  }
});

test('the journal cannot be written (a full state directory): /healthz 503 with the reason, hook errors counted; then it recovers', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('mounting a tmpfs needs root');
  const tmp = await tempDir();
  const state = path.join(tmp.dir, 'state-tmpfs');
  await mkdir(state);
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', state], { encoding: 'utf8' });
  if (mount.status !== 0) {
    await tmp.remove();
    return t.skip(`cannot mount a tmpfs: ${mount.stderr.trim()}`);
  }
  let d: FakeDaemon | undefined;
  const filler = path.join(state, 'filler');
  try {
    d = await startFakeDaemon({ dir: tmp.dir, config: { stateDir: state, metricsListen: LOCAL } });
    const address = d.daemon.metricsAddress!;
    // Fill the filesystem. The journal is empty after its start-up compaction, so its next append needs a new page.
    const h = await open(filler, 'w');
    try {
      for (;;) await h.write(Buffer.alloc(4096, 1));
    } catch (e) {
      assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
    } finally {
      await h.close();
    }
    const refused = await ask(d, { op: 'enqueue', paths: [fakePath('no-room')] });
    assert.equal(refused.code, 'QUEUE_UNAVAILABLE');
    const sick = await http(address, '/healthz');
    assert.equal(sick.status, 503);
    assert.match(sick.body, /^unhealthy: the queue cannot be written \(.*(ENOSPC|no space).*\)\n$/i);
    const m = await scrape(d);
    assert.equal(sampleValue(m, 'narpush_hook_requests_total', { source: 'socket', outcome: 'error' }), 1);
    assert.equal(sampleValue(m, 'narpush_healthy'), 0);

    await rm(filler);
    const p = fakePath('room-again');
    assert.equal((await ask(d, { op: 'enqueue', paths: [p] })).queued, 1);
    assert.deepEqual(await http(address, '/healthz').then((r) => [r.status, r.body]), [200, 'ok\n']);
    await eventually(() => d!.done.has(p));
  } finally {
    try {
      await d?.stop();
    } finally {
      await rm(filler, { force: true });
      spawnSync('umount', [state]);
      await tmp.remove();
    }
  }
});

test('narpush daemon: a bad --metrics-listen is one line on stderr and exit 2 (usage), before anything starts', async () => {
  const t = await tempDir();
  try {
    for (const value of ['127.0.0.1', '::1:9101', 'localhost:99999', '[::1]:http']) {
      const socket = path.join(t.dir, 'never.sock');
      const r = await narpush(['daemon', '--to', `file://${t.dir}/cache`, '--socket', socket, '--state-dir', path.join(t.dir, 'state'), '--metrics-listen', value]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^narpush: error: --metrics-listen takes HOST:PORT such as 127\\.0\\.0\\.1:9101 or \\[::1\\]:9101, not '${value.replace(/[[\].]/g, '\\$&')}' \\([^)]+\\)\\n$`));
      assert.equal(r.stdout.length, 0);
    }
    assert.equal(existsSync(path.join(t.dir, 'state')), false, 'no state directory was created');
  } finally {
    await t.remove();
  }
});
