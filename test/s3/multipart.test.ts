// Part sizes, the ETag S3 gives a multipart object, and recognising our parts in a body read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import {
  DEFAULT_PART_SIZE, MAX_PARTS, choosePartSize, multipartEtag, partsMatch, unquoteEtag, type UploadedPart,
} from '../../src/s3/multipart.js';

const MiB = 1024 * 1024;
const md5 = (b: Uint8Array): Buffer => createHash('md5').update(b).digest();

test('part size: at least 5 MiB, whole MiB, and never more than 10,000 parts', () => {
  assert.equal(choosePartSize(0), 5 * MiB);
  assert.equal(choosePartSize(20 * MiB), 5 * MiB);
  assert.equal(choosePartSize(undefined), DEFAULT_PART_SIZE);
  assert.equal(choosePartSize(1000, 16 * MiB), 16 * MiB, 'multipart-chunk-size raises the floor');
  assert.equal(choosePartSize(5 * 1024 ** 4), 535 * MiB, '5 TiB, the S3 maximum object: 535 MiB parts');
  fc.assert(
    fc.property(fc.double({ min: 0, max: 4.9 * 1024 ** 4, noNaN: true }), (size) => {
      const p = choosePartSize(size);
      assert.ok(p >= 5 * MiB && p % MiB === 0);
      // Even 2% bigger than hinted (incompressible data after xz framing) still fits.
      assert.ok(Math.ceil((size * 1.02) / p) <= MAX_PARTS, `${size} in parts of ${p}`);
    }),
  );
});

/** What S3 documents: md5-of-part-md5s "-N" for a multipart upload. */
function documentedEtag(data: Buffer, partSize: number): string {
  const digests: Buffer[] = [];
  for (let off = 0; off < data.length; off += partSize) digests.push(md5(data.subarray(off, off + partSize)));
  return `${md5(Buffer.concat(digests)).toString('hex')}-${digests.length}`;
}

/** The parts of `data` as a server acknowledges them: size and ETag (md5 hex, quoted as S3 sends it). */
function partsOf(data: Buffer, partSize: number): UploadedPart[] {
  const parts: UploadedPart[] = [];
  for (let off = 0; off < data.length; off += partSize) {
    const p = data.subarray(off, off + partSize);
    parts.push({ size: p.length, etag: `"${md5(p).toString('hex')}"` });
  }
  return parts;
}

async function* cut(data: Buffer, cuts: readonly number[]): AsyncGenerator<Uint8Array> {
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = cuts[i % cuts.length]!;
    yield data.subarray(off, off + n);
    off += n;
  }
}

test('the multipart ETag predicted from the parts\' ETags is the documented one', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 400 }), (partSize, size) => {
      const data = randomBytes(size);
      assert.equal(multipartEtag(partsOf(data, partSize).map((p) => p.etag)), documentedEtag(data, partSize));
    }),
  );
  assert.equal(unquoteEtag('W/"abc"'), 'abc');
  // Not an MD5 (an encrypted object on AWS): nothing to predict.
  assert.equal(multipartEtag(['"0123"', md5(Buffer.from('x')).toString('hex')]), undefined);
});

test('partsMatch: a body read back is our parts however it is chunked, and nothing else is', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 400 }),
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
      async (partSize, size, cuts) => {
        const data = randomBytes(size);
        const parts = partsOf(data, partSize);
        assert.equal(await partsMatch(cut(data, cuts), parts), true);
        const flipped = Buffer.from(data);
        flipped[size >> 1]! ^= 1;
        assert.equal(await partsMatch(cut(flipped, cuts), parts), false, 'one bit differs');
        assert.equal(await partsMatch(cut(Buffer.concat([data, Buffer.from([0])]), cuts), parts), false, 'one byte more');
        assert.equal(await partsMatch(cut(data.subarray(1), cuts), parts), false, 'one byte less');
      },
    ),
  );
  assert.equal(await partsMatch(cut(Buffer.alloc(0), [1]), [{ size: 0, etag: md5(Buffer.alloc(0)).toString('hex') }]), true);
});
