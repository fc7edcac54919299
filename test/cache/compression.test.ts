import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import {
  COMPRESSED_PIECE_BYTES,
  COMPRESSIONS,
  compressionLevel,
  createChunkCompressor,
  createCompressor,
  createDecompressor,
  narExtension,
  ZSTD_ASYNC_FROM,
  ZSTD_JOB_BYTES,
  parseCompression,
  type Compression,
} from '../../src/cache/compression.js';

async function collect(method: Compression, chunks: Buffer[], level?: number): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), await createCompressor({ method, level, threads: 2, xzBlockSize: 1 << 20 }), async (src) => {
    for await (const c of src) out.push(c as Buffer);
  });
  return Buffer.concat(out);
}

async function decompress(method: Compression, data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([data]), await createDecompressor(method), async (src) => {
    for await (const c of src) out.push(c as Buffer);
  });
  return Buffer.concat(out);
}

// Half incompressible, half text, in uneven chunks, across several xz blocks.
function sample(): Buffer[] {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(40_000));
  const noise = randomBytes(1_500_000);
  const all = Buffer.concat([text, noise, text.subarray(0, 12345)]);
  const chunks: Buffer[] = [];
  for (let i = 0; i < all.length; i += 65_537) chunks.push(all.subarray(i, i + 65_537));
  return chunks;
}

for (const method of COMPRESSIONS) {
  test(`${method}: round trip through our decompressor`, async () => {
    const input = sample();
    const packed = await collect(method, input);
    const whole = Buffer.concat(input);
    if (method !== 'none') assert.ok(packed.length < whole.length, 'compresses text');
    assert.deepEqual(createHash('sha256').update(await decompress(method, packed)).digest(), createHash('sha256').update(whole).digest());
  });

  test(`${method}: empty input round trips`, async () => {
    assert.equal((await decompress(method, await collect(method, []))).length, 0);
  });
}

// The reference tools read our output (Nix links the same liblzma and libzstd).
for (const [method, tool] of [['xz', 'xz'], ['zstd', 'zstd']] as const) {
  const available = spawnSync(tool, ['--version']).status === 0;
  test(`${method}: the ${tool} command line tool decompresses our output`, { skip: !available && `${tool} not installed` }, async () => {
    const input = sample();
    const packed = await collect(method, input, method === 'xz' ? 1 : 5);
    const r = spawnSync(tool, ['-d', '-c'], { input: packed, maxBuffer: 1 << 30 });
    assert.equal(r.status, 0, r.stderr.toString());
    assert.ok(r.stdout.equals(Buffer.concat(input)));
  });
}

test('zstd by direct calls: consumes each chunk before returning (lent buffers), whole pieces, and zstd reads it back', async () => {
  const zstdAvailable = spawnSync('zstd', ['--version']).status === 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 200_000, max: 3_000_000 })), { maxLength: 8 }),
      fc.boolean(),
      fc.constantFrom(1, 2),
      // A hint from ZSTD_ASYNC_FROM: zstd's own threads take the input (they must copy it before update returns).
      fc.constantFrom(8 << 20, ZSTD_ASYNC_FROM),
      async (sizes, text, threads, sizeHint) => {
        const c = (await createChunkCompressor({ method: 'zstd', threads }, sizeHint))!;
        const lent = Buffer.alloc(3_000_000);
        const input: Buffer[] = [];
        const pieces: Buffer[] = [];
        let n = 0;
        for (const size of sizes) {
          const chunk = lent.subarray(0, size);
          if (text) chunk.write('narpush '.repeat(Math.ceil(size / 8)).slice(0, size));
          else randomBytes(size).copy(chunk);
          input.push(Buffer.from(chunk));
          pieces.push(...c.update(chunk));
          chunk.fill(n++); // the compressor must not read it again
        }
        pieces.push(...c.end());
        pieces.slice(0, -1).forEach((p) => assert.equal(p.length, COMPRESSED_PIECE_BYTES));
        const packed = Buffer.concat(pieces);
        assert.ok((await decompress('zstd', packed)).equals(Buffer.concat(input)));
        if (zstdAvailable) {
          const r = spawnSync('zstd', ['-d', '-c', '--check'], { input: packed, maxBuffer: 1 << 30 });
          assert.equal(r.status, 0, r.stderr.toString());
          assert.ok(r.stdout.equals(Buffer.concat(input)));
        }
      },
    ),
    { numRuns: 25 },
  );
});

