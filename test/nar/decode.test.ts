import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { decodeNar } from '../../src/nar/decode.js';
import { encodeNar, encodeNarSync } from '../../src/nar/encode.js';
import type { NarEvents } from '../../src/nar/events.js';
import { FIXTURE_NAMES, narFixtures, nixDump } from './fixtures.js';
import { canonical, eventsTree, treeArb, treeEvents } from './tree.js';

/** str(s) as the Nix manual defines it, independent of src/nar. */
function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
}
const cat = (...parts: (string | Buffer)[]): Buffer => Buffer.concat(parts.map((p) => str(p)));
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

/** Events as comparable lines; contents as their sha256. */
async function eventLines(events: NarEvents): Promise<string[]> {
  const out: string[] = [];
  for await (const ev of events) {
    const name = 'name' in ev && ev.name ? ev.name.toString('hex') : '-';
    if (ev.type === 'regular') {
      const h = createHash('sha256');
      let n = 0;
      for await (const c of ev.contents) {
        h.update(c);
        n += c.length;
      }
      out.push(`regular ${name} ${ev.executable} ${ev.size} ${n} ${h.digest('hex')}`);
    } else if (ev.type === 'symlink') out.push(`symlink ${name} ${ev.target.toString('hex')}`);
    else out.push(`${ev.type} ${name}`);
  }
  return out;
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/** Split `b` at the given points (taken modulo its length). */
function splitAt(b: Buffer, points: number[]): Buffer[] {
  const cuts = [...new Set(points.map((p) => p % (b.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts, b.length]) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  return out;
}

function* bytewise(b: Buffer): Generator<Buffer> {
  for (let i = 0; i < b.length; i++) yield b.subarray(i, i + 1);
}

test('every NAR Nix writes for the fixtures decodes and re-encodes to the same bytes', async () => {
  const fixtures = await narFixtures();
  for (const name of FIXTURE_NAMES) {
    const nar = await nixDump(fixtures.get(name)!);
    assert.deepEqual(await collect(encodeNar(decodeNar([nar]))), nar, name);
    // Split into 1000-byte pieces too, so file contents arrive in several chunks.
    assert.deepEqual(await collect(encodeNar(decodeNar(splitAt(nar, Array.from({ length: 200 }, (_, i) => i * 1000))))), nar, name);
  }
});

test('Nix NARs fed one byte at a time and at random split points give the same events', async () => {
  const fixtures = await narFixtures();
  const nars = new Map<string, Buffer>();
  for (const name of FIXTURE_NAMES) nars.set(name, await nixDump(fixtures.get(name)!));
  const whole = new Map<string, string[]>();
  for (const [name, nar] of nars) whole.set(name, await eventLines(decodeNar([nar])));
  for (const [name, nar] of nars) {
    if (name === 'nar-large') continue; // 40 MiB one byte at a time is too slow; split at random below
    assert.deepEqual(await eventLines(decodeNar(bytewise(nar))), whole.get(name), name);
  }
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...FIXTURE_NAMES.filter((n) => n !== 'nar-large')), fc.array(fc.nat(), { maxLength: 300 }), async (name, points) => {
      const nar = nars.get(name)!;
      assert.deepEqual(await eventLines(decodeNar(splitAt(nar, points))), whole.get(name));
    }),
    { numRuns: 20 },
  );
  const large = nars.get('nar-large')!;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.nat({ max: large.length }), { maxLength: 2000 }), async (points) => {
      assert.deepEqual(await eventLines(decodeNar(splitAt(large, points))), whole.get('nar-large'));
    }),
    { numRuns: 2 },
  );
});

test('property: random trees encode, decode (split anywhere) and give the same tree', async () => {
  await fc.assert(
    fc.asyncProperty(treeArb(), fc.array(fc.nat(), { maxLength: 40 }), fc.integer({ min: 1, max: 50 }), async (tree, points, piece) => {
      const nar = encodeNarSync(treeEvents(tree, undefined, piece));
      const back = await eventsTree(decodeNar(splitAt(nar, points)));
      assert.deepEqual(canonical(back), canonical(tree));
      assert.deepEqual(await collect(encodeNar(decodeNar(splitAt(nar, points)))), nar);
    }),
    { numRuns: 300 },
  );
});

