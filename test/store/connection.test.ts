/**
 * The connection against scripted daemons (test/store/fake-daemon.ts): the
 * protocol corners a real nix-daemon will not show on demand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { DaemonLog } from '../../src/store/daemon-stderr.js';
import { DaemonConnection } from '../../src/store/connection.js';
import { createConnection } from 'node:net';
import * as ops from '../../src/store/operations.js';
import {
  Op,
  STDERR_ERROR,
  STDERR_LAST,
  STDERR_NEXT,
  STDERR_READ,
  STDERR_RESULT,
  STDERR_START_ACTIVITY,
  STDERR_STOP_ACTIVITY,
  STDERR_WRITE,
  protocolVersion,
} from '../../src/store/protocol.js';
import { NEED_MORE, WireDecoder } from '../../src/store/wire-reader.js';
import { type WireWriter, wire } from '../../src/store/wire.js';
import { AnswerReply } from '../../src/store/daemon-stderr.js';
import { type Peer, V1_34, bytes, fakeDaemon, string, u64 } from './fake-daemon.js';

const PATH = '/nix/store/04dwbkpjix2pn27aiq5qcx4zsfx377fs-exp-b';
const REF = '/nix/store/iawvdj19f5ygrcgy08827d1jpy4c6agn-exp-a';
const HEX = 'ab'.repeat(32);

function pathInfoAnswer(w: WireWriter): void {
  w.u64(STDERR_LAST).u64(1);
  w.string('/nix/store/rq33dni6rcd097bvs8v15nbcphgsmcvw-exp-b.drv').string(HEX).strings([PATH, REF]);
  w.u64(1700000000).u64(216).u64(1).strings(['k:sig']).string('');
}

async function expectQueryPathInfo(peer: Peer): Promise<string> {
  assert.equal(await peer.read(u64), Op.QueryPathInfo);
  return peer.read(string);
}

function structuredError(w: WireWriter, message: string): void {
  w.u64(STDERR_ERROR).string('Error').u64(0).string('Error').string(message).u64(0).u64(1).u64(0).string('a trace');
}

test('a daemon that closes in the middle of an answer fails the request cleanly, and later requests too', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    await expectQueryPathInfo(peer);
    peer.socket.end(wire((w) => w.u64(STDERR_LAST).u64(1).string('/nix/store/rq33dni6rcd097bvs8v15nbcphgsmcvw-ex')));
  });
  try {
    const conn = await d.connect();
    await assert.rejects(conn.run(ops.queryPathInfo(PATH)), {
      code: 'STORE_CONNECTION_CLOSED',
      message: /closed the connection while answering QueryPathInfo/,
    });
    await assert.rejects(conn.run(ops.queryPathInfo(PATH)), { code: 'STORE_CONNECTION_CLOSED' });
    conn.destroy();
  } finally {
    await d.stop();
  }
});

test('a daemon that closes during the handshake gives a clean error', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.read(u64);
    peer.socket.end(wire((w) => w.u64(0x6478696f)));
  });
  try {
    await assert.rejects(d.connect(), { code: 'STORE_CONNECTION_CLOSED', message: /handshake/ });
  } finally {
    await d.stop();
  }
});

test('a daemon older than protocol 1.21 is refused with both versions named', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.read(u64);
    peer.write((w) => w.u64(0x6478696f).u64(protocolVersion(1, 20)));
    await peer.read(u64);
  });
  try {
    await assert.rejects(d.connect(), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'STORE_VERSION_TOO_OLD');
      assert.match(e.message, /protocol 1\.20, older than 1\.21/);
      return true;
    });
  } finally {
    await d.stop();
  }
});

test('a peer that is not a Nix daemon is refused', async () => {
  const d = await fakeDaemon(async (peer) => {
    peer.socket.write('HTTP/1.1 400 Bad Request\r\n\r\n');
    await peer.read(u64);
  });
  try {
    await assert.rejects(d.connect(), { code: 'STORE_PROTOCOL_ERROR', message: /not a Nix daemon/ });
  } finally {
    await d.stop();
  }
});

test('protocol 1.38: features are exchanged, the Nix version and trust are read', async () => {
  let seen: { clientVersion: number; clientFeatures: string[] } | undefined;
  const d = await fakeDaemon(async (peer) => {
    seen = await peer.handshake(protocolVersion(1, 39), { features: ['some-future-thing'], nixVersion: '2.33.0', trusted: 1 });
    assert.equal(await expectQueryPathInfo(peer), PATH);
    peer.write(pathInfoAnswer);
    await peer.read(u64);
  });
  try {
    const conn = await d.connect();
    assert.equal(conn.protocolVersion, protocolVersion(1, 38));
    assert.equal(conn.info.daemonProtocolVersion, protocolVersion(1, 39));
    assert.equal(conn.info.daemonNixVersion, '2.33.0');
    assert.equal(conn.info.trusted, true);
    assert.deepEqual(conn.info.features, []);
    assert.deepEqual(seen, { clientVersion: protocolVersion(1, 38), clientFeatures: [] });
    const info = await conn.run(ops.queryPathInfo(PATH));
    assert.equal(info?.narSize, 216);
    assert.deepEqual(info?.references, [PATH, REF]);
    conn.destroy();
  } finally {
    await d.stop();
  }
});

for (const [label, version, writeError] of [
  ['structured (>= 1.26)', V1_34, (w: WireWriter) => structuredError(w, "path '\x1b[35;1m/nix/store/x\x1b[0m' is not valid")],
  ['old string format (< 1.26)', protocolVersion(1, 21), (w: WireWriter) => w.u64(STDERR_ERROR).string("error: path '/nix/store/x' is not valid").u64(1)],
] as const) {
  test(`a daemon error in the ${label} fails one request; the connection stays usable`, async () => {
    const d = await fakeDaemon(async (peer) => {
      await peer.handshake(version);
      await expectQueryPathInfo(peer);
      await expectQueryPathInfo(peer);
      peer.write(writeError);
      peer.write(pathInfoAnswer);
      await peer.read(u64);
    });
    try {
      const conn = await d.connect();
      const first = conn.run(ops.queryPathInfo(PATH));
      const second = conn.run(ops.queryPathInfo(PATH));
      await assert.rejects(first, { code: 'INVALID_PATH', message: "nix-daemon: path '/nix/store/x' is not valid" });
      assert.equal((await second)?.narSize, 216);
      conn.destroy();
    } finally {
      await d.stop();
    }
  });
}

test('log lines, activities, results, WRITE and READ are all handled during a request', async () => {
  let readReply: Buffer | undefined;
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    await expectQueryPathInfo(peer);
    peer.write((w) => {
      w.u64(STDERR_NEXT).string('warning: hello\n');
      w.u64(STDERR_START_ACTIVITY).u64(2n ** 62n + 5n).u64(3).u64(105).string('querying').u64(2);
      w.u64(0).u64(42).u64(1).string('field');
      w.u64(0);
      w.u64(STDERR_RESULT).u64(2n ** 62n + 5n).u64(101).u64(1).u64(1).string('x');
      w.u64(STDERR_WRITE).string('sink data');
      w.u64(STDERR_READ).u64(100);
    });
    readReply = await peer.read(bytes);
    peer.write((w) => {
      w.u64(STDERR_STOP_ACTIVITY).u64(2n ** 62n + 5n);
      pathInfoAnswer(w);
    });
    await peer.read(u64);
  });
  try {
    const logs: DaemonLog[] = [];
    const conn = await DaemonConnection.open(createConnection({ path: d.socketPath }), { onLog: (e) => logs.push(e) });
    const info = await conn.run(ops.queryPathInfo(PATH));
    assert.equal(info?.sigs[0], 'k:sig');
    assert.deepEqual(readReply, Buffer.alloc(0), 'STDERR_READ is answered with an empty string (no data)');
    assert.deepEqual(
      logs.map((l) => l.kind),
      ['message', 'start-activity', 'result', 'stop-activity'],
    );
    assert.deepEqual(logs[1], {
      kind: 'start-activity',
      id: 2n ** 62n + 5n,
      level: 3,
      type: 105,
      text: 'querying',
      fields: [42, 'field'],
      parent: 0n,
    });
    conn.destroy();
  } finally {
    await d.stop();
  }
});

test('an unknown message kind fails every request in flight (the stream is out of sync)', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    await expectQueryPathInfo(peer);
    await expectQueryPathInfo(peer);
    peer.write((w) => w.u64(0x12345678));
    await peer.read(u64);
  });
  try {
    const conn = await d.connect();
    const a = conn.run(ops.queryPathInfo(PATH));
    const b = conn.run(ops.queryPathInfo(PATH));
    await assert.rejects(a, { code: 'STORE_PROTOCOL_ERROR', message: /unknown message type 0x12345678/ });
    await assert.rejects(b, { code: 'STORE_PROTOCOL_ERROR' });
  } finally {
    await d.stop();
  }
});

test('property: an answer with interleaved daemon messages parses the same however it is split', () => {
  const message = fc.oneof(
    fc.string({ maxLength: 30 }).map((s) => (w: WireWriter) => w.u64(STDERR_NEXT).string(s)),
    fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.string({ maxLength: 10 })).map(
      ([id, s]) => (w: WireWriter) => w.u64(STDERR_START_ACTIVITY).u64(id).u64(0).u64(0).string(s).u64(1).u64(1).string(s).u64(0),
    ),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((id) => (w: WireWriter) => w.u64(STDERR_STOP_ACTIVITY).u64(id)),
  );
  fc.assert(
    fc.property(fc.array(message, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), (messages, cuts) => {
      const buf = wire((w) => {
        for (const m of messages) m(w);
        pathInfoAnswer(w);
      });
      const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((x, y) => x - y);
      const chunks: Buffer[] = [];
      let prev = 0;
      for (const p of [...points, buf.length]) {
        chunks.push(buf.subarray(prev, p));
        prev = p;
      }
      let logs = 0;
      const run = (hooks: { onLog?: () => void }) => {
        const d = new WireDecoder();
        const reply = new AnswerReply(V1_34, hooks, ops.queryPathInfo(PATH).result(V1_34));
        let r: ReturnType<typeof reply.poll> = NEED_MORE;
        for (const c of chunks) {
          d.push(c);
          if (r === NEED_MORE) r = reply.poll(d);
        }
        if (r === NEED_MORE) r = reply.poll(d);
        assert.notEqual(r, NEED_MORE);
        assert.equal(d.buffered, 0);
        return r as Exclude<typeof r, typeof NEED_MORE>;
      };
      const r = run({ onLog: () => logs++ });
      assert.equal(logs, messages.length);
      // Without hooks the messages must still be consumed.
      assert.deepEqual(run({}), r);
      assert.ok(r.ok);
      assert.equal(r.value?.narSize, 216);
      assert.deepEqual(r.value?.references, [PATH, REF]);
    }),
    { numRuns: 300 },
  );
});

/** Open a connection to the fake daemon with an idle timeout. */
function connectWithTimeout(socketPath: string, idleTimeoutMs: number): Promise<DaemonConnection> {
  return DaemonConnection.open(createConnection({ path: socketPath }), { idleTimeoutMs });
}