test('zstd from ZSTD_ASYNC_FROM: the same bytes whatever the threads (direct calls and stream), and other bytes than one thread makes below it', async () => {
  // 9 MiB of text and noise in 1 MiB chunks: several of zstd's 2 MiB jobs.
  const text = Buffer.from('narpush uploads the quick brown fox\n'.repeat(140_000));
  const input = Buffer.concat([text, randomBytes(2 << 20), text]);
  const chunks: Buffer[] = [];
  for (let off = 0; off < input.length; off += 1 << 20) chunks.push(input.subarray(off, off + (1 << 20)));
  const direct = async (threads: number | undefined, sizeHint: number): Promise<Buffer> => {
    const c = (await createChunkCompressor({ method: 'zstd', ...(threads !== undefined ? { threads } : {}) }, sizeHint))!;
    const out: Buffer[] = [];
    for (const chunk of chunks) out.push(...c.update(chunk).map((p) => Buffer.from(p)));
    out.push(...c.end().map((p) => Buffer.from(p)));
    return Buffer.concat(out);
  };
  const streamed = async (threads: number, sizeHint: number): Promise<Buffer> => {
    const out: Buffer[] = [];
    await pipeline(Readable.from(chunks), await createCompressor({ method: 'zstd', threads }, sizeHint), async (src) => {
      for await (const c of src) out.push(c as Buffer);
    });
    return Buffer.concat(out);
  };
  const reference = await direct(undefined, ZSTD_ASYNC_FROM);
  assert.ok((await decompress('zstd', reference)).equals(input));
  for (const threads of [1, 2, 4]) {
    assert.ok((await direct(threads, ZSTD_ASYNC_FROM)).equals(reference), `direct calls, ${threads} thread(s)`);
    assert.ok((await streamed(threads, ZSTD_ASYNC_FROM)).equals(reference), `stream, ${threads} thread(s)`);
  }
  const below = await direct(undefined, ZSTD_ASYNC_FROM - 1);
  assert.ok(!below.equals(reference), 'one thread below the line');
  for (const threads of [2, 4]) {
    assert.ok((await direct(threads, ZSTD_ASYNC_FROM - 1)).equals(below), `below the line, ${threads} threads make one thread's bytes`);
    assert.ok((await streamed(threads, ZSTD_ASYNC_FROM - 1)).equals(below), `below the line, the stream with ${threads} threads too`);
  }
});

test('direct calls are for zstd only: xz and none use streams', async () => {
  assert.equal(await createChunkCompressor({ method: 'xz' }), undefined);
  assert.equal(await createChunkCompressor({ method: 'none' }), undefined);
});

test('extensions are the ones Nix uses', () => {
  assert.equal(narExtension('xz'), '.nar.xz');
  assert.equal(narExtension('zstd'), '.nar.zst');
  assert.equal(narExtension('none'), '.nar');
});

test('bad compression names and levels are refused', () => {
  assert.throws(() => parseCompression('gzip'), { code: 'BAD_COMPRESSION', message: /unknown compression 'gzip'/ });
  assert.throws(() => compressionLevel('xz', 10), { code: 'BAD_COMPRESSION', message: /out of range for xz \(0-9\)/ });
  assert.throws(() => compressionLevel('zstd', 23), { code: 'BAD_COMPRESSION', message: /1-22/ });
  assert.equal(compressionLevel('zstd', 22), 22);
  assert.throws(() => compressionLevel('zstd', 0), { code: 'BAD_COMPRESSION' });
  assert.throws(() => compressionLevel('zstd', 2.5), { code: 'BAD_COMPRESSION' });
  assert.throws(() => compressionLevel('none', 3), { code: 'BAD_COMPRESSION' });
  assert.equal(compressionLevel('xz', undefined), 6);
  assert.equal(compressionLevel('zstd', undefined), 3);
});

test('xz block size: from the NAR size alone; one block under 16 MiB, else an even number of equal blocks of 8-32 MiB', async () => {
  const { xzBlockSize } = await import('../../src/cache/compression.js');
  const MiB = 1 << 20;
  assert.equal(xzBlockSize(100), MiB);
  assert.equal(xzBlockSize(13 * MiB + 5), 14 * MiB, 'one block');
  assert.equal(xzBlockSize(54 * MiB), 27 * MiB, 'two blocks');
  assert.equal(xzBlockSize(100 * MiB), 25 * MiB, 'four blocks');
  for (const size of [16 * MiB, 33 * MiB, 65 * MiB + 1, 1 << 30, 10 * (1 << 30)]) {
    const block = xzBlockSize(size);
    const blocks = Math.ceil(size / block);
    assert.ok(block >= 8 * MiB && block <= 32 * MiB && block % MiB === 0, `${size}: ${block}`);
    assert.ok(blocks % 2 === 0 || Math.ceil(size / MiB) % 2 === 1, `${size}: ${blocks} blocks`);
  }
});

