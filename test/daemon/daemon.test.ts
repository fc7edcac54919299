// The daemon with its real journal, spool and socket, and a fake store and
// cache: acknowledgement, dedup, retries, resume after stop, spool
// ingestion, hostile clients, socket and state-dir safety.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createConnection } from 'node:net';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { sendRequest } from '../../src/daemon/client.js';
import { replayJournal } from '../../src/daemon/journal.js';
import { encodeLine, MAX_LINE_BYTES } from '../../src/daemon/protocol.js';
import { startServer } from '../../src/daemon/server.js';
import { spoolDir, writeSpoolFile } from '../../src/daemon/spool.js';
import type { DaemonStatus } from '../../src/daemon/daemon.js';
import { eventually, fakePath, startFakeDaemon, tempDir } from './fakes.js';

async function ask(socket: string, req: object): Promise<Record<string, unknown>> {
  return sendRequest(socket, req as never, { timeoutMs: 5000 });
}

async function status(socket: string): Promise<DaemonStatus> {
  const a = await ask(socket, { op: 'status' });
  assert.equal(a.ok, true);
  return a.status as DaemonStatus;
}

/** Send raw bytes and collect what comes back until the daemon closes or `ms` pass. */
function raw(socket: string, bytes: string | Buffer, ms = 2000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = createConnection({ path: socket });
    let text = '';
    let closed = false;
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closed });
    }, ms);
    s.on('data', (b) => (text += b.toString()));
    s.on('error', () => {});
    s.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve({ text, closed });
    });
    s.write(bytes);
  });
}

