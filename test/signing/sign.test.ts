/**
 * Signing and verification without Nix: RFC 8032 vectors, and properties that
 * a verifier must have (its own signatures verify; anything changed does not;
 * unknown key names and malformed signatures are simply not valid).
 * Agreement with Nix's own signatures is in sign-nix.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { newSecretKey, toPublicKey, type PublicKey } from '../../src/signing/keys.js';
import { signFingerprint, signNarInfo, trustedKeyMap, verifyNarInfo, verifySignature } from '../../src/signing/sign.js';
import { narInfoFingerprint } from '../../src/narinfo/fingerprint.js';
import { narInfoArb } from '../narinfo/arbitraries.js';

test('RFC 8032 section 7.1 test vectors (TEST 1 and TEST 2)', () => {
  const vectors = [
    {
      seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
      pub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
      msg: '',
      sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    },
    {
      seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
      pub: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
      msg: 'r', // 0x72
      sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
    },
  ];
  for (const v of vectors) {
    const key = newSecretKey('rfc8032', Buffer.from(v.seed, 'hex'));
    assert.equal(Buffer.from(toPublicKey(key).publicKey).toString('hex'), v.pub);
    const sig = signFingerprint(v.msg, key);
    assert.equal(sig, `rfc8032:${Buffer.from(v.sig, 'hex').toString('base64')}`);
    assert.equal(verifySignature(v.msg, sig, [toPublicKey(key)]), true);
  }
});

test('signatures verify, and fail for any change (property)', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.string({ minLength: 1 }),
      fc.nat(),
      (seed, otherSeed, fp, flip) => {
        const key = newSecretKey('k-1', seed);
        const trusted = [toPublicKey(key)];
        const sig = signFingerprint(fp, key);
        assert.equal(verifySignature(fp, sig, trusted), true);
        assert.equal(verifySignature(fp + 'x', sig, trusted), false, 'another fingerprint');
        // One bit of the signature flipped.
        const raw = Buffer.from(sig.slice(4), 'base64');
        raw[flip % 64] = raw[flip % 64]! ^ (1 << (flip % 8));
        assert.equal(verifySignature(fp, `k-1:${raw.toString('base64')}`, trusted), false, 'a flipped bit');
        // The same name on another key, or the right key under another name.
        if (!Buffer.from(seed).equals(Buffer.from(otherSeed))) {
          assert.equal(verifySignature(fp, sig, [toPublicKey(newSecretKey('k-1', otherSeed))]), false, 'another key');
        }
        assert.equal(verifySignature(fp, sig, [{ ...trusted[0]!, name: 'k-2' }]), false, 'another name');
      },
    ),
    { numRuns: 25 },
  );
});

test('malformed signatures are not valid (and do not throw)', () => {
  const key = newSecretKey('k-1', Buffer.alloc(32, 3));
  const trusted = [toPublicKey(key)];
  const sig = signFingerprint('fp', key);
  const body = sig.slice(4);
  for (const bad of ['', ':', 'k-1', 'k-1:', `:${body}`, `k-1:${body.slice(0, -4)}`, `k-1:${body}AAAA`, `k-1:${body.replace(/==$/, '')}`, `k-1:!${body.slice(1)}`, ` k-1:${body}`, `k-1 :${body}`]) {
    assert.equal(verifySignature('fp', bad, trusted), false, JSON.stringify(bad));
  }
  assert.equal(verifySignature('fp', sig, []), false, 'no trusted keys');
});

test('trusted keys: a map or a list; for a name listed twice the first wins, as in Nix', () => {
  const a = newSecretKey('k-1', Buffer.alloc(32, 1));
  const b = newSecretKey('k-1', Buffer.alloc(32, 2));
  const sigA = signFingerprint('fp', a);
  const list: PublicKey[] = [toPublicKey(a), toPublicKey(b)];
  assert.equal(verifySignature('fp', sigA, list), true);
  assert.equal(verifySignature('fp', sigA, list.reverse()), false);
  assert.equal(verifySignature('fp', sigA, new Map([['k-1', toPublicKey(a)]])), true);
  assert.equal(trustedKeyMap(new Set([toPublicKey(a)])).size, 1);
});

test('signNarInfo adds one signature per key, sorted and without duplicates; verifyNarInfo counts the valid ones', () => {
  const k1 = newSecretKey('b-1', Buffer.alloc(32, 1));
  const k2 = newSecretKey('a-1', Buffer.alloc(32, 2));
  const k3 = newSecretKey('c-1', Buffer.alloc(32, 3));
  fc.assert(
    fc.property(narInfoArb, (info0) => {
      const info = { ...info0, sigs: [] };
      const once = signNarInfo(info, [k1, k2]);
      assert.equal(once.sigs.length, 2);
      assert.deepEqual(once.sigs, [...once.sigs].sort());
      assert.deepEqual(signNarInfo(once, k1), once, 'signing again adds nothing');
      assert.deepEqual({ ...once, sigs: [] }, info, 'nothing else changes');
      assert.equal(verifyNarInfo(once, [toPublicKey(k1), toPublicKey(k2), toPublicKey(k3)]), 2);
      assert.equal(verifyNarInfo(once, [toPublicKey(k1)]), 1);
      assert.equal(verifyNarInfo(once, [toPublicKey(k3)]), 0);
      assert.equal(verifyNarInfo({ ...once, narSize: once.narSize === 1 ? 2 : 1 }, [toPublicKey(k1)]), 0);
      // A garbage signature next to a good one does not count, and does not stop the good one counting.
      const withJunk = { ...once, sigs: [...once.sigs, 'b-1:AAAA', 'unknown-1:xyz'] };
      assert.equal(verifyNarInfo(withJunk, [toPublicKey(k1), toPublicKey(k2)]), 2);
      assert.equal(signFingerprint(narInfoFingerprint(info), k1), once.sigs.find((s) => s.startsWith('b-1:')));
    }),
    { numRuns: 15 },
  );
});

test('OpenSSL (node:crypto) and tweetnacl make the same signatures, and each verifies the other', async () => {
  const nacl = (await import('tweetnacl')).default;
  const { newSecretKey, toPublicKey } = await import('../../src/signing/keys.js');
  const { signFingerprint, verifySignature } = await import('../../src/signing/sign.js');
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.string({ maxLength: 300 }), (seed, fp) => {
      const key = newSecretKey('k-1', seed);
      const ours = signFingerprint(fp, key);
      const theirs = Buffer.from(nacl.sign.detached(Buffer.from(fp, 'utf8'), key.secretKey)).toString('base64');
      assert.equal(ours, `k-1:${theirs}`);
      assert.ok(nacl.sign.detached.verify(Buffer.from(fp, 'utf8'), Buffer.from(theirs, 'base64'), toPublicKey(key).publicKey));
      assert.ok(verifySignature(fp, `k-1:${theirs}`, [toPublicKey(key)]));
    }),
    { numRuns: 200 },
  );
});

test('public keys derived by OpenSSL equal tweetnacl (libsodium layout) for any seed', async () => {
  const nacl = (await import('tweetnacl')).default;
  const { publicKeyFromSeed, newSecretKey, parseSecretKey, formatSecretKey } = await import('../../src/signing/keys.js');
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (seed) => {
      const want = nacl.sign.keyPair.fromSeed(seed);
      assert.ok(publicKeyFromSeed(seed).equals(Buffer.from(want.publicKey)));
      const key = newSecretKey('k-1', seed);
      assert.ok(Buffer.from(key.secretKey).equals(Buffer.from(want.secretKey)));
      assert.deepEqual(parseSecretKey(formatSecretKey(key)).secretKey, key.secretKey);
    }),
    { numRuns: 200 },
  );
});