async function expectAddTempRoot(peer: Peer): Promise<string> {
  assert.equal(await peer.read(u64), Op.AddTempRoot);
  return peer.read(string);
}

/** `p`, or a failure after `ms`: a missing store timeout must fail the test, not hang it. */
function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

test('a hung daemon (silent while an answer is owed) fails the request with STORE_TIMEOUT, and the connection with it', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    await expectAddTempRoot(peer);
    // ... and never a word again.
  });
  try {
    const conn = await connectWithTimeout(d.socketPath, 300);
    const t0 = Date.now();
    await assert.rejects(within(10_000, conn.run(ops.addTempRoot(PATH))), {
      code: 'STORE_TIMEOUT',
      message: `the Nix daemon sent nothing for 0.3 s while answering AddTempRoot(${PATH}); gave up on the connection`,
    });
    const ms = Date.now() - t0;
    assert.ok(ms >= 250 && ms < 5000, `timed out after ${ms} ms`);
    await assert.rejects(conn.run(ops.addTempRoot(PATH)), { code: 'STORE_TIMEOUT' });
    assert.equal(conn.isClosed, true);
  } finally {
    await d.stop();
  }
});

test('a daemon that hangs in the handshake fails the open with STORE_TIMEOUT', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.read(u64); // the client's magic, then silence
  });
  try {
    await assert.rejects(within(10_000, connectWithTimeout(d.socketPath, 300)), { code: 'STORE_TIMEOUT', message: /while answering the handshake/ });
  } finally {
    await d.stop();
  }
});

