/** fast-check generators of valid narinfo records, shared by the narinfo and signing tests. */
import fc from 'fast-check';
import { NIX32_ALPHABET } from '../../src/hash/nix32.js';
import type { Hash } from '../../src/hash/hash.js';
import { StorePath, storePathNameError } from '../../src/store/store-path.js';
import { formatContentAddress } from '../../src/narinfo/content-address.js';
import { type NarInfo, sortReferences, sortUnique } from '../../src/narinfo/narinfo.js';

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=';

export const storePathArb: fc.Arbitrary<StorePath> = fc
  .record({
    hash: fc.string({ unit: fc.constantFrom(...NIX32_ALPHABET), minLength: 32, maxLength: 32 }),
    name: fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 60 }),
  })
  .filter(({ name }) => storePathNameError(name) === undefined)
  .map(({ hash, name }) => new StorePath(hash, name));

export const sha256Arb: fc.Arbitrary<Hash> = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((d) => ({ algo: 'sha256' as const, digest: Buffer.from(d) }));

/** A value that fits on one narinfo line. */
const lineArb = (minLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: 'grapheme', minLength, maxLength: 60 }).filter((s) => !/[\r\n]/.test(s));

const sigArb = fc
  .tuple(fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 20 }), fc.uint8Array({ minLength: 64, maxLength: 64 }))
  .map(([name, sig]) => `${name}:${Buffer.from(sig).toString('base64')}`);

const caArb = fc
  .record({
    method: fc.constantFrom('text' as const, 'flat' as const, 'recursive' as const),
    hash: sha256Arb,
  })
  .map(formatContentAddress);

export const narInfoArb: fc.Arbitrary<NarInfo> = fc
  .record(
    {
      storePath: storePathArb,
      url: lineArb(1),
      compression: lineArb(1),
      fileHash: sha256Arb,
      fileSize: fc.maxSafeNat(),
      narHash: sha256Arb,
      narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      references: fc.array(storePathArb, { maxLength: 6 }),
      selfReference: fc.boolean(),
      deriver: storePathArb,
      sigs: fc.array(fc.oneof(sigArb, lineArb(0)), { maxLength: 4 }),
      ca: caArb,
    },
    { requiredKeys: ['storePath', 'url', 'compression', 'narHash', 'narSize', 'references', 'selfReference', 'sigs'] },
  )
  .map(({ selfReference, references, sigs, ...rest }) => ({
    ...rest,
    references: sortReferences(selfReference ? [...references, rest.storePath] : references),
    sigs: sortUnique(sigs),
  }));
