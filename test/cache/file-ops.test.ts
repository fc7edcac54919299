import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import fsDefault from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { WriteAhead } from '../../src/cache/file-ops.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-file-ops-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('WriteAhead: chunks of every size land in order, with several writes in flight', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'out');
    const fd = fs.openSync(file, 'w');
    const data = randomBytes(300_000);
    const ahead = new WriteAhead(fd, 20_000);
    let off = 0;
    for (let i = 0; off < data.length; i++) {
      const n = Math.min(data.length - off, 1 + ((i * 7919) % 9000));
      await ahead.write(data.subarray(off, off + n));
      off += n;
    }
    await ahead.drain();
    fs.closeSync(fd);
    assert.equal(ahead.bytes, data.length);
    assert.ok((await readFile(file)).equals(data));
  });
});

test('WriteAhead: a failed write is thrown by a later write or by drain, and drain waits for all', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'ro');
    fs.writeFileSync(file, '');
    const fd = fs.openSync(file, 'r'); // writes fail with EBADF
    const ahead = new WriteAhead(fd, 1 << 20);
    let thrown: unknown;
    try {
      for (let i = 0; i < 100; i++) await ahead.write(Buffer.alloc(1000));
    } catch (e) {
      thrown = e;
    }
    await assert.rejects(ahead.drain(), { code: 'EBADF' });
    if (thrown !== undefined) assert.equal((thrown as NodeJS.ErrnoException).code, 'EBADF');
    fs.closeSync(fd);
  });
});

/**
 * Replace fs.fdatasync (which file-ops.ts calls through its `node:fs`
 * namespace import) for the duration of `fn`.
 */
async function withFdatasync(
  replacement: (real: typeof fs.fdatasync) => typeof fs.fdatasync,
  fn: () => Promise<void>,
): Promise<void> {
  const real = fs.fdatasync;
  const writable = fsDefault as { fdatasync: typeof fs.fdatasync };
  writable.fdatasync = replacement(real);
  syncBuiltinESMExports();
  try {
    await fn();
  } finally {
    writable.fdatasync = real;
    syncBuiltinESMExports();
  }
}

test('WriteAhead: flushes behind the writes, one at a time, every flushEvery bytes, and drain waits for the last', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'out');
    const fd = fs.openSync(file, 'w');
    const data = randomBytes(600_000);
    // The fake disk holds each flush until the test lets it finish; `release`
    // returns once the real fdatasync has answered and WriteAhead has seen it.
    const held: (() => Promise<void>)[] = [];
    const writtenAtFlush: number[] = [];
    const ahead = new WriteAhead(fd, 20_000, 100_000);
    const release = async (): Promise<void> => {
      await held.shift()!();
      await new Promise((r) => setImmediate(r)); // WriteAhead's reaction to it (the next flush's start) has run
    };
    let off = 0;
    const writeUpTo = async (end: number): Promise<void> => {
      for (; off < end; off += 5_000) await ahead.write(data.subarray(off, Math.min(end, off + 5_000)));
    };
    await withFdatasync(
      (real) => ((f: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
        assert.equal(f, fd);
        writtenAtFlush.push(ahead.bytes);
        held.push(
          () =>
            new Promise<void>((answered) =>
              real(f, (e) => {
                cb(e);
                answered();
              }),
            ),
        );
      }) as typeof fs.fdatasync,
      async () => {
        await writeUpTo(95_000);
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(writtenAtFlush.length, 0, 'no flush before flushEvery bytes');
        await writeUpTo(150_000);
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(writtenAtFlush.length, 1, 'a flush once flushEvery bytes are written');
        await writeUpTo(450_000);
        assert.equal(writtenAtFlush.length, 1, 'one flush at a time');
        await release();
        assert.equal(writtenAtFlush.length, 2, 'the next starts as the first ends, flushEvery bytes having come since');
        await writeUpTo(data.length);
        let drained = false;
        const drain = ahead.drain().then(() => (drained = true));
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(drained, false, 'drain waits for the flush in flight');
        await release();
        await drain;
        assert.equal(writtenAtFlush.length, 2, 'no flush starts once drain is called');
        assert.equal(held.length, 0);
      },
    );
    fs.closeSync(fd);
    assert.ok((await readFile(file)).equals(data));
    assert.ok(writtenAtFlush[0]! >= 100_000, `first flush after ${writtenAtFlush[0]} bytes`);
  });
});

test('WriteAhead: without flushEvery nothing is flushed; a failed flush fails the file like a failed write', async () => {
  await withDir(async (dir) => {
    const data = randomBytes(300_000);
    let flushes = 0;
    await withFdatasync(
      () => ((_f: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
        flushes++;
        setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
      }) as typeof fs.fdatasync,
      async () => {
        const quiet = fs.openSync(path.join(dir, 'quiet'), 'w');
        const plain = new WriteAhead(quiet, 20_000);
        for (let off = 0; off < data.length; off += 7_000) await plain.write(data.subarray(off, off + 7_000));
        await plain.drain();
        fs.closeSync(quiet);
        assert.equal(flushes, 0);

        const fd = fs.openSync(path.join(dir, 'failing'), 'w');
        const ahead = new WriteAhead(fd, 20_000, 50_000);
        let thrown: unknown;
        try {
          for (let off = 0; off < data.length; off += 7_000) await ahead.write(data.subarray(off, off + 7_000));
        } catch (e) {
          thrown = e;
        }
        await assert.rejects(ahead.drain(), { code: 'EIO' });
        if (thrown !== undefined) assert.equal((thrown as NodeJS.ErrnoException).code, 'EIO');
        assert.equal(flushes, 1, 'no flush after the failed one');
        fs.closeSync(fd);
      },
    );
  });
});

test('WriteAhead: each chunk is handed back once its bytes are in the file, in no particular order, and never after a failed write', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'out');
    const fd = fs.openSync(file, 'w');
    const reader = fs.openSync(file, 'r');
    const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(1_000 + i * 997));
    const offsets = new Map<Uint8Array, number>();
    const handedBack: Uint8Array[] = [];
    const ahead = new WriteAhead(fd, 20_000, 0, (chunk) => {
      // Called with the very chunk, once the file holds it.
      const at = offsets.get(chunk);
      assert.ok(at !== undefined, 'one of the chunks written');
      const there = Buffer.alloc(chunk.byteLength);
      fs.readSync(reader, there, 0, there.length, at);
      assert.ok(there.equals(chunk), 'its bytes are in the file when it comes back');
      handedBack.push(chunk);
    });
    let off = 0;
    for (const c of chunks) {
      offsets.set(c, off);
      off += c.length;
      await ahead.write(c);
    }
    await ahead.drain();
    fs.closeSync(fd);
    fs.closeSync(reader);
    assert.equal(handedBack.length, chunks.length);
    assert.deepEqual(new Set(handedBack), new Set(chunks));

    // Writes that fail hand nothing back.
    const ro = path.join(dir, 'ro');
    fs.writeFileSync(ro, '');
    const rfd = fs.openSync(ro, 'r');
    let back = 0;
    const failing = new WriteAhead(rfd, 1 << 20, 0, () => back++);
    await failing.write(Buffer.alloc(1000)).catch(() => {});
    await assert.rejects(failing.drain(), { code: 'EBADF' });
    fs.closeSync(rfd);
    assert.equal(back, 0);
  });
});