test('the store timeout is an idle one: an answer preceded by log lines for longer than the timeout arrives; an idle connection is not closed', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    for (let round = 0; round < 2; round++) {
      await expectAddTempRoot(peer);
      // 1.5 s of work, reported every 100 ms: never 500 ms of silence.
      for (let i = 0; i < 15; i++) {
        await new Promise((r) => setTimeout(r, 100));
        peer.write((w) => w.u64(STDERR_NEXT).string(`working ${i}\n`));
      }
      peer.write((w) => w.u64(STDERR_LAST).u64(1));
    }
  });
  try {
    const conn = await connectWithTimeout(d.socketPath, 500);
    await conn.run(ops.addTempRoot(PATH));
    // Nothing is owed: the silence does not count.
    await new Promise((r) => setTimeout(r, 1000));
    await conn.run(ops.addTempRoot(PATH));
    assert.equal(conn.isClosed, false);
    conn.destroy();
  } finally {
    await d.stop();
  }
});

test('AddIndirectRoot sends op 12 and the link path, and reads the daemon\'s 1', async () => {
  const seen: string[] = [];
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    for (;;) {
      assert.equal(await peer.read(u64), Op.AddIndirectRoot);
      seen.push(await peer.read(string));
      peer.write((w) => w.u64(STDERR_LAST).u64(1));
    }
  });
  try {
    const conn = await d.connect();
    await conn.run(ops.addIndirectRoot('/var/lib/narpush/gcroots/rq33dni6rcd097bvs8v15nbcphgsmcvw-exp-b'));
    await conn.run(ops.addIndirectRoot('/tmp/second'));
    assert.deepEqual(seen, ['/var/lib/narpush/gcroots/rq33dni6rcd097bvs8v15nbcphgsmcvw-exp-b', '/tmp/second']);
    conn.destroy();
  } finally {
    await d.stop();
  }
});

test('AddIndirectRoot refused by the daemon is a clean error on that request; the connection carries on', async () => {
  const d = await fakeDaemon(async (peer) => {
    await peer.handshake(V1_34);
    assert.equal(await peer.read(u64), Op.AddIndirectRoot);
    await peer.read(string);
    peer.write((w) => structuredError(w, "cannot create symlink '/nix/var/nix/gcroots/auto/x': Permission denied"));
    await expectQueryPathInfo(peer);
    peer.write((w) => w.u64(STDERR_LAST).u64(0));
  });
  try {
    const conn = await d.connect();
    await assert.rejects(conn.run(ops.addIndirectRoot('/tmp/link')), { message: /Permission denied/ });
    assert.equal(await conn.run(ops.queryPathInfo(PATH)), undefined);
    conn.destroy();
  } finally {
    await d.stop();
  }
});
