// Progress on a pipe or log file: one line per path, in order, written in
// batches (never one write per path), and nothing left unwritten at the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress } from '../../src/cli/progress.js';
import type { UploadEvent } from '../../src/cache/upload.js';
import { NarpushError } from '../../src/errors.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { parseStorePath } from '../../src/store/store-path.js';

function fakeStream(): { writes: string[]; write(s: string): boolean } {
  const writes: string[] = [];
  return { writes, write: (s: string) => (writes.push(s), true) };
}

function info(i: number): PathInfo {
  const path = parseStorePath(`/nix/store/${String(i).padStart(32, '0').replace(/[eotu]/g, 'a')}-p${i}`);
  return { path, narSize: 100 + i } as unknown as PathInfo;
}

const uploaded = (i: number): UploadEvent =>
  ({ type: 'uploaded', info: info(i), nar: { narSize: 100 + i, fileSize: 50, compression: 'zstd' }, seconds: 0.01 }) as unknown as UploadEvent;

test('progress off a terminal: lines in order, batched, all written by done()', () => {
  const stream = fakeStream();
  const sink = createProgress(stream as unknown as NodeJS.WritableStream, false);
  sink({ type: 'planned', total: 5, toUpload: [], present: 2, upstream: 0 });
  for (let i = 0; i < 200; i++) sink(uploaded(i));
  sink({ type: 'failed', info: info(200), error: new NarpushError('UPLOAD_FAILED', 'boom') });
  sink(uploaded(201));
  sink.done();
  const text = stream.writes.join('');
  const lines = text.trimEnd().split('\n');
  assert.equal(lines.length, 1 + 200 + 1 + 1);
  assert.equal(lines[0], '2 of 5 paths are already in the cache');
  for (let i = 0; i < 200; i++) assert.ok(lines[i + 1]!.startsWith(`uploaded ${info(i).path.path} `), lines[i + 1]);
  assert.equal(lines[201], `failed ${info(200).path.path}: boom`);
  assert.ok(lines[202]!.startsWith(`uploaded ${info(201).path.path} `));
  assert.ok(stream.writes.length < 10, `${stream.writes.length} writes for ${lines.length} lines`);
  assert.ok(text.endsWith('\n'));
});

test('progress off a terminal: a batch is written within 100 ms without done()', async () => {
  const stream = fakeStream();
  const sink = createProgress(stream as unknown as NodeJS.WritableStream, false);
  sink(uploaded(1));
  assert.equal(stream.writes.length, 0);
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(stream.writes.length, 1);
  assert.match(stream.writes[0]!, /^uploaded \/nix\/store\/\S+-p1 /);
  sink.done();
  assert.equal(stream.writes.length, 1, 'nothing more to write');
});

test('progress with --json: no per-path lines, failures still reported', () => {
  const stream = fakeStream();
  const sink = createProgress(stream as unknown as NodeJS.WritableStream, true);
  sink(uploaded(1));
  sink({ type: 'failed', info: info(2), error: new NarpushError('UPLOAD_FAILED', 'boom') });
  sink.done();
  assert.equal(stream.writes.join(''), `failed ${info(2).path.path}: boom\n`);
});