for (const method of ['xz', 'zstd'] as const) {
  test(`${method}: small NARs (single-threaded) and large ones (multi-threaded) both round trip`, async () => {
    // zstd takes its own threads from ZSTD_ASYNC_FROM.
    for (const sizeHint of [100, 4 << 20, ZSTD_ASYNC_FROM]) {
      const input = [Buffer.from('abc'.repeat(1000)), randomBytes(50_000)];
      const out: Buffer[] = [];
      await pipeline(Readable.from(input), await createCompressor({ method }, sizeHint), async (src) => {
        for await (const c of src) out.push(c as Buffer);
      });
      assert.ok((await decompress(method, Buffer.concat(out))).equals(Buffer.concat(input)));
    }
  });
}

test('zstd by direct calls: giving pieces back, at any lag, changes nothing in the output and never hands out memory still held', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 1_500_000 }), { minLength: 1, maxLength: 8 }),
      // After each update: how many of the oldest pieces still held to give back (the consumer's lag).
      fc.array(fc.nat({ max: 4 }), { minLength: 8, maxLength: 8 }),
      fc.integer({ min: 1, max: 1 << 30 }),
      async (sizes, lags, seed) => {
        const input = sizes.map((size, i) => {
          const b = randomBytes(size);
          // Half random, half text: pieces of both kinds.
          if ((seed >> i) & 1) b.write('narpush '.repeat(Math.ceil(size / 8)).slice(0, size));
          return b;
        });
        const plain = (await createChunkCompressor({ method: 'zstd' }, 8 << 20))!;
        const expected = Buffer.concat([...input.flatMap((b) => plain.update(b)), ...plain.end()]);

        const c = (await createChunkCompressor({ method: 'zstd' }, 8 << 20))!;
        const copies: Buffer[] = [];
        const held: Buffer[] = [];
        const live = new Set<ArrayBufferLike>();
        const take = (pieces: Buffer[]): void => {
          for (const p of pieces) {
            // No piece handed out may share memory with one still held.
            assert.ok(!live.has(p.buffer) || p.length < COMPRESSED_PIECE_BYTES, 'a piece reuses memory still held');
            copies.push(Buffer.from(p));
            held.push(p);
            live.add(p.buffer);
          }
        };
        input.forEach((b, i) => {
          const pieces = c.update(b);
          take(pieces);
          while (held.length > lags[i]!) {
            const p = held.shift()!;
            live.delete(p.buffer);
            c.recycle(p);
            c.recycle(p); // twice: ignored
          }
          c.recycle(Buffer.alloc(COMPRESSED_PIECE_BYTES)); // not one of its pieces: ignored
        });
        take(c.end());
        assert.ok(Buffer.concat(copies).equals(expected), 'the same output as without giving pieces back');
      },
    ),
    { numRuns: 25 },
  );
});

test('zstd by direct calls: with every piece given back, a NAR of many pieces goes round a few buffers', async () => {
  const c = (await createChunkCompressor({ method: 'zstd' }, 16 << 20))!;
  const buffers = new Set<ArrayBufferLike>();
  let pieces = 0;
  for (let i = 0; i < 12; i++) {
    for (const p of c.update(randomBytes(1 << 20))) {
      buffers.add(p.buffer);
      pieces++;
      c.recycle(p);
    }
  }
  for (const p of c.end()) buffers.add(p.buffer);
  assert.ok(pieces >= 10, `pieces: ${pieces}`);
  assert.ok(buffers.size <= 3, `${buffers.size} buffers for ${pieces} pieces`);

  // A piece given back twice is filled once: two pieces never share memory.
  const d = (await createChunkCompressor({ method: 'zstd' }, 16 << 20))!;
  const first = d.update(randomBytes(1 << 20))[0] ?? d.update(randomBytes(1 << 20))[0]!;
  d.recycle(first);
  d.recycle(first);
  const next: Buffer[] = [];
  while (next.length < 3) next.push(...d.update(randomBytes(1 << 20)));
  assert.equal(new Set(next.map((p) => p.buffer)).size, next.length, 'every piece its own memory');
});