test('contents may be skipped, but not read after the decoder moved on', async () => {
  const nar = encodeNarSync(
    treeEvents({
      type: 'directory',
      entries: [
        [Buffer.from('a'), { type: 'regular', executable: false, contents: Buffer.alloc(100, 1) }],
        [Buffer.from('b'), { type: 'regular', executable: true, contents: Buffer.alloc(100, 2) }],
      ],
    }),
  );
  const it = decodeNar(bytewise(nar));
  await it.next();
  const a = (await it.next()).value;
  const b = (await it.next()).value;
  assert.ok(a?.type === 'regular' && b?.type === 'regular');
  assert.equal(b.executable, true);
  await assert.rejects(async () => {
    for await (const _ of a.contents as AsyncIterable<Uint8Array>) void _;
  }, { code: 'BAD_NAR_USE' });
  assert.equal((await it.next()).value?.type, 'end-directory');
  assert.equal((await it.next()).done, true);
});

// A small valid NAR to break in every way: / = { a: exe "hello", b -> a, c: {} }.
const entry = (name: string | Buffer, ...node: (string | Buffer)[]): Buffer =>
  Buffer.concat([cat('entry', '(', 'name'), str(name), cat('node', '(', 'type'), cat(...node), cat(')')]);
const dir = (...entries: Buffer[]): Buffer => Buffer.concat([cat('nix-archive-1', '(', 'type', 'directory'), ...entries, cat(')')]);
const GOOD = dir(
  entry('a', 'regular', 'executable', '', 'contents', 'hello', ')'),
  entry('b', 'symlink', 'target', 'a', ')'),
  entry('c', 'directory', ')'),
);
const file = (...rest: (string | Buffer)[]): Buffer => cat('nix-archive-1', '(', 'type', 'regular', ...rest);

function nested(depth: number): Buffer {
  let node = cat('directory', ')');
  for (let i = 0; i < depth; i++) {
    node = Buffer.concat([cat('directory', 'entry', '(', 'name', 'd', 'node', '(', 'type'), node, cat(')', ')')]);
  }
  return Buffer.concat([cat('nix-archive-1', '(', 'type'), node]);
}

async function decodeAll(nar: Buffer | Buffer[]): Promise<string[]> {
  return eventLines(decodeNar(Array.isArray(nar) ? nar : [nar]));
}

test('the small NAR used for the defects is valid', async () => {
  assert.equal((await decodeAll(GOOD)).length, 6);
  assert.equal((await decodeAll(nested(63))).length, 128);
});

