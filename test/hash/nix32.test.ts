import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { nix32Decode, nix32Encode, nix32Length, isNix32 } from '../../src/hash/nix32.js';
import { formatHash, parseHash, sha256 } from '../../src/hash/hash.js';

test('nix32 golden vectors', () => {
  // sha256("abc") as Nix prints it (nix-hash --type sha256 --to-base32 ...).
  assert.equal(nix32Encode(createHash('sha256').update('abc').digest()), '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s');
  // sha256 of the empty string.
  assert.equal(nix32Encode(createHash('sha256').digest()), '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73');
  assert.equal(nix32Encode(Buffer.alloc(20)), '0'.repeat(32));
  assert.equal(nix32Encode(Buffer.alloc(0)), '');
  assert.equal(nix32Encode(Buffer.from([0x1f])), '0z');
  assert.equal(nix32Encode(Buffer.from([0xff])), '7z');
});

test('nix32 lengths', () => {
  assert.equal(nix32Length(32), 52);
  assert.equal(nix32Length(20), 32);
  assert.equal(nix32Length(64), 103);
  assert.equal(nix32Length(16), 26);
});

test('nix32 round trip (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 80 }), (bytes) => {
      const s = nix32Encode(bytes);
      assert.equal(s.length, nix32Length(bytes.length));
      assert.ok(isNix32(s, bytes.length));
      assert.deepEqual(nix32Decode(s, bytes.length), Buffer.from(bytes));
    }),
  );
});

test('nix32 rejects bad characters, wrong length and overflow', () => {
  const good = '1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s';
  assert.throws(() => nix32Decode(good.replace('1b', 'eb'), 32), { code: 'BAD_NIX32', message: /invalid character "e"/ });
  assert.throws(() => nix32Decode(good.replace('1b', 'ub'), 32), { code: 'BAD_NIX32' });
  assert.throws(() => nix32Decode(good.slice(1), 32), { code: 'BAD_NIX32', message: /length 51, expected 52/ });
  // 52 chars carry 260 bits; the top 4 must be zero for 32 bytes.
  assert.throws(() => nix32Decode('z' + good.slice(1), 32), { code: 'BAD_NIX32', message: /overflow/ });
  assert.throws(() => nix32Decode('é'.repeat(52), 32), { code: 'BAD_NIX32' });
  assert.equal(isNix32(good.toUpperCase(), 32), false);
});

test('hash strings: nix32, base16, base64 and SRI parse to the same hash', () => {
  const h = sha256('abc');
  const forms = [
    'sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s',
    'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    'sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD',
    'sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=',
    'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=',
  ];
  for (const f of forms) assert.deepEqual(parseHash(f), h, f);
  assert.deepEqual(parseHash('1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s', 'sha256'), h);
  assert.equal(formatHash(h), forms[0]);
  assert.equal(formatHash(h, 'base16'), forms[1]);
  assert.equal(formatHash(h, 'sri'), forms[4]);
});

test('hash strings: round trip in every encoding (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
      const h = { algo: 'sha256' as const, digest: Buffer.from(bytes) };
      for (const enc of ['nix32', 'base16', 'base64', 'sri'] as const) assert.deepEqual(parseHash(formatHash(h, enc)), h);
    }),
  );
});

test('hash strings: bad input', () => {
  assert.throws(() => parseHash('sha257:abc'), { code: 'BAD_HASH', message: /unknown hash algorithm 'sha257'/ });
  assert.throws(() => parseHash('sha256:abc'), { code: 'BAD_HASH', message: /wrong length/ });
  assert.throws(() => parseHash('sha256-abc'), { code: 'BAD_HASH', message: /invalid SRI/ });
  assert.throws(() => parseHash('1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'), { code: 'BAD_HASH', message: /does not say/ });
  assert.throws(() => parseHash('sha256:eb8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s'), { code: 'BAD_HASH' });
  assert.throws(() => parseHash('sha256:zg' + 'x'.repeat(62)), { code: 'BAD_HASH' });
});
