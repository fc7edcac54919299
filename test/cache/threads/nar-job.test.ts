// Whole NARs on the crypto threads (src/cache/threads/nar-job.ts, run
// through ThreadPool.narJob): the pieces must be the NAR compressed
// exactly as on the main thread, the digests those of the bytes, the
// backlog bounded, and a cancelled, failed or orphaned job must end cleanly.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createChunkCompressor } from '../../../src/cache/compression.js';
import { ThreadPool } from '../../../src/cache/threads/thread-pool.js';
import { NAR_JOB_AHEAD, type NarJobResult } from '../../../src/cache/threads/nar-job.js';
import { uploadNar } from '../../../src/cache/nar-upload.js';
import { MemoryBackend } from '../../helpers/memory-backend.js';
import { makeStore, narOf } from '../upload-fake-store.js';

// This file's threads; closing the pool stops them as a crash would, and a later use starts new ones.
const pool = new ThreadPool();
after(() => pool.close());

async function tree(files: Record<string, Buffer>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-job-'));
  const root = path.join(dir, 'root');
  await mkdir(root);
  for (const [name, data] of Object.entries(files)) await writeFile(path.join(root, name), data);
  return root;
}

async function collect(job: AsyncGenerator<{ bytes: Buffer; narBytes: number }, NarJobResult>): Promise<{ file: Buffer; result: NarJobResult; narBytes: number[] }> {
  const pieces: Buffer[] = [];
  const narBytes: number[] = [];
  for (;;) {
    const n = await job.next();
    if (n.done === true) return { file: Buffer.concat(pieces), result: n.value, narBytes };
    pieces.push(n.value.bytes);
    narBytes.push(n.value.narBytes);
  }
}

function zstdHere(nar: Buffer, level: number): Promise<Buffer> {
  return createChunkCompressor({ method: 'zstd', level }, nar.length).then((c) => Buffer.concat([...c!.update(nar), ...c!.end()]));
}

