// Error messages quote bytes from caches, S3 servers and files that anyone
// may have written: what reaches a terminal must stay one line and must not
// drive the terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NarpushError, printable } from '../src/errors.js';

/** What a terminal acts on, or what ends or reorders a line. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

test('printable escapes controls, C1, bidi marks and line ends, and keeps the rest', () => {
  assert.equal(printable('a\nb\r\tc'), 'a\\nb\\r\\tc');
  assert.equal(printable('\x1b[2J\x07'), '\\x1b[2J\\x07');
  assert.equal(printable('\u009b31m'), '\\x9b31m');
  assert.equal(printable('x\u202ey\u2066z\u2028'), 'x\\u202ey\\u2066z\\u2028');
  assert.equal(printable('\x7f'), '\\x7f');
  // Text people write is left as it is.
  assert.equal(printable("café /home/ünïcode 'x' \"y\" \\ 日本 \ufffd"), "café /home/ünïcode 'x' \"y\" \\ 日本 \ufffd");
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
      const p = printable(s);
      assert.doesNotMatch(p, UNSAFE);
      // Nothing safe is changed.
      if (!UNSAFE.test(s)) assert.equal(p, s);
    }),
  );
});

test('a NarpushError is one printable line whatever its message quotes', () => {
  const e = new NarpushError('BAD_NARINFO', 'narinfo is corrupt: got "\x1b]0;pwned\x07\nsecond line\u009b2J"');
  assert.equal(e.message, 'narinfo is corrupt: got "\\x1b]0;pwned\\x07\\nsecond line\\x9b2J"');
  assert.equal(e.code, 'BAD_NARINFO');
});
