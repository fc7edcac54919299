import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeNar, encodeNarSync } from '../../src/nar/encode.js';
import type { NarEvent } from '../../src/nar/events.js';

function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
}
const cat = (...parts: (string | Buffer)[]): Buffer => Buffer.concat(parts.map((p) => str(p)));

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

test('encodes each node kind as the grammar says (built here word by word)', async () => {
  const events: NarEvent[] = [
    { type: 'directory' },
    { type: 'regular', name: Buffer.from('a'), executable: true, size: 3, contents: [Buffer.from('abc')] },
    { type: 'directory', name: Buffer.from('d') },
    { type: 'end-directory' },
    { type: 'symlink', name: Buffer.from('l'), target: Buffer.from('a') },
    { type: 'end-directory' },
  ];
  const expected = Buffer.concat([
    cat('nix-archive-1', '(', 'type', 'directory'),
    cat('entry', '(', 'name', 'a', 'node', '(', 'type', 'regular', 'executable', '', 'contents', 'abc', ')', ')'),
    cat('entry', '(', 'name', 'd', 'node', '(', 'type', 'directory', ')', ')'),
    cat('entry', '(', 'name', 'l', 'node', '(', 'type', 'symlink', 'target', 'a', ')', ')'),
    cat(')'),
  ]);
  assert.deepEqual(encodeNarSync(events), expected);
  assert.deepEqual(await collect(encodeNar(events)), expected);
  assert.deepEqual(
    encodeNarSync([{ type: 'regular', executable: false, size: 0, contents: [] }]),
    cat('nix-archive-1', '(', 'type', 'regular', 'contents', '', ')'),
  );
});

/** `size` bytes of a repeating pattern, generated on the fly in pieces of `piece` bytes. */
async function* synthetic(size: number, piece: number): AsyncGenerator<Uint8Array> {
  const block = Buffer.alloc(piece, 0xab);
  for (let left = size; left > 0; left -= piece) yield left >= piece ? block : block.subarray(0, left);
}

test('a file over 4 GiB gets a u64 length and the right padding, in constant memory', async () => {
  const size = 2 ** 32 + 5;
  const before = process.memoryUsage().rss;
  let total = 0;
  let head: Buffer | undefined;
  let tail = Buffer.alloc(0);
  for await (const c of encodeNar([{ type: 'regular', executable: false, size, contents: synthetic(size, 8 << 20) }])) {
    if (head === undefined) head = Buffer.from(c.subarray(0, 200));
    total += c.length;
    tail = Buffer.concat([tail, c]).subarray(-64);
  }
  const prefix = cat('nix-archive-1', '(', 'type', 'regular', 'contents');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(size));
  assert.deepEqual(head!.subarray(0, prefix.length + 8), Buffer.concat([prefix, len]));
  assert.equal(total, prefix.length + 8 + size + 3 + 16);
  // The contents end in 0xab, then 3 zero bytes of padding, then str(')').
  assert.deepEqual(tail.subarray(-20), Buffer.concat([Buffer.from([0xab, 0, 0, 0]), cat(')')]));
  assert.ok(process.memoryUsage().rss - before < 256 << 20, 'memory grew with the file size');
});

test('contents shorter or longer than size are errors', async () => {
  const short = [{ type: 'regular' as const, executable: false, size: 2 ** 32 + 5, contents: synthetic(2 ** 32 + 4, 1 << 20) }];
  const long = [{ type: 'regular' as const, executable: false, size: 10, contents: synthetic(11, 4) }];
  await assert.rejects(collect(encodeNar(short)), { code: 'BAD_NAR_EVENT', message: /ended 1 bytes short of its size of 4294967301/ });
  await assert.rejects(collect(encodeNar(long)), { code: 'BAD_NAR_EVENT', message: /longer than its size of 10/ });
});