test('NAR job: the pieces are the NAR compressed as on this thread, with the digests of both', async () => {
  // Text, random bytes and an empty file: compressible, incompressible and nothing.
  const root = await tree({ text: Buffer.from('narpush '.repeat(400_000)), random: randomBytes(3 << 20), empty: Buffer.alloc(0) });
  try {
    const nar = await narOf(root);
    for (const level of [1, 3]) {
      const { file, result, narBytes } = await collect(pool.narJob({ path: root, level, narSize: nar.length }));
      assert.ok(file.equals(await zstdHere(nar, level)), `level ${level}: the same bytes as the main thread's compressor`);
      assert.equal(result.narSize, nar.length);
      assert.equal(result.fileSize, file.length);
      assert.ok(Buffer.from(result.narDigest).equals(createHash('sha256').update(nar).digest()));
      assert.ok(Buffer.from(result.fileDigest).equals(createHash('sha256').update(file).digest()));
      assert.ok(narBytes.every((n, i) => n <= nar.length && (i === 0 || n >= narBytes[i - 1]!)), 'progress only grows');
    }
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('NAR job: several at once (on one thread per core) keep their bytes apart', async () => {
  const roots = await Promise.all(Array.from({ length: 5 }, (_, i) => tree({ data: randomBytes((1 << 20) + i * 4099) })));
  try {
    const results = await Promise.all(roots.map((r) => collect(pool.narJob({ path: r, level: 3, narSize: 1 << 20 }))));
    for (const [i, r] of results.entries()) {
      const nar = await narOf(roots[i]!);
      assert.ok(Buffer.from(r.result.narDigest).equals(createHash('sha256').update(nar).digest()), `job ${i}`);
      assert.ok(r.file.equals(await zstdHere(nar, 3)), `job ${i}: its own bytes`);
    }
  } finally {
    await Promise.all(roots.map((r) => rm(path.dirname(r), { recursive: true, force: true })));
  }
});

test('NAR job: the thread stays at most NAR_JOB_AHEAD bytes ahead of a slow consumer', async (t) => {
  // Incompressible: the compressed pieces are as large as the NAR.
  const root = await tree({ data: randomBytes(4 * NAR_JOB_AHEAD) });
  try {
    // A pool of its own: its peak backlog is this job's.
    const own = new ThreadPool();
    t.after(() => own.close());
    const job = own.narJob({ path: root, level: 1, narSize: 4 * NAR_JOB_AHEAD });
    let taken = 0;
    for (;;) {
      const n = await job.next();
      if (n.done === true) break;
      taken += n.value.bytes.length;
      // Pause twice, long enough for the thread to run far ahead if nothing held it.
      if (taken < 3 << 20 || (taken > 2 * NAR_JOB_AHEAD && taken < 2 * NAR_JOB_AHEAD + (2 << 20))) await new Promise((r) => setTimeout(r, 300));
    }
    const backlog = own.peakBacklog;
    assert.ok(backlog > 0);
    // What the thread may post before it hears of the consumer's progress: the limit and one piece.
    assert.ok(backlog <= NAR_JOB_AHEAD + (1 << 20), `backlog ${backlog}`);
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('NAR job: a missing file fails with the error the main thread would give', async () => {
  const root = await tree({ data: Buffer.from('x') });
  await rm(path.dirname(root), { recursive: true, force: true });
  const here = await narOf(root).then(
    () => assert.fail('dumped a missing path'),
    (e: { code: string; message: string }) => e,
  );
  await assert.rejects(collect(pool.narJob({ path: root, level: 3, narSize: 100 })), (e: { code: string; message: string }) => {
    assert.equal(e.code, here.code);
    assert.equal(e.message, here.message);
    return true;
  });
});

test('NAR job: stopping early cancels it; a dead thread fails its job; the next job runs', async () => {
  const root = await tree({ data: randomBytes(6 << 20) });
  try {
    const nar = await narOf(root);
    const cancelled = pool.narJob({ path: root, level: 1, narSize: nar.length });
    assert.equal((await cancelled.next()).done, false);
    await cancelled.return(undefined as never);
    const next = await collect(pool.narJob({ path: root, level: 1, narSize: nar.length }));
    assert.ok(Buffer.from(next.result.narDigest).equals(createHash('sha256').update(nar).digest()), 'after a cancel');

    const dying = pool.narJob({ path: root, level: 1, narSize: nar.length });
    assert.equal((await dying.next()).done, false);
    await pool.close();
    await assert.rejects(collect(dying), { code: 'HASH_FAILED' });
    const again = await collect(pool.narJob({ path: root, level: 1, narSize: nar.length }));
    assert.ok(again.file.equals(await zstdHere(nar, 1)), 'a new thread after the crash');
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('NAR job: a thread that dies with pieces still queued here fails the job at once, never a TypeError', async () => {
  // Incompressible and larger than NAR_JOB_AHEAD: the thread runs ahead by that much and waits.
  const root = await tree({ data: randomBytes(3 * NAR_JOB_AHEAD) });
  try {
    const job = pool.narJob({ path: root, level: 1, narSize: 3 * NAR_JOB_AHEAD });
    assert.equal((await job.next()).done, false);
    // Wait until at least one more piece waits here, not taken: the state the race needed.
    for (let i = 0; pool.backlog === 0; i++) {
      assert.ok(i < 3000, 'the thread never ran ahead');
      await new Promise((r) => setTimeout(r, 10));
    }
    await pool.close();
    // The queued pieces are stale: the very next call fails, with the job's error.
    await assert.rejects(job.next(), { code: 'HASH_FAILED' });
    assert.equal((await job.next()).done, true, 'and the job is over');
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('NAR job: started on a thread that is being terminated, it fails when the thread exits, or completes; it never hangs', async () => {
  const root = await tree({ data: randomBytes(2 << 20) });
  try {
    const nar = await narOf(root);
    const warm = await collect(pool.narJob({ path: root, level: 1, narSize: nar.length }));
    assert.equal(warm.result.narSize, nar.length);
    // Terminated, but its 'exit' has not arrived: what is posted to it now goes nowhere.
    const exited = pool.close();
    const outcome = await collect(pool.narJob({ path: root, level: 1, narSize: nar.length })).then(
      (r) => r,
      (e: { code?: string }) => e,
    );
    await exited;
    if ('result' in outcome) assert.ok(outcome.file.equals(warm.file), 'completed: the same bytes');
    else assert.equal(outcome.code, 'HASH_FAILED');
    const again = await collect(pool.narJob({ path: root, level: 1, narSize: nar.length }));
    assert.ok(again.file.equals(warm.file), 'a new thread afterwards');
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('NAR job: a job stopped early does not keep the process alive', async () => {
  const root = await tree({ data: randomBytes(24 << 20) });
  try {
    const mod = fileURLToPath(new URL('../../../src/cache/threads/thread-pool.js', import.meta.url));
    const script = `import(${JSON.stringify(mod)}).then(async ({ ThreadPool }) => {
      const job = new ThreadPool().narJob({ path: ${JSON.stringify(root)}, level: 1, narSize: ${24 << 20} });
      await job.next();
      await job.return();
      console.log('done');
    })`;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 30_000 });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
    assert.equal(r.stdout.toString().trim(), 'done');
  } finally {
    await rm(path.dirname(root), { recursive: true, force: true });
  }
});

test('uploadNar: whole on a crypto thread, split with this one or inline, the same object and the same record', async () => {
  const { dir, infos } = await makeStore({ a: [] }, 3 << 20);
  try {
    const a = infos.get('a')!;
    const made = [];
    for (const production of ['split', 'whole', 'inline'] as const) {
      const backend = new MemoryBackend();
      const nar = await uploadNar(backend, a, { compression: { method: 'zstd' }, threads: pool, production });
      made.push({ nar, body: backend.objects.get(nar.url)!.body });
    }
    for (const m of made.slice(1)) {
      assert.deepEqual(m.nar, made[0]!.nar);
      assert.ok(m.body.equals(made[0]!.body));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