test('zstd by direct calls: pieces given back by one NAR\'s compressor are filled by the next one\'s, never while held', async () => {
  const a = (await createChunkCompressor({ method: 'zstd' }, 16 << 20))!;
  const given = new Set<ArrayBufferLike>();
  for (let i = 0; i < 4; i++) {
    for (const p of a.update(randomBytes(1 << 20))) {
      given.add(p.buffer);
      a.recycle(p);
    }
  }
  const held = a.end();
  const heldCopies = held.map((p) => Buffer.from(p));
  const b = (await createChunkCompressor({ method: 'zstd' }, 16 << 20))!;
  const bPieces: Buffer[] = [];
  while (bPieces.length < 3) bPieces.push(...b.update(randomBytes(1 << 20)));
  assert.ok(bPieces.some((p) => given.has(p.buffer)), 'a piece given back went round to the next compressor');
  assert.ok(bPieces.every((p) => held.every((h) => h.buffer !== p.buffer)), 'pieces not given back are never filled again');
  held.forEach((h, i) => assert.ok(h.equals(heldCopies[i]!), 'a held piece is unchanged'));
  b.end();
});

test('zstd by direct calls: compressors one after another, some abandoned mid-frame, each give the bytes a fresh context gives', async () => {
  const { zstdBinding } = await import('../../src/cache/addons.js');
  const zstd = zstdBinding();
  // The reference: a context of its own, fed the same chunks; for a NAR from ZSTD_ASYNC_FROM, zstd's multithreaded format.
  const fresh = (level: number, chunks: Buffer[], large: boolean): Buffer => {
    const cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.compressionLevel, level);
    cctx.setParameter(zstd.CParameter.checksumFlag, 1);
    if (large) {
      cctx.setParameter(zstd.CParameter.nbWorkers, 1);
      cctx.setParameter(zstd.CParameter.jobSize, ZSTD_JOB_BYTES);
    }
    const out: Buffer[] = [];
    const buf = Buffer.alloc(1 << 20);
    const feed = (input: Buffer, op: number): void => {
      for (;;) {
        const [left, produced, consumed] = cctx.compressStream2(buf, input, op);
        out.push(Buffer.from(buf.subarray(0, produced)));
        input = input.subarray(consumed);
        if (input.length === 0 && (op === zstd.EndDirective.continue || left === 0)) return;
      }
    };
    for (const c of chunks) feed(c, zstd.EndDirective.continue);
    feed(Buffer.alloc(0), zstd.EndDirective.end);
    return Buffer.concat(out);
  };
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          level: fc.constantFrom(1, 3, 6, 7),
          sizes: fc.array(fc.integer({ min: 0, max: 300_000 }), { maxLength: 5 }),
          seed: fc.integer({ min: 0, max: 255 }),
          // Abandoned after this many chunks (an error or a cancel), or ended.
          abandonAfter: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }),
          // The NAR's size (the hint): one thread's contexts are kept for the next NAR; zstd's multithreaded ones are not.
          large: fc.boolean(),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      async (jobs) => {
        for (const job of jobs) {
          const chunks = job.sizes.map((n, i) => {
            const b = Buffer.alloc(n);
            for (let k = 0; k < n; k++) b[k] = (k * 7 + i + job.seed) % 251 < 200 ? 97 + ((k + job.seed) % 5) : (k * 131 + job.seed) & 0xff;
            return b;
          });
          const c = (await createChunkCompressor({ method: 'zstd', level: job.level }, job.large ? ZSTD_ASYNC_FROM : ZSTD_ASYNC_FROM - 1))!;
          const pieces: Buffer[] = [];
          let fed = 0;
          for (const chunk of chunks) {
            if (job.abandonAfter !== undefined && fed === job.abandonAfter) break;
            pieces.push(...c.update(chunk).map((p) => Buffer.from(p)));
            fed++;
          }
          if (job.abandonAfter !== undefined && job.abandonAfter <= chunks.length) continue;
          pieces.push(...c.end().map((p) => Buffer.from(p)));
          assert.ok(Buffer.concat(pieces).equals(fresh(job.level, chunks, job.large)), `level ${job.level}, ${chunks.length} chunks, large ${job.large}`);
          assert.throws(() => c.update(Buffer.from('more')), /has ended/);
        }
      },
    ),
    { numRuns: 40 },
  );
});
