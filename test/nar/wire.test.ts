import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as wire from '../../src/nar/wire.js';

/** str(s) as the Nix manual defines it, written independently of wire.ts. */
function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
}

function words(...ws: string[]): Buffer {
  return Buffer.concat(ws.map((w) => str(w)));
}

test('each framing constant is the concatenation of its words', () => {
  assert.deepEqual(wire.TOK_NAR, words('nix-archive-1', '(', 'type'));
  assert.deepEqual(wire.TOK_MAGIC, words('nix-archive-1'));
  assert.deepEqual(wire.TOK_REG, words('regular', 'contents'));
  assert.deepEqual(wire.TOK_EXE, words('regular', 'executable', '', 'contents'));
  assert.deepEqual(wire.TOK_SYM, words('symlink', 'target'));
  assert.deepEqual(wire.TOK_DIR, words('directory'));
  assert.deepEqual(wire.TOK_ENT, words('entry', '(', 'name'));
  assert.deepEqual(wire.TOK_NOD, words('node', '(', 'type'));
  assert.deepEqual(wire.TOK_PAR, words(')'));
  for (const w of Object.values(wire.WORDS)) assert.ok(w.length <= wire.MAX_WORD_LENGTH, w);
});

test('u64 lengths round-trip up to 2^53 - 1 and mark larger ones', () => {
  const buf = Buffer.alloc(8);
  for (const n of [0, 1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
    wire.writeU64(buf, n, 0);
    assert.equal(buf.readBigUInt64LE(), BigInt(n));
    assert.equal(wire.readU64(buf, 0), n);
  }
  buf.writeBigUInt64LE(2n ** 53n);
  assert.equal(wire.readU64(buf, 0), Infinity);
  buf.writeBigUInt64LE(2n ** 64n - 1n);
  assert.equal(wire.readU64(buf, 0), Infinity);
});

test('padding reaches the next multiple of 8', () => {
  assert.deepEqual([0, 1, 7, 8, 9, 15, 16].map(wire.padLength), [0, 7, 1, 0, 7, 1, 0]);
});

test('entry names and symlink targets follow the rules', () => {
  const ok = ['a', '...', '.a', 'a b', '\u00e9'].map((s) => Buffer.from(s));
  ok.push(Buffer.from([0xff]), Buffer.alloc(255, 0x61));
  for (const n of ok) assert.equal(wire.entryNameError(n), undefined, n.toString('hex'));
  const badNames: [Buffer, RegExp][] = [
    [Buffer.alloc(0), /empty/],
    [Buffer.from('.'), /is '\.'/],
    [Buffer.from('..'), /is '\.\.'/],
    [Buffer.from('a/b'), /'\/'/],
    [Buffer.from('a\0b'), /NUL/],
    [Buffer.alloc(256, 0x61), /longer than 255/],
  ];
  for (const [n, re] of badNames) assert.match(wire.entryNameError(n) ?? '', re);
  assert.equal(wire.symlinkTargetError(Buffer.alloc(4095, 0x61)), undefined);
  assert.match(wire.symlinkTargetError(Buffer.alloc(4096, 0x61)) ?? '', /longer than 4095/);
  assert.match(wire.symlinkTargetError(Buffer.alloc(0)) ?? '', /empty/);
  assert.match(wire.symlinkTargetError(Buffer.from('a\0')) ?? '', /NUL/);
  assert.equal(wire.showBytes(Buffer.from([0x61, 0xff, 0x27])), "'a\\xff\\x27'");
});
