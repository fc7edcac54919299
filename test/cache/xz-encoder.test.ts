// narpush's xz encoder (src/cache/xz-encoder.ts, xz-format.ts): the output is
// judged by the xz command line tool (XZ Utils, the same liblzma Nix links)
// and by lzma-native's decoder; block layout is read back with `xz -lvv`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as nodePath from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { createDecompressor } from '../../src/cache/compression.js';
import { Slots } from '../../src/cache/limit.js';
import { XzEncoder, type XzEncoderOptions, xzCompressBuffer } from '../../src/cache/xz-encoder.js';
import { lzma2DictProperty, multibyte } from '../../src/cache/xz-format.js';

const haveXz = spawnSync('xz', ['--version']).status === 0;
const noXz = !haveXz && 'xz (XZ Utils) not installed';

async function encode(chunks: readonly Buffer[], opts: Partial<XzEncoderOptions> = {}): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), new XzEncoder({ preset: 1, ...opts }), async (src) => {
    for await (const c of src) out.push(c as Buffer);
  });
  return Buffer.concat(out);
}

async function decodeInProcess(data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([data]), await createDecompressor('xz'), async (src) => {
    for await (const c of src) out.push(c as Buffer);
  });
  return Buffer.concat(out);
}

function xz(args: string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync('xz', args, { input, maxBuffer: 1 << 30 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** `xz -lvv --robot`: one entry per block, with its sizes and filter chain. */
function blocks(file: Buffer): { uncompressed: number; compressed: number; filters: string }[] {
  const path = nodePath.join(tmpdir(), `narpush-xz-test-${process.pid}-${Math.random().toString(36).slice(2)}.xz`);
  writeFileSync(path, file);
  const r = spawnSync('xz', ['--robot', '-lvv', path]);
  rmSync(path, { force: true });
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout
    .toString()
    .split('\n')
    .filter((l) => l.startsWith('block\t'))
    .map((l) => {
      const f = l.split('\t');
      // block, stream, block in stream, block in file, compressed offset, uncompressed offset, total size,
      // uncompressed size, ratio, check, check value, header size, flags, compressed size, memory, filters
      return { uncompressed: Number(f[7]), compressed: Number(f[13]), filters: f[15] ?? '' };
    });
}

const text = (n: number): Buffer => Buffer.from('narpush stores text like this line, number 1234567\n'.repeat(Math.ceil(n / 51))).subarray(0, n);

test('xz format integers: multibyte encoding and the LZMA2 dictionary property follow the spec', () => {
  assert.deepEqual([...multibyte(0)], [0x00]);
  assert.deepEqual([...multibyte(127)], [0x7f]);
  assert.deepEqual([...multibyte(128)], [0x80, 0x01]);
  assert.deepEqual([...multibyte(300)], [0xac, 0x02]);
  assert.deepEqual([...multibyte(2 ** 40)], [0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
  // Spec table: property 0 is 4 KiB, 1 is 6 KiB, 18 is 2 MiB, 22 is 8 MiB, 40 is 4 GiB - 1.
  assert.equal(lzma2DictProperty(4096), 0);
  assert.equal(lzma2DictProperty(6144), 1);
  assert.equal(lzma2DictProperty(6145), 2);
  assert.equal(lzma2DictProperty(2 << 20), 18);
  assert.equal(lzma2DictProperty(8 << 20), 22);
});

test('xz: empty input is a valid .xz file of nothing', { skip: noXz }, async () => {
  const packed = await encode([]);
  const r = xz(['-dc'], packed);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
});

test('xz: random bytes are stored (no liblzma), text is compressed; xz decodes both and -t checks them', { skip: noXz }, async () => {
  const noise = randomBytes(3 << 20);
  const lines = text(3 << 20);
  for (const [input, stored] of [[noise, true], [lines, false]] as const) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < input.length; i += 77_777) chunks.push(input.subarray(i, i + 77_777));
    const packed = await encode(chunks, { preset: 6 });
    assert.equal(xz(['-t'], packed).status, 0);
    assert.ok(xz(['-dc'], packed).stdout.equals(input));
    const bs = blocks(packed);
    assert.equal(bs.length, 1, 'one kind of data, one block');
    assert.match(bs[0]!.filters, /--lzma2=dict=8MiB/, 'preset 6 dictionary in the block header');
    if (stored) {
      // 3 bytes per 64 KiB chunk, and the end marker: nothing else.
      assert.equal(bs[0]!.compressed, input.length + 3 * Math.ceil(input.length / 65536) + 1);
    } else {
      assert.ok(bs[0]!.compressed < input.length / 20, `text compressed to ${bs[0]!.compressed}`);
    }
  }
});

test('xz: alternating data gets one block per run of a kind, and decodes exactly', { skip: noXz }, async () => {
  const seg = 64 * 1024;
  const parts = [text(3 * seg), randomBytes(2 * seg), text(seg), randomBytes(seg + 17)];
  const input = Buffer.concat(parts);
  const packed = await encode([input], { segmentBytes: seg });
  assert.ok(xz(['-dc'], packed).stdout.equals(input));
  const bs = blocks(packed);
  assert.deepEqual(bs.map((b) => b.uncompressed), [3 * seg, 2 * seg, seg, seg + 17]);
  assert.ok(bs[0]!.compressed < seg / 4 && bs[1]!.compressed > 2 * seg, 'text compressed, noise stored');
});

test('xz: the preset reaches liblzma (preset 0 is not silently 6)', { skip: noXz }, async () => {
  const input = text(1 << 20);
  const zero = blocks(await encode([input], { preset: 0 }));
  const nine = blocks(await encode([input], { preset: 9 }));
  assert.match(zero[0]!.filters, /dict=256KiB/);
  assert.match(nine[0]!.filters, /dict=64MiB/);
});

test('xz: a damaged stored block fails the check (the CRC32 is of the real data)', { skip: noXz }, async () => {
  const packed = await encode([randomBytes(200_000)]);
  const bad = Buffer.from(packed);
  bad[5000] = bad[5000]! ^ 0x01; // inside the first stored chunk's data
  assert.notEqual(xz(['-t'], bad).status, 0);
  assert.equal(xz(['-t'], packed).status, 0);
});

test('xz: any mix of data, chunking, segment size and block kinds round trips (property)', async () => {
  const part = fc.oneof(
    fc.uint8Array({ minLength: 0, maxLength: 3000 }),
    fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 400 })).map(([s, n]) => new TextEncoder().encode(s.repeat(n))),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(part, { maxLength: 6 }),
      fc.integer({ min: 1, max: 5000 }),
      fc.integer({ min: 1, max: 7000 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
      async (parts, segmentBytes, chunkBytes, kinds) => {
        const input = Buffer.concat(parts.map((p) => Buffer.from(p)));
        const chunks: Buffer[] = [];
        for (let i = 0; i < input.length; i += chunkBytes) chunks.push(input.subarray(i, i + chunkBytes));
        let n = 0;
        const packed = await encode(chunks, { preset: 0, segmentBytes, decide: () => (kinds[n++ % kinds.length] ? 'lzma' : 'stored') });
        assert.ok((await decodeInProcess(packed)).equals(input));
      },
    ),
    { numRuns: 60 },
  );
});

test('xz: the bytes of xzCompressBuffer are those of the stream', async () => {
  const input = Buffer.concat([text(100_000), randomBytes(100_000)]);
  const a = await xzCompressBuffer(input, 3);
  assert.ok((await decodeInProcess(a)).equals(input));
  assert.ok(a.equals(await encode([input], { preset: 3, sizeHint: input.length })));
});

test('xz: liblzma encoders are limited by their slots, and a destroyed encoder gives its slot back', async () => {
  const slots = new Slots(1);
  const input = text(300_000);
  // Two streams, one slot: both finish (the second waits for the first's block to close).
  const [a, b] = await Promise.all([
    encode([input], { encoderSlots: slots, segmentBytes: 100_000 }),
    encode([input], { encoderSlots: slots, segmentBytes: 100_000 }),
  ]);
  assert.ok((await decodeInProcess(a)).equals(input) && (await decodeInProcess(b)).equals(input));

  // Destroy an encoder while it holds the only slot: the next one still gets it.
  const held = new XzEncoder({ preset: 1, encoderSlots: slots, segmentBytes: 1000, decide: () => 'lzma' });
  held.on('error', () => {});
  held.resume();
  held.write(text(5000));
  await new Promise((r) => setTimeout(r, 50));
  held.destroy();
  const after = await Promise.race([
    encode([input], { encoderSlots: slots }),
    new Promise<undefined>((r) => setTimeout(() => r(undefined), 20_000)),
  ]);
  assert.ok(after && (await decodeInProcess(after)).equals(input), 'the slot was released');
});

test('Slots: at most n holders, served in order', async () => {
  const slots = new Slots(2);
  const order: number[] = [];
  const r1 = await slots.acquire();
  const r2 = await slots.acquire();
  const third = slots.acquire().then((r) => (order.push(3), r));
  const fourth = slots.acquire().then((r) => (order.push(4), r));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, []);
  r1();
  r1(); // a second release of the same holder is ignored
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, [3]);
  r2();
  (await third)();
  (await fourth)();
  assert.deepEqual(order, [3, 4]);
});

