import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
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
