// Every way plan.ts may choose to produce a NAR (in memory, split with the
// crypto thread, inline, whole on a worker; split and inline also lending
// their buffers to a backend that copies) must give the same object, the same
// record and so the same narinfo, for any tree and every compression. One
// known exception, kept as it was: zstd in memory is one-shot, and a
// one-shot zstd frame records the content size in its header where a
// streamed one cannot; its object decodes to the same NAR and only its
// FileHash and FileSize differ.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { COMPRESSED_PIECE_BYTES, type Compression, ZSTD_ASYNC_FROM, createChunkCompressor, createDecompressor } from '../../src/cache/compression.js';
import { FileBackend } from '../../src/cache/file-backend.js';
import type { PutStreamOptions } from '../../src/cache/backend.js';
import { canProduceWhole } from '../../src/cache/nar-producers.js';
import { type UploadedNar, uploadNar, uploadSmallNars } from '../../src/cache/nar-upload.js';
import { SIGN_HERE_MAX, UploadPlanner, WHOLE_MIN_BYTES } from '../../src/cache/plan.js';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { makeNarInfo, narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import { formatNarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import { newSecretKey, toPublicKey } from '../../src/signing/keys.js';
import { verifyNarInfo } from '../../src/signing/sign.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { StorePath } from '../../src/store/store-path.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { treeArb, writeTree } from '../nar/tree.js';
import { makeStore, narOf } from './upload-fake-store.js';

async function decompress(method: Compression, file: Buffer): Promise<Buffer> {
  const d = await createDecompressor(method);
  const out: Buffer[] = [];
  d.on('data', (c: Buffer) => out.push(c));
  const done = new Promise<void>((resolve, reject) => {
    d.on('end', resolve);
    d.on('error', reject);
  });
  d.end(file);
  await done;
  return Buffer.concat(out);
}

const threads = new ThreadPool();
after(() => threads.close());
const key = newSecretKey('producers-1');

async function pathOf(dir: string, name: string): Promise<PathInfo> {
  const sp = new StorePath(nix32Encode(createHash('sha1').update(`${dir}/${name}`).digest()), name, dir);
  const nar = await narOf(sp.path);
  return {
    path: sp,
    deriver: undefined,
    narHash: { algo: 'sha256', digest: createHash('sha256').update(nar).digest() },
    references: [],
    registrationTime: 0,
    narSize: nar.length,
    ultimate: true,
    sigs: [],
    ca: undefined,
  };
}

interface Made {
  readonly how: string;
  readonly nar: UploadedNar;
  readonly body: Buffer;
  readonly narInfo: string;
}

async function produceEveryWay(info: PathInfo, method: Compression): Promise<Made[]> {
  const compression = { method };
  const made: Made[] = [];
  const record = async (how: string, backend: MemoryBackend, nar: UploadedNar): Promise<void> => {
    const narInfo = formatNarInfo(await makeNarInfo(info, nar, [key], (fp, k) => threads.sign(fp, k)));
    made.push({ how, nar, body: backend.objects.get(nar.url)!.body, narInfo });
  };
  {
    const backend = new MemoryBackend();
    const [r] = await uploadSmallNars(backend, [info], { compression });
    if (r!.status === 'rejected') throw r!.reason;
    await record('memory', backend, r!.value);
  }
  for (const production of canProduceWhole(compression) ? (['split', 'inline', 'whole'] as const) : (['split', 'inline'] as const)) {
    const backend = new MemoryBackend();
    await record(production, backend, await uploadNar(backend, info, { compression, threads, production }));
  }
  // A backend that copies each piece before asking for the next is lent the NAR reader's buffers (uncompressed).
  for (const production of ['split', 'inline'] as const) {
    const backend = new CopyingMemoryBackend();
    await record(`${production}, lent`, backend, await uploadNar(backend, info, { compression, threads, production }));
  }
  return made;
}

/** MemoryBackend copies every chunk (Buffer.from) before it asks for the next: it may say so. */
class CopyingMemoryBackend extends MemoryBackend {
  readonly putStreamCopies = true;
}

/** Says it copies, but keeps the chunks it is lent (what a wrong putStreamCopies would do). */
class KeepingMemoryBackend extends MemoryBackend {
  readonly putStreamCopies = true;
  body = Buffer.alloc(0);
  override async putStream(_key: string, body: AsyncIterable<Uint8Array>): Promise<{ bytes: number }> {
    const kept: Uint8Array[] = [];
    for await (const c of body) kept.push(c);
    this.body = Buffer.concat(kept);
    return { bytes: this.body.length };
  }
}

test('producers: in memory, split, inline and whole give the same object, record and narinfo (property)', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'narpush-producers-'));
  let n = 0;
  try {
    await fc.assert(
      fc.asyncProperty(treeArb(3), fc.constantFrom<Compression>('none', 'zstd', 'xz'), async (tree, method) => {
        const dir = path.join(root, `s${n++}`);
        await mkdir(dir);
        const name = 'p';
        writeTree(Buffer.from(path.join(dir, `${nix32Encode(createHash('sha1').update(`${dir}/${name}`).digest())}-${name}`)), tree);
        const info = await pathOf(dir, name);
        const made = await produceEveryWay(info, method);
        assert.ok(made.length >= 2);
        const nar = await narOf(info.path.path);
        for (const m of made) {
          assert.equal(m.nar.narSize, info.narSize);
          assert.ok(m.nar.fileHash.digest.equals(createHash('sha256').update(m.body).digest()), `${m.how}: FileHash is the object's`);
          assert.equal(m.nar.fileSize, m.body.length);
          assert.ok((await decompress(method, m.body)).equals(nar), `${m.how}: the object decodes to the NAR`);
        }
        const same = method === 'zstd' ? made.filter((m) => m.how !== 'memory') : made;
        const [first, ...rest] = same;
        assert.ok(rest.length >= 1);
        for (const m of rest) {
          assert.deepEqual(m.nar, first!.nar, `${m.how} and ${first!.how}: the record`);
          assert.ok(m.body.equals(first!.body), `${m.how} and ${first!.how}: the object's bytes`);
          assert.equal(m.narInfo, first!.narInfo, `${m.how} and ${first!.how}: the narinfo`);
        }
        if (method === 'zstd') {
          const memory = made.find((m) => m.how === 'memory')!;
          const { fileHash: _h, fileSize: _s, ...restOfMemory } = memory.nar;
          const { fileHash: _h2, fileSize: _s2, ...restOfFirst } = first!.nar;
          assert.deepEqual(restOfMemory, restOfFirst, 'zstd in memory: the same record but for the file');
        }
      }),
      { numRuns: 40 },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

/**
 * A store path under `root` whose NAR spans many read chunks and pieces: one
 * random file of `bigBytes` and eight more with `small(i)` as contents
 * (the property test's trees fit in one chunk, where lending and giving
 * back change nothing).
 */
async function manyChunkPath(root: string, bigBytes: number, small: (i: number) => Uint8Array | string): Promise<{ info: PathInfo; nar: Buffer }> {
  const name = 'p';
  const dir = path.join(root, `${nix32Encode(createHash('sha1').update(`${root}/${name}`).digest())}-${name}`);
  await mkdir(dir);
  await writeFile(path.join(dir, 'big.bin'), randomBytes(bigBytes));
  for (let i = 0; i < 8; i++) await writeFile(path.join(dir, `f${i}`), small(i));
  const info = await pathOf(root, name);
  return { info, nar: await narOf(info.path.path) };
}

test('lent pieces: a NAR of many chunks reaches a copying backend intact, and the buffers really are lent', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'narpush-lent-'));
  try {
    const { info, nar } = await manyChunkPath(root, 5 * 1024 * 1024 + 17, (i) => randomBytes(100_000 + i));
    for (const production of ['split', 'inline'] as const) {
      const copying = new CopyingMemoryBackend();
      const made = await uploadNar(copying, info, { compression: { method: 'none' }, threads, production });
      assert.ok(copying.objects.get(made.url)!.body.equals(nar), `${production}: the object is the NAR`);
      // A backend that claims to copy but keeps the chunks it was lent ends up with overwritten bytes:
      // proof that the reader's buffers were lent, not fresh copies.
      const keeping = new KeepingMemoryBackend();
      const kept = await uploadNar(keeping, info, { compression: { method: 'none' }, threads, production });
      assert.equal(kept.narHash.digest.equals(info.narHash.digest), true, `${production}: hashed before reuse`);
      assert.equal(keeping.body.length, nar.length);
      assert.ok(!keeping.body.equals(nar), `${production}: the pieces were the reader's reused buffers`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

/** Hands every chunk back (chunkDone) as soon as it has it, yet keeps it: what a backend calling chunkDone too early would do. */
class EarlyReturningMemoryBackend extends MemoryBackend {
  body = Buffer.alloc(0);
  handedBack = 0;
  override async putStream(_key: string, body: AsyncIterable<Uint8Array>, _type: string, opts: PutStreamOptions = {}): Promise<{ bytes: number }> {
    const kept: Uint8Array[] = [];
    for await (const c of body) {
      kept.push(c);
      opts.chunkDone?.(c);
      this.handedBack++;
    }
    this.body = Buffer.concat(kept);
    return { bytes: this.body.length };
  }
}

test('recycled pieces: a NAR of many pieces (zstd, none) is intact through the file backend and a copying one, and the pieces really go round', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'narpush-recycled-'));
  try {
    // Random, so that the .zst is as large as the NAR: several pieces (and six whole read chunks).
    const { info, nar } = await manyChunkPath(root, 12 * 1024 * 1024 + 17, (i) => 'narpush '.repeat(20_000 + i));
    for (const [method, production] of [['zstd', 'split'], ['zstd', 'inline'], ['none', 'split'], ['none', 'inline']] as const) {
      const compression = { method };
      // The reference: a backend that copies each piece and gives none back.
      const plain = new MemoryBackend();
      const made = await uploadNar(plain, info, { compression, threads, production });
      const expected = plain.objects.get(made.url)!.body;
      assert.ok(expected.length > 4 * COMPRESSED_PIECE_BYTES, 'several pieces');
      assert.ok((await decompress(method, expected)).equals(nar));
      // The file backend gives each piece back once written: the same bytes.
      const cacheDir = path.join(root, `cache-${production}`);
      const file = new FileBackend(cacheDir);
      const viaFile = await uploadNar(file, info, { compression, threads, production });
      assert.deepEqual(viaFile, made, `${method} ${production}: the same record through the file backend`);
      assert.ok((await readFile(path.join(cacheDir, made.url))).equals(expected), `${method} ${production}: the same .zst on disk`);
      // A backend that copies each piece before asking for the next is lent them: the same bytes.
      const copying = new CopyingMemoryBackend();
      await uploadNar(copying, info, { compression, threads, production });
      assert.ok(copying.objects.get(made.url)!.body.equals(expected), `${method} ${production}: intact when lent`);
      // Proof that pieces are filled again: a backend keeping what it gave back (or was lent) ends up with other bytes.
      const early = new EarlyReturningMemoryBackend();
      const e = await uploadNar(early, info, { compression, threads, production });
      assert.deepEqual(e, made, `${method} ${production}: the record is made before any reuse`);
      assert.ok(early.handedBack > 4);
      assert.ok(!early.body.equals(expected), `${method} ${production}: pieces given back were filled again`);
      const keeping = new KeepingMemoryBackend();
      await uploadNar(keeping, info, { compression, threads, production });
      assert.ok(!keeping.body.equals(expected), `${method} ${production}: lent pieces were filled again`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a zstd NAR from ZSTD_ASYNC_FROM (zstd\'s own thread): split, inline and whole give the same object and record, not the one-thread bytes', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'narpush-zstd-async-'));
  try {
    const mib = 1024 * 1024;
    const { info, nar } = await manyChunkPath(root, ZSTD_ASYNC_FROM - 8 * mib, (i) => 'narpush '.repeat(140_000 + i));
    assert.ok(nar.length >= ZSTD_ASYNC_FROM);
    const made: { how: string; nar: UploadedNar; body: Buffer }[] = [];
    for (const production of ['split', 'inline', 'whole'] as const) {
      const backend = new MemoryBackend();
      const r = await uploadNar(backend, info, { compression: { method: 'zstd' }, threads, production });
      made.push({ how: production, nar: r, body: backend.objects.get(r.url)!.body });
    }
    const [first, ...rest] = made;
    assert.ok((await decompress('zstd', first!.body)).equals(nar));
    for (const m of rest) {
      assert.deepEqual(m.nar, first!.nar, `${m.how} and split: the record`);
      assert.ok(m.body.equals(first!.body), `${m.how} and split: the bytes`);
    }
    // What one thread makes of the same NAR (a size hint under the line): other bytes, so the line is what decides.
    const one = (await createChunkCompressor({ method: 'zstd' }, ZSTD_ASYNC_FROM - 1))!;
    const pieces: Buffer[] = [];
    for (let off = 0; off < nar.length; off += mib) pieces.push(...one.update(nar.subarray(off, off + mib)).map((p) => Buffer.from(p)));
    pieces.push(...one.end().map((p) => Buffer.from(p)));
    assert.ok(!Buffer.concat(pieces).equals(first!.body), 'zstd\'s multithreaded format, not the one-thread one');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('planner: small NARs in memory, one large split, several large whole (zstd, one encoder thread only)', () => {
  const plan = (compression: { method: Compression; threads?: number }, sizes: number[], signing = false) => {
    const p = new UploadPlanner({ compression, jobs: 4, cores: 2, signingKeys: signing ? 1 : 0, smallNarBytes: 100, hashHere: false, wholeMinBytes: 0 });
    for (const s of sizes) p.add(s);
    return { ways: sizes.map((s) => p.production(s)), threads: p.threads() };
  };
  assert.deepEqual(plan({ method: 'zstd' }, [10, 100]), { ways: ['memory', 'memory'], threads: 0 });
  assert.equal(plan({ method: 'zstd' }, [10], true).threads, 0, 'one signature is made here: no thread');
  assert.equal(plan({ method: 'zstd' }, Array.from({ length: SIGN_HERE_MAX + 1 }, () => 10), true).threads, 1, 'many signatures: the crypto thread');
  assert.deepEqual(plan({ method: 'zstd' }, [10, 101]).ways, ['memory', 'split']);
  assert.equal(plan({ method: 'zstd' }, [10, 101]).threads, 1);
  assert.deepEqual(plan({ method: 'zstd' }, [101, 10, 102]).ways, ['whole', 'memory', 'whole']);
  assert.equal(plan({ method: 'zstd' }, [101, 102]).threads, 2, 'one per core, at most jobs');
  assert.deepEqual(plan({ method: 'xz' }, [101, 102]).ways, ['split', 'split']);
  assert.deepEqual(plan({ method: 'zstd', threads: 2 }, [101, 102]).ways, ['split', 'split']);
  assert.equal(plan({ method: 'xz' }, [101, 102]).threads, 1);
});

test('planner: a large xz NAR gets the cores the other large NARs leave idle, unless threads were set', () => {
  const threadsOf = (sizes: number[], cores: number, jobs = 4, threads?: number) => {
    const p = new UploadPlanner({ compression: { method: 'xz', ...(threads !== undefined ? { threads } : {}) }, jobs, cores, signingKeys: 0, smallNarBytes: 100 });
    for (const s of sizes) p.add(s);
    return sizes.map((s) => p.compression(s).threads);
  };
  assert.deepEqual(threadsOf([101], 2), [2]);
  assert.deepEqual(threadsOf([101, 10], 4), [4, undefined], 'a small NAR is one call');
  assert.deepEqual(threadsOf([101, 102], 4), [2, 2]);
  assert.deepEqual(threadsOf([101, 102], 2), [undefined, undefined], 'no idle core');
  assert.deepEqual(threadsOf([101, 102, 103], 4, 1), [4, 4, 4], 'one at a time: every core');
  assert.deepEqual(threadsOf([101], 4, 4, 1), [1], 'parallel-compression=false');
  const zstd = new UploadPlanner({ compression: { method: 'zstd' }, jobs: 4, cores: 4, signingKeys: 0, smallNarBytes: 100 });
  zstd.add(101);
  assert.equal(zstd.compression(101).threads, undefined, 'zstd: unchanged');
});

test('planner: where SHA-256 is fast, one large NAR is hashed here and starts no thread (but several zstd NARs still go whole)', () => {
  const plan = (compression: { method: Compression }, sizes: number[], signingKeys = 0) => {
    const p = new UploadPlanner({ compression, jobs: 4, cores: 2, signingKeys, smallNarBytes: 100, hashHere: true, wholeMinBytes: 0 });
    for (const s of sizes) p.add(s);
    return { ways: sizes.map((s) => p.production(s)), threads: p.threads(), signOnThread: p.signOnThread() };
  };
  assert.deepEqual(plan({ method: 'zstd' }, [10, 101], 1), { ways: ['memory', 'inline'], threads: 0, signOnThread: false });
  assert.deepEqual(plan({ method: 'none' }, [101]), { ways: ['inline'], threads: 0, signOnThread: false });
  assert.deepEqual(plan({ method: 'xz' }, [101, 102]).ways, ['inline', 'inline']);
  assert.deepEqual(plan({ method: 'zstd' }, [101, 102]), { ways: ['whole', 'whole'], threads: 2, signOnThread: true });
});

test('planner: large NARs go whole to worker threads only once they add up to WHOLE_MIN_BYTES (or threads run already); below, they are produced here', () => {
  const plan = (sizes: number[], hashHere: boolean, wholeMinBytes?: number, threadsRunning?: number) => {
    const p = new UploadPlanner({
      compression: { method: 'zstd' },
      jobs: 4,
      cores: 2,
      signingKeys: 1,
      smallNarBytes: 100,
      hashHere,
      ...(wholeMinBytes !== undefined ? { wholeMinBytes } : {}),
      ...(threadsRunning !== undefined ? { threadsRunning } : {}),
    });
    const seen = sizes.map((s) => {
      p.add(s);
      return p.threads();
    });
    return { ways: sizes.map((s) => p.production(s)), threads: seen, signOnThread: p.signOnThread() };
  };
  assert.deepEqual(plan([101, 102], true, 1000), { ways: ['inline', 'inline'], threads: [0, 0], signOnThread: false });
  assert.deepEqual(plan([101, 102], false, 1000), { ways: ['split', 'split'], threads: [1, 1], signOnThread: true }, 'hashed on the crypto thread where SHA-256 is slow');
  assert.deepEqual(plan([101, 500, 10, 500], true, 1000), { ways: ['whole', 'whole', 'memory', 'whole'], threads: [0, 0, 0, 2], signOnThread: true }, 'threads start once the sum is reached');
  assert.deepEqual(plan([600, 500], true, 1000).ways, ['whole', 'whole'], 'exactly at the threshold');
  assert.deepEqual(plan([101, 102], true, 1000, 1), { ways: ['whole', 'whole'], threads: [0, 2], signOnThread: true }, 'threads running already (a daemon\'s): no start-up to pay');
  assert.deepEqual(plan([101, 102], true, 1000, 0).ways, ['inline', 'inline']);
  const daemon = new UploadPlanner({ compression: { method: 'zstd' }, jobs: 4, cores: 4, signingKeys: 0, smallNarBytes: 100, hashHere: true, wholeMinBytes: 0, wholeFromNars: 1 });
  daemon.add(101);
  assert.deepEqual([daemon.production(101), daemon.threads()], ['whole', 1], 'the daemon: one large NAR alone goes whole, to one thread');
  daemon.add(102);
  assert.equal(daemon.threads(), 2, 'a thread a large NAR, up to the cores and jobs');
  const mib = 1024 * 1024;
  assert.deepEqual(plan([4 * mib, 4 * mib, 4 * mib], true).ways, ['inline', 'inline', 'inline'], 'the default: a typical output of a few MiB stays here');
  assert.equal(WHOLE_MIN_BYTES, 32 * mib);
  assert.deepEqual(plan([13 * mib, 13 * mib, 13 * mib], true).ways, ['whole', 'whole', 'whole']);
});

test('planner: a zstd NAR from ZSTD_ASYNC_FROM is produced here (zstd compresses it on its own thread) whatever else is uploaded; the daemon still sends it whole', () => {
  const mib = 1024 * 1024;
  const Z = ZSTD_ASYNC_FROM;
  const plan = (sizes: number[], opts: { hashHere?: boolean; method?: Compression; wholeFromNars?: number } = {}) => {
    const p = new UploadPlanner({
      compression: { method: opts.method ?? 'zstd' },
      jobs: 4,
      cores: 2,
      signingKeys: 1,
      hashHere: opts.hashHere ?? true,
      ...(opts.wholeFromNars !== undefined ? { wholeFromNars: opts.wholeFromNars, wholeMinBytes: 0 } : {}),
    });
    const seen = sizes.map((s) => {
      p.add(s);
      return p.threads();
    });
    return { ways: sizes.map((s) => p.production(s)), threads: seen };
  };
  assert.equal(Z, 32 * mib);
  assert.deepEqual(plan([Z, 3 * Z]), { ways: ['inline', 'inline'], threads: [0, 0] }, 'two of them: no worker thread');
  assert.deepEqual(plan([Z, 13 * mib, 13 * mib, 13 * mib]), { ways: ['inline', 'whole', 'whole', 'whole'], threads: [0, 0, 0, 2] }, 'the others go whole once they add up, as before');
  assert.deepEqual(plan([Z, 13 * mib]).ways, ['inline', 'inline'], 'and alone one is produced here');
  assert.deepEqual(plan([Z - 1, Z - 1]).ways, ['whole', 'whole'], 'below it, as before');
  assert.deepEqual(plan([Z], { hashHere: false }), { ways: ['split'], threads: [1] }, 'hashed on the crypto thread where SHA-256 is slow');
  assert.deepEqual(plan([Z, 2 * Z], { method: 'xz' }).ways, ['inline', 'inline'], 'xz: unchanged');
  assert.deepEqual(plan([Z, Z], { wholeFromNars: 1 }), { ways: ['whole', 'whole'], threads: [1, 2] }, 'the daemon keeps its thread free: whole');
});

test('threads only when they pay: a small signed path is signed here and starts no thread; a large NAR starts the crypto thread', async (t) => {
  const own = new ThreadPool();
  t.after(() => own.close());
  const { dir, infos } = await makeStore({ tiny: [], big: [] }, 1000);
  t.after(() => rm(dir, { recursive: true, force: true }));
  const backend = new MemoryBackend();
  const opts = { backend, compression: { method: 'zstd' as const }, signingKeys: [key], threads: own, jobs: 2, hashHere: false };
  const tiny = await uploadPaths([infos.get('tiny')!], opts);
  assert.equal(tiny.uploaded.length, 1);
  assert.equal(own.running, 0, 'no thread for one signature');
  const ni = parseNarInfo(backend.objects.get(narInfoKey(infos.get('tiny')!.path))!.body.toString(), dir);
  assert.equal(verifyNarInfo(ni, [toPublicKey(key)]), 1, 'signed all the same');
  // Streamed (smallNarBytes 0): the NAR hash needs the crypto thread, which then signs too.
  const big = await uploadPaths([infos.get('big')!], { ...opts, smallNarBytes: 0 });
  assert.equal(big.uploaded.length, 1);
  assert.equal(own.running, 1);
});

test('threads only when they pay: two large NARs under WHOLE_MIN_BYTES stay on this thread, unless threads run already', async (t) => {
  const { dir, infos } = await makeStore({ a: [], b: [] }, 1000);
  t.after(() => rm(dir, { recursive: true, force: true }));
  const upload = async (own: ThreadPool): Promise<void> => {
    const r = await uploadPaths([...infos.values()], { backend: new MemoryBackend(), compression: { method: 'zstd' }, signingKeys: [key], threads: own, jobs: 2, smallNarBytes: 100, hashHere: true });
    assert.equal(r.uploaded.length, 2);
  };
  const cold = new ThreadPool({ maxThreads: 2 });
  t.after(() => cold.close());
  await upload(cold);
  assert.equal(cold.running, 0, 'produced here, signed here: no thread started');
  const warm = new ThreadPool({ maxThreads: 2 });
  t.after(() => warm.close());
  warm.prewarm(1);
  await upload(warm);
  assert.equal(warm.running, 2, 'whole, one thread per core');
});