test('xz probe: data seen a few MiB earlier counts as compressible (liblzma would find it)', async () => {
  const { Probe } = await import('../../src/cache/xz-encoder.js');
  const zstd = await import('zstd-napi');
  const probe = new Probe(zstd, 8 << 20);
  const blob = randomBytes(1 << 20);
  assert.ok((await probe.cost(blob)) > blob.length * 0.99, 'random bytes are incompressible the first time');
  for (let i = 0; i < 3; i++) await probe.cost(randomBytes(1 << 20)); // 3 MiB in between
  assert.ok((await probe.cost(blob)) < blob.length * 0.1, 'the same bytes 3 MiB later are found');
  probe.destroy();
});

test("xz: lzma2Options(level) is liblzma's own preset (same bytes for every level)", async () => {
  const { lzma2Options } = await import('../../src/cache/xz-encoder.js');
  const lzma = (await import('lzma-native')).default;
  const input = Buffer.concat([text(200_000), randomBytes(5_000), text(50_000)]);
  const raw = async (options: Record<string, number>): Promise<Buffer> => {
    const out: Buffer[] = [];
    const s = lzma.createStream('rawEncoder', { filters: [{ id: lzma.FILTER_LZMA2, options }] });
    s.on('data', (b: Buffer) => out.push(b));
    const done = new Promise((r) => s.on('end', r));
    s.end(input);
    await done;
    return Buffer.concat(out);
  };
  for (let level = 0; level <= 9; level++) {
    assert.ok((await raw(lzma2Options(level))).equals(await raw({ preset: level })), `preset ${level}`);
  }
});