test('refuses events that would make a NAR Nix rejects', () => {
  const f = (name?: string): NarEvent => ({
    type: 'regular',
    ...(name === undefined ? {} : { name: Buffer.from(name) }),
    executable: false,
    size: 0,
    contents: [],
  });
  const cases: [NarEvent[], RegExp][] = [
    [[], /no events/],
    [[{ type: 'directory' }], /ended before the NAR was complete/],
    [[f('x')], /root regular has a name/],
    [[f(), f()], /after the end of the NAR/],
    [[{ type: 'end-directory' }], /without an open directory/],
    [[{ type: 'directory' }, f()], /entry without a name/],
    [[{ type: 'directory' }, f('b'), f('a')], /'a' comes after 'b'/],
    [[{ type: 'directory' }, f('a'), f('a')], /duplicate entry name 'a'/],
    [[{ type: 'directory' }, f('.')], /is '\.'/],
    [[{ type: 'directory' }, f('..')], /is '\.\.'/],
    [[{ type: 'directory' }, f('a/b')], /contains '\/'/],
    [[{ type: 'directory' }, f('a\0')], /NUL/],
    [[{ type: 'directory' }, f('')], /is empty/],
    [[{ type: 'symlink', target: Buffer.alloc(0) }], /symlink target '' is empty/],
    [[{ type: 'regular', executable: false, size: -1, contents: [] }], /not a whole number/],
  ];
  for (const [events, re] of cases) {
    assert.throws(() => encodeNarSync(events), { code: 'BAD_NAR_EVENT', message: re }, String(re));
  }
});

test('batches small pieces into large chunks', async () => {
  function* many(): Generator<NarEvent> {
    yield { type: 'directory' };
    for (let i = 0; i < 5000; i++) {
      yield { type: 'regular', name: Buffer.from(`f${String(i).padStart(5, '0')}`), executable: false, size: 1, contents: [Buffer.from('x')] };
    }
    yield { type: 'end-directory' };
  }
  const chunks: Buffer[] = [];
  for await (const c of encodeNar(many(), { chunkSize: 64 * 1024 })) chunks.push(c);
  const total = encodeNarSync(many()).length;
  assert.ok(chunks.length <= Math.ceil(total / (64 * 1024)) + 1, `${chunks.length} chunks for ${total} bytes`);
  assert.ok(chunks.slice(0, -1).every((c) => c.length > 60 * 1024), 'a chunk other than the last is small');
  assert.deepEqual(Buffer.concat(chunks), encodeNarSync(many()));
});

test('a consumer that stops reading stops the producer (backpressure), and closes it', async () => {
  let produced = 0;
  let closed = false;
  function* endless(): Generator<NarEvent> {
    try {
      yield { type: 'directory' };
      for (let i = 0; ; i++) {
        produced++;
        yield { type: 'regular', name: Buffer.from(`f${String(i).padStart(9, '0')}`), executable: false, size: 1000, contents: [Buffer.alloc(1000)] };
      }
    } finally {
      closed = true;
    }
  }
  const it = encodeNar(endless(), { chunkSize: 64 * 1024 });
  await it.next();
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(produced < 100, `the producer ran ahead: ${produced} events`);
  await it.return();
  assert.ok(closed, 'the producer was not closed');
});

test('with reuseBuffers, chunks are lent: valid until the next pull, and their memory is reused', async () => {
  function* many(): Generator<NarEvent> {
    yield { type: 'directory' };
    for (let i = 0; i < 3000; i++) {
      const data = Buffer.alloc(i % 300, i % 251);
      yield { type: 'regular', name: Buffer.from(`f${String(i).padStart(5, '0')}`), executable: i % 3 === 0, size: data.length, contents: [data] };
    }
    yield { type: 'end-directory' };
  }
  const copies: Buffer[] = [];
  const memories = new Set<ArrayBufferLike>();
  let chunks = 0;
  for await (const c of encodeNar(many(), { chunkSize: 16 * 1024, reuseBuffers: true })) {
    copies.push(Buffer.from(c));
    memories.add(c.buffer);
    chunks++;
  }
  assert.deepEqual(Buffer.concat(copies), encodeNarSync(many()));
  assert.ok(chunks > 20, `${chunks} chunks`);
  assert.ok(memories.size <= 3, `${memories.size} buffers for ${chunks} chunks`);
});
