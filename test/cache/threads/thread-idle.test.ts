// Idle threads (src/cache/threads/thread-pool.ts): a thread with no work for the
// idle delay is stopped, so that a daemon between bursts does not keep it;
// the next hash, signature or NAR job starts one again; a thread with work
// is never stopped, however long its user pauses.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ThreadPool } from '../../../src/cache/threads/thread-pool.js';
import { newSecretKey } from '../../../src/signing/keys.js';
import { signFingerprint } from '../../../src/signing/sign.js';

const IDLE_MS = 150;
const pool = new ThreadPool({ idleMs: IDLE_MS });
after(() => pool.close());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** This process's OS threads (a worker thread is one or more). */
function osThreads(): number {
  return Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await sleep(10);
  }
}

async function sha256(data: Buffer): Promise<Buffer> {
  const h = pool.hash('sha256');
  await h.update(data);
  return h.digest();
}

test('idle threads: stopped after the idle delay, started again on the next use', async () => {
  const data = randomBytes(100_000);
  const want = createHash('sha256').update(data).digest();
  assert.ok((await sha256(data)).equals(want));
  assert.equal(pool.running, 1);
  const withThread = osThreads();
  const idleFrom = Date.now();
  await until('the idle thread stopped', () => pool.running === 0);
  assert.ok(Date.now() - idleFrom >= IDLE_MS - 20, 'not before the delay');
  await until('its OS thread gone', () => osThreads() < withThread);

  assert.ok((await sha256(data)).equals(want), 'a hash after the release');
  assert.equal(pool.running, 1);
  const key = newSecretKey('idle-1');
  assert.equal(await pool.sign('fp', key), signFingerprint('fp', key));
  await until('stopped again', () => pool.running === 0);
  // The key went to the stopped thread: the new one must be sent it again.
  assert.equal(await pool.sign('fp2', key), signFingerprint('fp2', key), 'a signature after the release');
});

test('idle threads: a thread with an open hash is kept while its user pauses', async () => {
  const data = randomBytes(300_000);
  const h = pool.hash('sha256');
  await h.update(data.subarray(0, 100_000));
  await sleep(4 * IDLE_MS);
  assert.equal(pool.running, 1, 'kept with a hash open');
  await h.update(data.subarray(100_000));
  assert.ok((await h.digest()).equals(createHash('sha256').update(data).digest()));
});

test('idle threads: a NAR job whose consumer pauses longer than the delay completes', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-idle-'));
  try {
    await mkdir(path.join(dir, 'root'));
    await writeFile(path.join(dir, 'root', 'data'), randomBytes(3 << 20));
    const job = pool.narJob({ path: path.join(dir, 'root'), level: 1, narSize: 3 << 20 });
    let fileSize = 0;
    for (let i = 0; ; i++) {
      const n = await job.next();
      if (n.done === true) {
        assert.equal(n.value.fileSize, fileSize);
        assert.ok(n.value.narSize > 3 << 20);
        break;
      }
      fileSize += n.value.bytes.length;
      if (i === 0) {
        await sleep(4 * IDLE_MS);
        assert.ok(pool.running >= 1, 'kept with a job running');
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
