import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { dumpNar, dumpNarSync, narStream } from '../../src/nar/dump.js';
import { encodeNar, encodeNarSync } from '../../src/nar/encode.js';
import type { NarEvent } from '../../src/nar/events.js';
import { BufferPool } from '../../src/nar/buffer-pool.js';
import { walkNar } from '../../src/nar/walk.js';
import { runOk } from '../helpers/run.js';
import { nixDump } from './fixtures.js';
import { treeArb, treeEvents, writeTree, type Tree } from './tree.js';

/** Collect chunks, copying each one: with reuseBuffers a chunk is only valid until the next is pulled. */
async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function withTemp<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-walk-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const OPTION_SETS = [
  {},
  { reuseBuffers: true },
  { smallFileSize: 8, readChunkSize: 5, chunkSize: 1024 },
  { smallFileSize: 8, readChunkSize: 5, chunkSize: 1024, reuseBuffers: true },
  { smallFileSize: 0, readChunkSize: 4096, reuseBuffers: true },
];

test('property: a random tree written to disk walks to the same bytes as the in-memory encoder', async () => {
  await withTemp(async (dir) => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(treeArb(), fc.constantFrom(...OPTION_SETS), async (tree, opts) => {
        const root = Buffer.from(path.join(dir, `t${n++}`));
        writeTree(root, tree);
        const expected = encodeNarSync(treeEvents(tree));
        assert.deepEqual(await collect(dumpNar(root, opts)), expected);
      }),
      { numRuns: 150 },
    );
  });
});

test('property: with a pool, chunks given back (at any lag) are read into again and the bytes stay the same', async () => {
  await withTemp(async (dir) => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(treeArb(), fc.constantFrom(5, 64, 4096), fc.nat({ max: 3 }), async (tree, chunk, lag) => {
        const root = Buffer.from(path.join(dir, `p${n++}`));
        writeTree(root, tree);
        const pool = new BufferPool(chunk, 4);
        const held: Uint8Array[] = [];
        const parts: Buffer[] = [];
        for await (const c of dumpNar(root, { smallFileSize: 8, readChunkSize: chunk, pool })) {
          // A chunk still held is never overwritten: compared when given back.
          parts.push(Buffer.from(c));
          held.push(c);
          while (held.length > lag) {
            const back = held.shift()!;
            assert.ok(Buffer.from(back).equals(parts[parts.length - 1 - held.length]!), 'a chunk held was overwritten');
            pool.give(back);
          }
        }
        assert.deepEqual(Buffer.concat(parts), encodeNarSync(treeEvents(tree)));
      }),
      { numRuns: 100 },
    );
  });
});

test('with a pool: a large file goes round a few buffers when each chunk is given back, and the sizes must match', async () => {
  await withTemp(async (dir) => {
    const file = path.join(dir, 'big');
    const data = Buffer.alloc(10 * 4096 + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
    fs.writeFileSync(file, data);
    const pool = new BufferPool(4096, 4);
    const buffers = new Set<ArrayBufferLike>();
    const parts: Buffer[] = [];
    for await (const c of dumpNar(file, { readChunkSize: 4096, smallFileSize: 1024, pool })) {
      parts.push(Buffer.from(c));
      if (c.length === 4096) buffers.add(c.buffer);
      pool.give(c);
    }
    assert.deepEqual(Buffer.concat(parts), await collect(dumpNar(file)));
    assert.ok(buffers.size <= 5, `${buffers.size} buffers for ten chunks`);
    assert.throws(() => [...walkNar(file, { readChunkSize: 4096, pool: new BufferPool(8192, 1) })], /pool of 8192-byte buffers for 4096-byte reads/);
  });
});

test('property: dumpNarSync gives the same bytes when the NAR fits, and undefined when it does not', async () => {
  await withTemp(async (dir) => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(treeArb(), fc.integer({ min: -64, max: 64 }), async (tree, slack) => {
        const root = Buffer.from(path.join(dir, `s${n++}`));
        writeTree(root, tree);
        const expected = encodeNarSync(treeEvents(tree));
        const limit = Math.max(0, expected.length + slack);
        const got = dumpNarSync(root, limit);
        if (limit >= expected.length) assert.deepEqual(got, expected);
        else assert.equal(got, undefined);
      }),
      { numRuns: 150 },
    );
  });
});

