import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { type Frame, NEED_MORE, WireDecoder, decodeAll } from '../../src/store/wire-reader.js';
import { WireWriter, padding, wire } from '../../src/store/wire.js';
import { nix } from '../helpers/nix.js';

/** Split `buf` at the given cut points (any, sorted or not, possibly out of range). */
function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

type Item = { t: 'u64'; v: number } | { t: 'bytes'; v: Uint8Array } | { t: 'strings'; v: string[] };

const item: fc.Arbitrary<Item> = fc.oneof(
  fc.oneof(fc.nat(), fc.maxSafeNat()).map((v): Item => ({ t: 'u64', v })),
  fc.uint8Array({ maxLength: 40 }).map((v): Item => ({ t: 'bytes', v })),
  fc.array(fc.string({ maxLength: 20, unit: 'grapheme' }), { maxLength: 5 }).map((v): Item => ({ t: 'strings', v })),
);

function encode(items: Item[]): Buffer {
  const w = new WireWriter();
  for (const i of items) {
    if (i.t === 'u64') w.u64(i.v);
    else if (i.t === 'bytes') w.string(i.v);
    else w.strings(i.v);
  }
  return w.finish();
}

const u64: Frame<number> = (r) => r.u64();
const bytes =
  (max?: number): Frame<Buffer> =>
  (r) =>
    r.bytes(max);
const strings =
  (max?: number): Frame<string[]> =>
  (r) =>
    r.strings(max);

function decodeItems(shape: Item[]): Frame<Item[]> {
  return (r) => {
    const out: Item[] = [];
    for (const i of shape) {
      if (i.t === 'u64') out.push({ t: 'u64', v: r.u64() });
      else if (i.t === 'bytes') out.push({ t: 'bytes', v: new Uint8Array(r.bytes()) });
      else out.push({ t: 'strings', v: r.strings() });
    }
    return out;
  };
}

test('a wire string is framed like the strings of a NAR that nix-store --dump writes', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-wire-'));
  try {
    const file = path.join(dir, 'f');
    await writeFile(file, 'abc');
    const nar = await nix('nix-store', ['--dump', file]);
    const expected = wire((w) => w.string('nix-archive-1').string('(').string('type').string('regular'));
    assert.deepEqual(nar.subarray(0, expected.length), expected);
    // contents "abc": length 3, three bytes, five zero bytes of padding
    const contents = wire((w) => w.string('contents').string('abc'));
    assert.ok(nar.includes(contents), 'the NAR contains the framed contents');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('padding rounds up to a multiple of 8', () => {
  assert.deepEqual([0, 1, 7, 8, 9, 16].map(padding), [0, 7, 1, 0, 7, 0]);
});

test('property: values survive encoding and decoding with the stream split anywhere', () => {
  fc.assert(
    fc.property(fc.array(item, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (items, cuts) => {
      const buf = encode(items);
      assert.deepEqual(decodeAll(decodeItems(items), splitAt(buf, cuts)), items);
    }),
    { numRuns: 500 },
  );
});

test('property: one byte at a time, several messages back to back on one decoder', () => {
  fc.assert(
    fc.property(fc.array(fc.array(item, { maxLength: 5 }), { minLength: 1, maxLength: 4 }), (messages) => {
      const stream = Buffer.concat(messages.map(encode));
      const d = new WireDecoder();
      const got: Item[][] = [];
      let m = 0;
      const drive = (): void => {
        while (m < messages.length) {
          const r = d.read(decodeItems(messages[m]!));
          if (r === NEED_MORE) return;
          got.push(r);
          m++;
        }
      };
      drive();
      for (const b of stream) {
        d.push(Buffer.from([b]));
        drive();
      }
      assert.deepEqual(got, messages);
      assert.equal(d.buffered, 0);
    }),
    { numRuns: 200 },
  );
});

test('a string longer than the cap is refused after reading only its length', () => {
  const d = new WireDecoder();
  d.push(wire((w) => w.u64(2 ** 40)));
  assert.throws(() => d.read(bytes(1024)), { code: 'STORE_PROTOCOL_ERROR', message: /exceeds the limit/ });
});

test('a long string split into many chunks is retried only once it is complete', () => {
  const payload = Buffer.alloc(100_000, 0x61);
  const buf = wire((w) => w.string(payload));
  const d = new WireDecoder();
  let attempts = 0;
  const counting: Frame<Buffer> = (r) => {
    attempts++;
    return r.bytes();
  };
  let got: Buffer | typeof NEED_MORE = NEED_MORE;
  for (let i = 0; i < buf.length; i += 1000) {
    d.push(buf.subarray(i, i + 1000));
    got = d.read(counting);
    if (got !== NEED_MORE) break;
  }
  assert.ok(got !== NEED_MORE && got.equals(payload));
  assert.equal(attempts, 2, 'one attempt to learn the length, one when all bytes are there');
});

test('non-zero padding, huge integers and truncated messages are errors', () => {
  const bad = Buffer.concat([wire((w) => w.u64(1)), Buffer.from([0x61, 0, 0, 1, 0, 0, 0, 0])]);
  assert.throws(() => decodeAll(bytes(), [bad]), { code: 'STORE_PROTOCOL_ERROR', message: /padding/ });
  const huge = Buffer.alloc(8, 0xff);
  assert.throws(() => decodeAll(u64, [huge]), { code: 'STORE_PROTOCOL_ERROR', message: /2\^53/ });
  assert.throws(() => decodeAll(bytes(), [wire((w) => w.string('abcdefgh')).subarray(0, 12)]), {
    code: 'STORE_PROTOCOL_ERROR',
    message: /ended early/,
  });
  assert.throws(() => decodeAll(u64, [wire((w) => w.u64(1).u64(2))]), { message: /left over/ });
});

test('a list count over the cap is refused before reading elements', () => {
  assert.throws(() => decodeAll(strings(10), [wire((w) => w.u64(11))]), {
    code: 'STORE_PROTOCOL_ERROR',
    message: /11 elements/,
  });
});
