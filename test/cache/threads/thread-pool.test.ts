// Hashing on the worker thread (src/cache/threads/thread-pool.ts) must give
// exactly node:crypto's digest, for any chunking, several hashes at once,
// and must fail (never make a digest up) when the thread dies. Signatures
// made there must be signFingerprint's, thread or no thread.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { MAX_IN_FLIGHT, ThreadPool } from '../../../src/cache/threads/thread-pool.js';
import { newSecretKey } from '../../../src/signing/keys.js';
import { signFingerprint } from '../../../src/signing/sign.js';

// This file's threads; closing the pool stops them as a crash would, and a later use starts new ones.
const pool = new ThreadPool();
after(() => pool.close());

async function hashAll(chunks: readonly Uint8Array[], algo: 'sha256' | 'sha512' = 'sha256'): Promise<Buffer> {
  const h = pool.hash(algo);
  for (const c of chunks) await h.update(c);
  return h.digest();
}

test('background hash: equals node:crypto for any chunking (property)', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 5000 }), { maxLength: 20 }), async (chunks) => {
      const want = createHash('sha256');
      for (const c of chunks) want.update(c);
      assert.ok((await hashAll(chunks)).equals(want.digest()));
    }),
    { numRuns: 50 },
  );
});

test('background hash: chunks larger than a transfer buffer, and sha512', async () => {
  const big = randomBytes(5 * 1024 * 1024 + 3);
  const chunks = [big.subarray(0, 1), big.subarray(1, 4_000_000), big.subarray(4_000_000)];
  assert.ok((await hashAll(chunks)).equals(createHash('sha256').update(big).digest()));
  assert.ok((await hashAll(chunks, 'sha512')).equals(createHash('sha512').update(big).digest()));
});

test('background hash: several hashes at once keep their bytes apart', async () => {
  const inputs = Array.from({ length: 6 }, (_, i) => randomBytes(100_000 + i));
  const hashes = inputs.map(() => pool.hash('sha256'));
  for (let off = 0; off < 110_000; off += 7_000) {
    for (const [i, h] of hashes.entries()) await h.update(inputs[i]!.subarray(off, off + 7_000));
  }
  const digests = await Promise.all(hashes.map((h) => h.digest()));
  for (const [i, d] of digests.entries()) assert.ok(d.equals(createHash('sha256').update(inputs[i]!).digest()));
});

test('background hash: update asks the caller to wait once MAX_IN_FLIGHT bytes are queued', async () => {
  const h = pool.hash('sha256');
  const chunk = randomBytes(1 << 20);
  let waited = false;
  let total = 0;
  for (let i = 0; i < Math.ceil((2 * MAX_IN_FLIGHT) / chunk.length); i++) {
    const w = h.update(chunk);
    total += chunk.length;
    if (w) {
      waited = true;
      assert.ok(total >= MAX_IN_FLIGHT, 'no wait below the limit');
      await w;
    }
  }
  assert.ok(waited);
  await h.digest();
});

test('background hash: a dead hash thread fails open hashes; the next hash starts a new thread', async () => {
  const h = pool.hash('sha256');
  await h.update(randomBytes(1000));
  await pool.close();
  await assert.rejects(h.digest(), { code: 'HASH_FAILED' });
  h.drop();
  const data = randomBytes(10_000);
  assert.ok((await hashAll([data])).equals(createHash('sha256').update(data).digest()));
});

test('background hash: a digest waiting when the thread dies fails; update and digest afterwards fail the same way', async () => {
  const h = pool.hash('sha256');
  // Several MiB posted: the thread is still hashing when the digest is asked for and the thread stopped.
  const data = randomBytes(6 << 20);
  void h.update(data);
  const digest = h.digest();
  const exited = pool.close();
  const outcome = await digest.then(
    (d) => d,
    (e: { code?: string }) => e,
  );
  await exited;
  // The thread may have answered before it stopped; otherwise its exit fails the digest.
  if (Buffer.isBuffer(outcome)) assert.ok(outcome.equals(createHash('sha256').update(data).digest()));
  else assert.equal(outcome.code, 'HASH_FAILED');

  const open = pool.hash('sha256');
  await open.update(randomBytes(1000));
  await pool.close();
  assert.throws(() => open.update(randomBytes(10)), { code: 'HASH_FAILED' });
  await assert.rejects(open.digest(), { code: 'HASH_FAILED' });
  open.drop();
});

test('background hash: an update waiting for room when the thread dies is released with HASH_FAILED', async () => {
  const h = pool.hash('sha256');
  const chunk = randomBytes(1 << 20);
  let wait: Promise<void> | undefined;
  for (let i = 0; !wait; i++) {
    assert.ok(i < 64, 'update never asked to wait');
    wait = h.update(chunk);
  }
  const exited = pool.close();
  const outcome = await wait.then(
    () => 'resumed',
    (e: { code?: string }) => e.code,
  );
  await exited;
  if (outcome === 'resumed') {
    // The thread caught up before it stopped; the hash still fails, never a made-up digest.
    await assert.rejects(h.digest(), { code: 'HASH_FAILED' });
  } else assert.equal(outcome, 'HASH_FAILED');
  h.drop();
});