test('dumpNarSync stops at the first file that does not fit and walks no further', async () => {
  await withTemp(async (dir) => {
    const root = path.join(dir, 'big');
    fs.mkdirSync(root);
    fs.writeFileSync(path.join(root, 'a'), 'small');
    fs.writeFileSync(path.join(root, 'b'), Buffer.alloc(1 << 20));
    // After 'b' in NAR order, a FIFO: walking it would throw UNSUPPORTED_FILE_TYPE (even as root).
    await runOk('mkfifo', [path.join(root, 'c')]);
    assert.equal(dumpNarSync(root, 4096), undefined);
    assert.throws(() => dumpNarSync(root, 2 << 20), { code: 'UNSUPPORTED_FILE_TYPE' }, 'with room for b, the walk reaches c');
  });
});

test('property: ... and Nix dumps such trees to the same bytes', async () => {
  await withTemp(async (dir) => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(treeArb(3), async (tree) => {
        const root = path.join(dir, `t${n++}`);
        writeTree(Buffer.from(root), tree);
        assert.deepEqual(await nixDump(root), encodeNarSync(treeEvents(tree)));
      }),
      { numRuns: 12 },
    );
  });
});

test('only the owner-execute bit counts, as for Nix', async () => {
  await withTemp(async (dir) => {
    const root = path.join(dir, 'modes');
    fs.mkdirSync(root);
    const modes = [0o644, 0o755, 0o744, 0o700, 0o100, 0o611, 0o654, 0o645, 0o444, 0o4755, 0o2644, 0o1644];
    for (const m of modes) {
      const f = path.join(root, m.toString(8).padStart(4, '0'));
      fs.writeFileSync(f, 'x');
      fs.chmodSync(f, m);
    }
    const events = [...walkNar(root)].filter((e): e is NarEvent & { type: 'regular' } => e.type === 'regular');
    assert.deepEqual(
      events.map((e) => [e.name!.toString(), e.executable]),
      modes.map((m) => [m.toString(8).padStart(4, '0'), (m & 0o100) !== 0]).sort(),
    );
    assert.deepEqual(await collect(dumpNar(root)), await nixDump(root));
  });
});

test('names are bytes, sorted unsigned (not as JS strings)', async () => {
  await withTemp(async (dir) => {
    const names = ['\u{fffd}', '\u{1f600}', '\u{e000}', 'Z', 'a'].map((s) => Buffer.from(s)).concat([Buffer.from([0xff]), Buffer.from([0x80, 0x41])]);
    const tree: Tree = { type: 'directory', entries: names.map((n) => [n, { type: 'regular', executable: false, contents: n }] as const) };
    const root = path.join(dir, 'names');
    writeTree(Buffer.from(root), tree);
    const walked = [...walkNar(root)].flatMap((e) => (e.type === 'regular' && e.name ? [e.name] : []));
    assert.deepEqual(walked, [...names].sort(Buffer.compare));
    // JS string order would put U+1F600 (a surrogate pair, 0xD83D...) before U+FFFD.
    assert.ok(walked.findIndex((n) => n.equals(Buffer.from('\u{fffd}'))) < walked.findIndex((n) => n.equals(Buffer.from('\u{1f600}'))));
    assert.deepEqual(await collect(dumpNar(root)), await nixDump(root));
  });
});