test('a request is acknowledged, journaled, uploaded, and counted in status', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({ dir: t.dir });
  try {
    const [a, b] = [fakePath('a'), fakePath('b')];
    const ans = await ask(d.socket, { op: 'enqueue', paths: [a, b], drv: fakePath('a.drv') });
    assert.deepEqual(ans, { ok: true, queued: 2, duplicates: 0, rejected: [] });
    await eventually(() => d.done.has(a) && d.done.has(b), 5000, 'uploads');
    await eventually(async () => (await status(d.socket)).queued === 0);
    const s = await status(d.socket);
    assert.equal(s.uploaded, 2);
    assert.equal(s.narBytes, 200);
    assert.deepEqual(s.inFlight, []);
    assert.equal(s.pid, process.pid);
    assert.ok(d.logs.some((l) => l.event === 'queued' && l.subject === a));
    assert.ok(d.logs.some((l) => l.event === 'uploaded' && l.subject === b));
    // The journal says nothing is pending any more.
    await eventually(async () => replayJournal(await readFile(path.join(d.stateDir, 'queue.journal'), 'utf8')).pending.size === 0);
    const mode = (await stat(d.socket)).mode & 0o777;
    assert.equal(mode, 0o660, 'socket writable by owner and group only');
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('paths not valid in the local store are rejected with a reason; the rest is queued', async () => {
  const t = await tempDir();
  const bad = fakePath('not-built');
  const d = await startFakeDaemon({ dir: t.dir, valid: (p) => p !== bad });
  try {
    const good = fakePath('good');
    const ans = await ask(d.socket, { op: 'enqueue', paths: [good, bad, '/etc/passwd'] });
    assert.equal(ans.queued, 1);
    const rejected = ans.rejected as { path: string; reason: string }[];
    assert.deepEqual(rejected.map((r) => r.path).sort(), ['/etc/passwd', bad].sort());
    assert.match(rejected.find((r) => r.path === bad)!.reason, /not valid in the local store/);
    await eventually(() => d.done.has(good));
    assert.ok(!d.uploads.includes(bad));
    assert.equal(d.logs.filter((l) => l.event === 'rejected').length, 2);
    assert.equal((await status(d.socket)).rejected, 2);
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('200 concurrent clients over 40 paths: all acknowledged, each path uploaded once', async () => {
  const t = await tempDir();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  // Uploads are held until every request is in, so duplicates meet in-flight and queued paths.
  const d = await startFakeDaemon({ dir: t.dir, outcome: async () => (await gate, { kind: 'done' }) });
  try {
    const paths = Array.from({ length: 40 }, (_, i) => fakePath(`p${i}`));
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) => ask(d.socket, { op: 'enqueue', paths: [paths[i % 40]!, paths[(i * 7) % 40]!] })),
    );
    assert.ok(answers.every((a) => a.ok === true));
    assert.equal(answers.reduce((n, a) => n + (a.queued as number), 0), 40, 'each path queued once');
    release();
    await eventually(() => d.done.size === 40);
    await eventually(async () => (await status(d.socket)).queued === 0);
    assert.equal(d.uploads.length, 40, 'no path handed to the uploader twice');
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('failures are retried with backoff, visible in status with the last error, until they succeed', async () => {
  const t = await tempDir();
  const tries = new Map<string, number>();
  const d = await startFakeDaemon({
    dir: t.dir,
    config: { retry: { initialDelayMs: 150, maxDelayMs: 300 } },
    outcome: async (p) => {
      const n = (tries.get(p) ?? 0) + 1;
      tries.set(p, n);
      return n <= 3 ? { kind: 'failed', error: `S3 said 503 (try ${n})` } : { kind: 'done' };
    },
  });
  try {
    const a = fakePath('flaky');
    await ask(d.socket, { op: 'enqueue', paths: [a] });
    // The queue records an attempt before the retry is logged and counted: wait for both.
    await eventually(async () => {
      const st = await status(d.socket);
      return st.failing.some((f) => f.attempts >= 2) && st.failures >= 2;
    }, 5000, 'two failures');
    const s = await status(d.socket);
    const f = s.failing.find((x) => x.path === a)!;
    assert.match(f.lastError, /S3 said 503 \(try [23]\)/);
    assert.ok(s.failures >= 2);
    await eventually(() => d.done.has(a), 5000, 'success after retries');
    assert.equal(tries.get(a), 4);
    const retries = d.logs.filter((l) => l.event === 'retry' && l.subject === a);
    assert.equal(retries.length, 3);
    assert.match(retries[2]!.detail!, /attempt 3 failed, next in/);
    await eventually(async () => (await status(d.socket)).failing.length === 0);
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('a dropped path (it left the store) is logged and forgotten', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({ dir: t.dir, outcome: async () => ({ kind: 'dropped', reason: 'garbage-collected' }) });
  try {
    const a = fakePath('gone');
    await ask(d.socket, { op: 'enqueue', paths: [a] });
    await eventually(async () => (await status(d.socket)).dropped === 1);
    assert.ok(d.logs.some((l) => l.event === 'dropped' && l.subject === a && /garbage-collected/.test(l.detail!)));
    assert.equal((await status(d.socket)).queued, 0);
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('stop during uploads: they are aborted after the grace period, stay queued, and finish after a restart', async () => {
  const t = await tempDir();
  const never = async (_p: string, signal: AbortSignal) =>
    new Promise<{ kind: 'failed'; error: string }>((resolve) => signal.addEventListener('abort', () => resolve({ kind: 'failed', error: 'aborted' })));
  const d1 = await startFakeDaemon({ dir: t.dir, outcome: never, config: { shutdownGraceMs: 100 } });
  const paths = Array.from({ length: 5 }, (_, i) => fakePath(`p${i}`));
  await ask(d1.socket, { op: 'enqueue', paths });
  await eventually(() => d1.uploads.length === 5);
  const t0 = Date.now();
  await d1.stop();
  assert.ok(Date.now() - t0 < 3000, 'stopped within the grace period');
  assert.ok(d1.logs.some((l) => l.event === 'stopped' && /5 path/.test(l.detail!)));
  await assert.rejects(ask(d1.socket, { op: 'status' }), /no narpush daemon is listening/);

  const d2 = await startFakeDaemon({ dir: t.dir });
  try {
    assert.equal(d2.daemon.resumed, 5);
    await eventually(() => paths.every((p) => d2.done.has(p)), 5000, 'resumed uploads');
    // Interrupted uploads did not count as failed attempts.
    assert.ok(!d1.logs.some((l) => l.event === 'retry'));
  } finally {
    await d2.stop();
    await t.remove();
  }
});

test('spool: files left by the hook are queued at start and while running; garbage is kept aside', async () => {
  const t = await tempDir();
  const stateDir = path.join(t.dir, 'state');
  const [a, b, c] = [fakePath('a'), fakePath('b'), fakePath('c')];
  await writeSpoolFile(spoolDir(stateDir), encodeLine({ op: 'enqueue', paths: [a, b] }));
  await writeSpoolFile(spoolDir(stateDir), encodeLine({ op: 'enqueue', paths: [a] }));
  await writeFile(path.join(spoolDir(stateDir), '00000000000000-1-bad.req'), '{"op":"enqueue","paths":"nope"}\n');
  await writeFile(path.join(spoolDir(stateDir), '.tmp-half-written.req'), '{"op":"enq');
  const d = await startFakeDaemon({ dir: t.dir });
  try {
    await eventually(() => d.done.has(a) && d.done.has(b), 5000, 'spooled paths uploaded');
    let left = await readdir(spoolDir(stateDir));
    assert.deepEqual(left.sort(), ['.tmp-half-written.req', '00000000000000-1-bad.req.rejected']);
    assert.ok(d.logs.some((l) => l.event === 'rejected' && /'paths' is not a list/.test(l.detail!)));
    // A file spooled while the daemon runs is picked up by the poll.
    await writeSpoolFile(spoolDir(stateDir), encodeLine({ op: 'enqueue', paths: [c] }));
    await eventually(() => d.done.has(c), 5000, 'spool polled');
    left = await readdir(spoolDir(stateDir));
    assert.equal(left.filter((n) => n.endsWith('.req') && !n.startsWith('.')).length, 0);
    assert.equal(d.uploads.filter((p) => p === a).length, 1, 'a spooled twice, uploaded once');
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('garbage, oversized and hostile requests are refused and the daemon keeps serving', async () => {
  const t = await tempDir();
  const d = await startFakeDaemon({ dir: t.dir, config: { idleTimeoutMs: 300 } });
  try {
    // Garbage: an error answer per line, and the connection stays usable.
    const g = await raw(d.socket, 'hello\n[1,2]\n{"op":"status"}\n', 500);
    const answers = g.text.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(answers.length, 3);
    assert.deepEqual(answers.slice(0, 2).map((a) => [a.ok, a.code]), [[false, 'BAD_REQUEST'], [false, 'BAD_REQUEST']]);
    assert.equal(answers[2].ok, true);

    // Oversized: one error answer, then the daemon hangs up; it never buffered the whole thing.
    const big = Buffer.alloc(MAX_LINE_BYTES + 10, 'a');
    const o = await raw(d.socket, big, 3000);
    assert.equal(o.closed, true);
    assert.match(o.text, /longer than 1048576 bytes/);

    // Hostile paths: rejected with reasons, nothing queued.
    const h = await ask(d.socket, {
      op: 'enqueue',
      paths: ['/etc/shadow', '/nix/store/../../etc/shadow', `${fakePath('x')}/../../../etc`, `${fakePath('y')}\u0000`],
      drv: '/tmp/evil.drv',
    });
    assert.equal(h.ok, true);
    assert.equal(h.queued, 0);
    assert.equal((h.rejected as unknown[]).length, 5);

    // Clients that hang: connected and silent, or dribbling a partial line, are dropped after the idle timeout...
    const silent = raw(d.socket, '', 5000);
    const dribble = raw(d.socket, '{"op":"sta', 5000);
    // ...while others are served meanwhile.
    const meanwhile = await Promise.all(Array.from({ length: 20 }, () => status(d.socket)));
    assert.equal(meanwhile.length, 20);
    const [s1, s2] = await Promise.all([silent, dribble]);
    assert.equal(s1.closed, true, 'silent client dropped');
    assert.equal(s2.closed, true, 'dribbling client dropped');
    assert.equal(s1.text, '');

    // A flood of requests on one connection that never reads is cut off; the daemon still serves.
    await raw(d.socket, '{"op":"status"}\n'.repeat(20000), 1500);
    const a = fakePath('after');
    assert.equal((await ask(d.socket, { op: 'enqueue', paths: [a] })).queued, 1);
    await eventually(() => d.done.has(a));
  } finally {
    await d.stop();
    await t.remove();
  }
});

test('socket path: a stale socket is replaced; a live one or a regular file is refused; one daemon per state dir', async () => {
  const t = await tempDir();
  try {
    // A stale socket file: its process was SIGKILLed while listening, so nobody unlinked it.
    spawnSync(process.execPath, ['-e', "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))", path.join(t.dir, 'sock')]);
    assert.ok((await stat(path.join(t.dir, 'sock'))).isSocket(), 'stale socket file left behind');
    const d = await startFakeDaemon({ dir: t.dir });
    try {
      assert.equal((await status(d.socket)).queued, 0, 'took over the stale socket');
      // A second daemon: on the same socket, refused.
      const t2 = await tempDir();
      await assert.rejects(
        startFakeDaemon({ dir: t2.dir, config: { socketPath: d.socket } }),
        (e: Error & { code?: string }) => e.code === 'DAEMON_ALREADY_RUNNING',
      );
      // A state dir whose pid file names another live process: refused. (Within one process
      // the daemon's own pid counts as stale, as it must after a restart that reuses the pid.)
      const other = path.join(t2.dir, 'other-state');
      await mkdir(other, { recursive: true });
      await writeFile(path.join(other, 'daemon.pid'), `${process.ppid}\n`);
      await assert.rejects(
        startFakeDaemon({ dir: t2.dir, config: { stateDir: other } }),
        (e: Error & { code?: string }) => e.code === 'DAEMON_ALREADY_RUNNING' && /state directory/.test(e.message),
      );
      // A pid file left by a dead daemon is taken over.
      const dead = spawnSync(process.execPath, ['-e', '0']).pid;
      await writeFile(path.join(other, 'daemon.pid'), `${dead}\n`);
      const d3 = await startFakeDaemon({ dir: t2.dir, config: { stateDir: other } });
      assert.equal(await readFile(path.join(other, 'daemon.pid'), 'utf8'), `${process.pid}\n`);
      await d3.stop();
      await t2.remove();
    } finally {
      await d.stop();
    }
    const file = path.join(t.dir, 'not-a-socket');
    await writeFile(file, 'precious');
    await assert.rejects(
      startFakeDaemon({ dir: t.dir, config: { socketPath: file } }),
      (e: Error & { code?: string }) => e.code === 'SOCKET_PATH_IN_USE',
    );
    assert.equal(await readFile(file, 'utf8'), 'precious', 'not deleted');
  } finally {
    await t.remove();
  }
});

test('a paused socket server accepts clients but reads no request until open(); then it answers them, in order', async () => {
  const t = await tempDir();
  const handled: string[] = [];
  const server = await startServer({
    socketPath: path.join(t.dir, 'sock'),
    paused: true,
    handle: async (line) => {
      handled.push(line);
      return { ok: true, echo: line };
    },
    log: () => {},
  });
  try {
    const early = raw(server.address, `${encodeLine({ n: 1 })}${encodeLine({ n: 2 })}`, 5000);
    await eventually(() => server.connections === 1, 5000, 'the client accepted');
    // Round trips through the event loop: a server that reads would have answered by now.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(handled, [], 'nothing read while paused');
    server.open();
    await eventually(() => handled.length === 2, 5000, 'both requests handled');
    const late = await ask(server.address, { n: 3 });
    assert.deepEqual(late, { ok: true, echo: encodeLine({ n: 3 }).trim() });
    await server.close(100);
    const { text } = await early;
    assert.deepEqual(
      text.trim().split('\n').map((l) => JSON.parse(l).echo),
      [encodeLine({ n: 1 }).trim(), encodeLine({ n: 2 }).trim()],
    );
  } finally {
    await server.close(100);
    await t.remove();
  }
});

test('a client that connects while the daemon starts is answered only after the daemon has said it is listening', async () => {
  // The socket listens a few event-loop turns before the start is done; the
  // client tries at every turn, over several starts.
  for (let round = 0; round < 40; round++) {
    const t = await tempDir();
    const socket = path.join(t.dir, 'sock');
    let started = false;
    let stop = false;
    const answers: boolean[] = [];
    const client = (async () => {
      while (!stop) {
        try {
          const a = await sendRequest(socket, { op: 'status' }, { timeoutMs: 5000 });
          if (a.ok === true) {
            answers.push(started);
            return;
          }
        } catch {
          await new Promise((r) => setImmediate(r));
        }
      }
    })();
    const d = await startFakeDaemon({ dir: t.dir, onLog: (e) => (started ||= e.event === 'started') });
    try {
      await client;
      assert.deepEqual(answers, [true], `round ${round}: answered after the 'started' line`);
    } finally {
      stop = true;
      await client;
      await d.stop();
      await t.remove();
    }
  }
});