test('each defect is rejected with its own message naming the byte offset', async () => {
  const withPadding = Buffer.from(GOOD);
  // The name 'a' of the first entry: its padding starts after magic, (, type, directory, entry, (, name, and its length.
  const nameAt = 24 + 16 + 16 + 24 + 16 + 16 + 16;
  withPadding[nameAt + 8 + 3] = 1;
  const contentsPadding = Buffer.from(file(...['contents', 'abc', ')']));
  contentsPadding[contentsPadding.length - 16 - 2] = 7;
  const cases: [string, Buffer, RegExp][] = [
    ['wrong magic', Buffer.concat([cat('nix-archive-2'), GOOD.subarray(24)]), /not a NAR \(no 'nix-archive-1' magic\) at byte 0$/],
    ['not even a string', Buffer.from('hello world, this is not a NAR'), /not a NAR/],
    ['empty input', Buffer.alloc(0), /the input ends in the length of the magic at byte 0/],
    ['unsorted names', dir(entry('b', 'directory', ')'), entry('a', 'directory', ')')), /entry name 'a' is not sorted after 'b' at byte \d+/],
    ['duplicate names', dir(entry('a', 'directory', ')'), entry('a', 'directory', ')')), /duplicate entry name 'a' at byte/],
    ['bytes sort unsigned', dir(entry(Buffer.from([0xff]), 'directory', ')'), entry('a', 'directory', ')')), /'a' is not sorted after '\\xff'/],
    ['name .', dir(entry('.', 'directory', ')')), /entry name '\.' is '\.' at byte 128$/],
    ['name ..', dir(entry('..', 'directory', ')')), /entry name '\.\.' is '\.\.'/],
    ['name with /', dir(entry('a/b', 'directory', ')')), /entry name 'a\/b' contains '\/'/],
    ['name with NUL', dir(entry('a\0b', 'directory', ')')), /entry name 'a\\x00b' contains a NUL byte/],
    ['empty name', dir(entry('', 'directory', ')')), /entry name '' is empty/],
    ['long name', dir(entry('x'.repeat(256), 'directory', ')')), /an entry name is 256 bytes long, more than the limit of 255 at byte 128$/],
    ['non-zero padding in a name', withPadding, /non-zero padding after an entry name at byte 139$/],
    ['non-zero padding after contents', contentsPadding, /non-zero padding after a file's contents/],
    ['trailing bytes', Buffer.concat([GOOD, Buffer.from([0])]), new RegExp(`trailing data after the end of the NAR at byte ${GOOD.length}$`)],
    ['a second root', Buffer.concat([GOOD, cat('(')]), /trailing data/],
    ['huge contents length', Buffer.concat([file(), cat('contents'), u64(2n ** 64n - 1n)]), /contents are over 2\^53 bytes long/],
    ['huge name length', Buffer.concat([cat('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name'), u64(2n ** 40n)]), /an entry name is 1099511627776 bytes long, more than the limit of 255/],
    ['huge word length', Buffer.concat([cat('nix-archive-1', '('), u64(2n ** 62n)]), /expected 'type' \(the root node's 'type'\), found a string of over 2\^53 bytes at byte 40$/],
    ['huge target length', Buffer.concat([cat('nix-archive-1', '(', 'type', 'symlink', 'target'), u64(5000n)]), /a symlink target is 5000 bytes long, more than the limit of 4095/],
    ['empty target', Buffer.concat([cat('nix-archive-1', '(', 'type', 'symlink', 'target', '', ')')]), /symlink target '' is empty/],
    ['target with NUL', Buffer.concat([cat('nix-archive-1', '(', 'type', 'symlink', 'target', 'a\0', ')')]), /symlink target 'a\\x00' contains a NUL byte/],
    ['too deep', nested(64), /directories are nested 64 or more deep at byte \d+/],
    ['unknown node type', Buffer.concat([cat('nix-archive-1', '(', 'type', 'fifo', ')')]), /unknown node type 'fifo' at byte 56$/],
    ['unknown directory token', dir(Buffer.concat([cat('entyr')])), /expected 'entry' or '\)' \(a directory's 'entry' or '\)'\), found 'entyr'/],
    ['missing type', Buffer.concat([cat('nix-archive-1', '(', 'tpye')]), /expected 'type'/],
    ['executable with a value', file('executable', 'yes', 'contents', '', ')'), /the 'executable' marker must be followed by an empty string, not one of 3 bytes/],
    ['executable twice', file('executable', '', 'executable', '', 'contents', '', ')'), /expected 'contents' \(a file's 'contents'\), found 'executable'/],
    ['contents missing', file(')'), /expected 'executable' or 'contents'/],
    ['no closing of a file', file('contents', 'abc', 'entry'), /expected '\)' \(the '\)' after a file\), found 'entry'/],
    ['unclosed root directory', Buffer.concat([cat('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name', 'a', 'node', '(', 'type', 'directory', ')', ')')]), /the input ends in the length of a directory's 'entry' or '\)' at byte 248$/],
    ['unclosed entry', Buffer.concat([cat('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name', 'a', 'node', '(', 'type', 'directory', ')', 'entry')]), /expected '\)' \(the '\)' closing an entry\), found 'entry'/],
    ['symlink without target', Buffer.concat([cat('nix-archive-1', '(', 'type', 'symlink', ')')]), /expected 'target'/],
  ];
  const messages = new Set<string>();
  for (const [what, nar, re] of cases) {
    const err = await decodeAll(nar).then(
      () => assert.fail(`${what}: accepted`),
      (e: unknown) => e as Error & { code?: string },
    );
    assert.equal(err.code, 'BAD_NAR', `${what}: ${err.message}`);
    assert.match(err.message, re, what);
    assert.match(err.message, /^invalid NAR: .* at byte \d+$/, what);
    // Split one byte at a time, the same defect gives the same message.
    await assert.rejects(eventLines(decodeNar(bytewise(nar))), { message: err.message }, what);
    messages.add(err.message.replace(/ at byte \d+$/, ''));
  }
  assert.ok(messages.size >= cases.length - 3, 'defects share messages');
});

test('a NAR cut at any position is rejected as truncated', async () => {
  for (let k = 0; k < GOOD.length; k++) {
    await assert.rejects(
      decodeAll(GOOD.subarray(0, k)),
      { code: 'BAD_NAR', message: new RegExp(`^invalid NAR: the input ends in .* at byte ${k}$`) },
      `cut at ${k}`,
    );
  }
});