test('FIFOs and sockets are errors naming the file', async () => {
  await withTemp(async (dir) => {
    const root = path.join(dir, 'special');
    fs.mkdirSync(root);
    fs.writeFileSync(path.join(root, 'a-file'), 'x');
    await runOk('mkfifo', [path.join(root, 'b-fifo')]);
    await assert.rejects(collect(dumpNar(root)), {
      code: 'UNSUPPORTED_FILE_TYPE',
      message: `'${path.join(root, 'b-fifo')}' is a FIFO: a NAR holds only regular files, symlinks and directories`,
    });
    await assert.rejects(collect(dumpNar(path.join(root, 'b-fifo'))), { code: 'UNSUPPORTED_FILE_TYPE', message: /b-fifo' is a FIFO/ });
    fs.rmSync(path.join(root, 'b-fifo'));
    const sock = path.join(root, 'c-socket');
    const server = net.createServer().listen(sock);
    await new Promise((r) => server.once('listening', r));
    try {
      await assert.rejects(collect(dumpNar(root)), { code: 'UNSUPPORTED_FILE_TYPE', message: /c-socket' is a socket/ });
    } finally {
      server.close();
    }
    await assert.rejects(collect(dumpNar(path.join(dir, 'missing'))), { code: 'PATH_NOT_FOUND', message: /missing' does not exist/ });
  });
});

test('a file that shrinks while being read is an error', async () => {
  await withTemp(async (dir) => {
    const f = path.join(dir, 'shrinks');
    fs.writeFileSync(f, Buffer.alloc(1 << 20, 1));
    const it = walkNar(f, { smallFileSize: 1024, readChunkSize: 4096 });
    const ev = it.next().value;
    assert.ok(ev?.type === 'regular');
    fs.truncateSync(f, 1000);
    await assert.rejects(collect(ev.contents as AsyncIterable<Uint8Array>), { code: 'FILE_CHANGED', message: /shrinks' changed while being read: expected 1048576 bytes, read 1000/ });
  });
});

test('stopping early closes the file being read; narStream gives the same bytes', async () => {
  await withTemp(async (dir) => {
    const f = path.join(dir, 'big');
    fs.writeFileSync(f, Buffer.alloc(8 << 20, 7));
    const fds = (): number => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    const it = encodeNar(walkNar(f, { readChunkSize: 1 << 16 }));
    await it.next();
    await it.next();
    assert.ok(fds() > before, 'the file should be open while being read');
    await it.return();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(fds(), before);
    assert.deepEqual(await collect(narStream(f)), await nixDump(f));
  });
});

test('with reuseBuffers, a large file\'s read buffers serve the next NAR once a file was read whole, never while a walk that stopped midway may hold one', async () => {
  await withTemp(async (dir) => {
    const big = (name: string, byte: number): Buffer => {
      const p = path.join(dir, name);
      fs.writeFileSync(p, Buffer.alloc(64 * 1024, byte));
      return Buffer.from(p);
    };
    const a = big('a', 0x61);
    const b = big('b', 0x62);
    const opts = { reuseBuffers: true, smallFileSize: 0, readChunkSize: 4096 };
    // The file's chunks as the walker lends them (their memory, not copies).
    const fileChunks = async (root: Buffer, stopAfter = Infinity): Promise<Uint8Array[]> => {
      const seen: Uint8Array[] = [];
      const walk = walkNar(root, opts);
      const ev = walk.next().value as NarEvent;
      assert.equal(ev.type, 'regular');
      for await (const c of (ev as { contents: AsyncIterable<Uint8Array> }).contents) {
        seen.push(c);
        if (seen.length >= stopAfter) break;
      }
      walk.return();
      return seen;
    };
    // Read whole: the next NAR reads into the same memory.
    const first = new Set((await fileChunks(a)).map((c) => c.buffer));
    const second = await fileChunks(b);
    assert.ok(second.some((c) => first.has(c.buffer)), 'the ring went round to the next NAR');
    // Stopped midway, its last chunk still held: that memory is not read into again.
    const [held] = await fileChunks(a, 1);
    const copy = Buffer.from(held!);
    const after = await fileChunks(b);
    assert.ok(after.every((c) => c.buffer !== held!.buffer), 'not lent again');
    assert.ok(Buffer.from(held!).equals(copy), 'the held chunk was not overwritten');
    assert.deepEqual(await collect(dumpNar(b, opts)), dumpNarSync(b, 1 << 20));
  });
});