test('xz: a small input gets a dictionary to its size, in the header too', { skip: noXz }, async () => {
  const input = text(3000);
  const packed = await xzCompressBuffer(input, 6);
  assert.ok(xz(['-dc'], packed).stdout.equals(input));
  assert.match(blocks(packed)[0]!.filters, /dict=4KiB/);
  const stream = await encode([text(600_000)], { preset: 6, sizeHint: 600_000 });
  assert.match(blocks(stream)[0]!.filters, /dict=1MiB/);
  // Incompressible small input: stored, no liblzma.
  const noise = randomBytes(3000);
  const stored = await xzCompressBuffer(noise, 6);
  assert.equal(blocks(stored)[0]!.compressed, noise.length + 3 + 1);
});

/** Slots that remember how many were held at once. */
class CountingSlots extends Slots {
  held = 0;
  peak = 0;
  override async acquire(): Promise<() => void> {
    const release = await super.acquire();
    this.peak = Math.max(this.peak, ++this.held);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.held--;
      release();
    };
  }
}

test('xz: compressed blocks end at blockBytes, run maxBlocks at once, and the bytes do not depend on how many ran at once', { skip: noXz }, async () => {
  const seg = 64 * 1024;
  // Compressible runs split by noise: blocks end at blockBytes and where the kind changes.
  const input = Buffer.concat([text(7 * seg + 5), randomBytes(seg), text(5 * seg)]);
  const chunks: Buffer[] = [];
  for (let i = 0; i < input.length; i += 50_000) chunks.push(input.subarray(i, i + 50_000));
  const made: Buffer[] = [];
  for (const maxBlocks of [1, 2, 3]) {
    const slots = new CountingSlots(8);
    made.push(await encode(chunks, { preset: 6, segmentBytes: seg, blockBytes: 2 * seg, maxBlocks, encoderSlots: slots }));
    assert.equal(slots.peak, maxBlocks, `${maxBlocks} encoders at once`);
    assert.equal(slots.held, 0, 'every slot given back');
  }
  for (const m of made) assert.ok(m.equals(made[0]!), 'the same bytes whatever maxBlocks');
  const packed = made[2]!;
  assert.equal(xz(['-t'], packed).status, 0);
  assert.ok(xz(['-dc'], packed).stdout.equals(input));
  assert.ok((await decodeInProcess(packed)).equals(input));
  assert.deepEqual(blocks(packed).map((b) => b.uncompressed), [2 * seg, 2 * seg, 2 * seg, seg, seg, 2 * seg, 2 * seg, seg, 5]);
});