test('background hash: hashes opened on a thread being terminated fail when it exits, or finish; never hang', async () => {
  await hashAll([Buffer.from('warm')]);
  const exited = pool.close();
  const data = randomBytes(100_000);
  const outcome = await hashAll([data]).then(
    (d) => d,
    (e: { code?: string }) => e,
  );
  await exited;
  if (Buffer.isBuffer(outcome)) assert.ok(outcome.equals(createHash('sha256').update(data).digest()));
  else assert.equal(outcome.code, 'HASH_FAILED');
  assert.ok((await hashAll([data])).equals(createHash('sha256').update(data).digest()), 'a new thread afterwards');
});

test('background hash: the thread does not keep the process alive', () => {
  const mod = fileURLToPath(new URL('../../../src/cache/threads/thread-pool.js', import.meta.url));
  const script = `import(${JSON.stringify(mod)}).then(async ({ ThreadPool }) => {
    const h = new ThreadPool().hash('sha256'); h.update(Buffer.from('abc'));
    console.log((await h.digest()).toString('hex'));
  })`;
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 30_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
  assert.equal(r.stdout.toString().trim(), createHash('sha256').update('abc').digest('hex'));
  // Started ahead of use and never used: the process still ends once its own work is done.
  const prewarmed = `import(${JSON.stringify(mod)}).then(({ ThreadPool }) => {
    new ThreadPool().prewarm(); setTimeout(() => console.log('done'), 500);
  })`;
  const p = spawnSync(process.execPath, ['-e', prewarmed], { timeout: 30_000 });
  assert.equal(p.status, 0, `prewarmed: exit ${p.status} ${p.signal ?? ''} ${p.stderr}`);
  assert.equal(p.stdout.toString().trim(), 'done');
});

test('background sign: the same signatures as signFingerprint, for batches of any size and several keys (property)', async () => {
  const keys = [newSecretKey('a-1'), newSecretKey('b-1'), newSecretKey('a-1')];
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.string({ maxLength: 300 }), fc.nat(keys.length - 1)), { minLength: 1, maxLength: 40 }), async (items) => {
      const sigs = await Promise.all(items.map(([fp, k]) => pool.sign(fp, keys[k]!)));
      assert.deepEqual(sigs, items.map(([fp, k]) => signFingerprint(fp, keys[k]!)));
    }),
    { numRuns: 30 },
  );
});

test('background sign: signatures asked for when the thread dies are made here, the same', async () => {
  const key = newSecretKey('c-1');
  // About 50 ms of signing: the thread is still at it when it is stopped.
  const fps = Array.from({ length: 500 }, (_, i) => `1;/nix/store/${i};sha256:x;${i};`);
  await pool.sign('warm-up', key);
  const pending = fps.map((fp) => pool.sign(fp, key));
  await new Promise((r) => setImmediate(r)); // the batch is posted
  await pool.close();
  assert.deepEqual(await Promise.all(pending), fps.map((fp) => signFingerprint(fp, key)));
  // And the next signatures start a new thread, with the key sent to it again.
  assert.equal(await pool.sign('after', key), signFingerprint('after', key));
});

test('background sign: a batch posted to a thread being terminated is signed here when it exits', async () => {
  const key = newSecretKey('d-1');
  await pool.sign('warm-up', key);
  const exited = pool.close();
  const fps = Array.from({ length: 50 }, (_, i) => `1;/nix/store/${i};sha256:y;${i};`);
  // Asked for after the terminate: the batch and its key go to a worker that is going away.
  const sigs = await Promise.all(fps.map((fp) => pool.sign(fp, key)));
  await exited;
  assert.deepEqual(sigs, fps.map((fp) => signFingerprint(fp, key)));
  assert.equal(await pool.sign('after', key), signFingerprint('after', key));
});

test('background sign: the thread does not keep the process alive after signing', () => {
  const mod = fileURLToPath(new URL('../../../src/cache/threads/thread-pool.js', import.meta.url));
  const keys = fileURLToPath(new URL('../../../src/signing/keys.js', import.meta.url));
  const script = `Promise.all([import(${JSON.stringify(mod)}), import(${JSON.stringify(keys)})]).then(async ([{ ThreadPool }, { newSecretKey }]) => {
    console.log((await new ThreadPool().sign('fp', newSecretKey('k-1'))).split(':')[0]);
  })`;
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 30_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
  assert.equal(r.stdout.toString().trim(), 'k-1');
});

test('close: the process does not end before the thread has exited, even when a hash opened meanwhile is dropped (nothing left to do)', () => {
  const mod = fileURLToPath(new URL('../../../src/cache/threads/thread-pool.js', import.meta.url));
  // A late reply or a dropped hash left the worker without work while it was being
  // terminated; it was unreferenced again, and the event loop could end before its exit.
  const script = `import(${JSON.stringify(mod)}).then(async ({ ThreadPool }) => {
    const pool = new ThreadPool();
    const warm = pool.hash('sha256'); warm.update(Buffer.from('warm')); await warm.digest();
    const closing = pool.close();
    pool.hash('sha256').drop();
    await closing;
    console.log('closed');
  })`;
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 30_000 });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
    assert.equal(r.stdout.toString().trim(), 'closed', 'the owner saw its close() settle');
  }
});
