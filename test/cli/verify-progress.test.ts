// What `narpush verify` shows while it runs: defect lines on stdout as each
// path finishes, and on a terminal a status line on stderr that is cleared
// before each defect line and at the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PathResult } from '../../src/cache/verify.js';
import { createVerifyProgress, defectLine } from '../../src/cli/verify-progress.js';

function fakeStream(isTTY: boolean): { writes: string[]; isTTY: boolean; columns: number; write(s: string): boolean } {
  const writes: string[] = [];
  return { writes, isTTY, columns: 80, write: (s: string) => (writes.push(s), true) };
}

const result = (path: string, defects: number): PathResult => ({
  path,
  fileBytes: 10,
  narBytes: 20,
  defects: Array.from({ length: defects }, (_, i) => ({ path, key: `k${i}`, kind: 'file-size' as const, message: `defect ${i}` })),
});

function play(isTTY: boolean, json: boolean): { out: string[]; err: string[] } {
  const out = fakeStream(false);
  const err = fakeStream(isTTY);
  const sink = createVerifyProgress(out as unknown as NodeJS.WritableStream, err as unknown as NodeJS.WritableStream, json);
  sink({ type: 'listed', total: 3 });
  sink({ type: 'bytes', fileBytes: 10 });
  sink({ type: 'checked', result: result('/nix/store/a', 0) });
  sink({ type: 'checked', result: result('/nix/store/b', 2) });
  sink({ type: 'checked', result: result('/nix/store/c', 0) });
  sink.done();
  return { out: out.writes, err: err.writes };
}

test('on a terminal: a status line on stderr, cleared before defect lines and at the end', () => {
  const { out, err } = play(true, false);
  assert.deepEqual(out, ['/nix/store/b: defect 0\n', '/nix/store/b: defect 1\n']);
  assert.ok(err.some((w) => w.startsWith('\r\x1b[K[1/3] ')), err.join('|'));
  assert.ok(err.some((w) => /^\r\x1b\[K\[3\/3\] .*, 2 defects$/.test(w)), err.join('|'));
  assert.equal(err.at(-1), '\r\x1b[K', 'the status line is cleared before the summary');
  assert.ok(!err.some((w) => w.includes('\n')), 'the status line never scrolls');
});

test('off a terminal: only the defect lines; with --json: nothing at all', () => {
  const plain = play(false, false);
  assert.deepEqual(plain.out, ['/nix/store/b: defect 0\n', '/nix/store/b: defect 1\n']);
  assert.deepEqual(plain.err, []);
  const json = play(true, true);
  assert.deepEqual(json.out, []);
  assert.deepEqual(json.err, []);
});

test('a defect line shows an object key with control characters escaped, on one line', () => {
  const line = defectLine({ path: '', key: 'nar/\x1b[2Jx\n.nar', kind: 'missing-cache-info', message: 'not referenced \u009b2J' });
  assert.equal(line, 'nar/\\x1b[2Jx\\n.nar: not referenced \\x9b2J\n');
});