test('xz: any mix of data, block size and blocks at once round trips, the same bytes as one at a time (property)', async () => {
  const part = fc.oneof(
    fc.uint8Array({ minLength: 0, maxLength: 3000 }),
    fc.tuple(fc.string({ minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 400 })).map(([s, n]) => new TextEncoder().encode(s.repeat(n))),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(part, { maxLength: 6 }),
      fc.integer({ min: 1, max: 5000 }),
      fc.integer({ min: 1, max: 20000 }),
      fc.integer({ min: 2, max: 4 }),
      fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }),
      async (parts, segmentBytes, blockBytes, maxBlocks, kinds) => {
        const input = Buffer.concat(parts.map((p) => Buffer.from(p)));
        const run = (blocksAtOnce: number): Promise<Buffer> => {
          let n = 0;
          return encode([input], { preset: 0, segmentBytes, blockBytes, maxBlocks: blocksAtOnce, decide: () => (kinds[n++ % kinds.length] ? 'lzma' : 'stored') });
        };
        const parallel = await run(maxBlocks);
        assert.ok((await decodeInProcess(parallel)).equals(input));
        assert.ok(parallel.equals(await run(1)));
      },
    ),
    { numRuns: 60 },
  );
});

test('xz: destroyed with several blocks encoding, every slot is given back', async () => {
  const slots = new CountingSlots(2);
  const enc = new XzEncoder({ preset: 6, encoderSlots: slots, segmentBytes: 64 * 1024, blockBytes: 64 * 1024, maxBlocks: 2, decide: () => 'lzma' });
  enc.on('error', () => {});
  enc.resume();
  enc.write(text(4 * 64 * 1024));
  while (slots.held < 2) await new Promise((r) => setTimeout(r, 5));
  enc.destroy();
  assert.equal(slots.held, 0);
  const after = await encode([text(100_000)], { encoderSlots: slots, blockBytes: 30_000, segmentBytes: 10_000, maxBlocks: 2 });
  assert.ok((await decodeInProcess(after)).equals(text(100_000)));
});
