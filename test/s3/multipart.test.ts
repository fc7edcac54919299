// Part sizes and the ETags S3 gives multipart and single-PUT objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { EtagTracker, MAX_PARTS, choosePartSize, DEFAULT_PART_SIZE } from '../../src/s3/multipart.js';

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

/** What S3 documents: md5 of a single PUT, md5-of-part-md5s "-N" for a multipart upload. */
function expectedEtags(data: Buffer, partSize: number): string[] {
  const whole = md5(data).toString('hex');
  if (data.length <= partSize) return [whole];
  const digests: Buffer[] = [];
  for (let off = 0; off < data.length; off += partSize) digests.push(md5(data.subarray(off, off + partSize)));
  return [`${md5(Buffer.concat(digests)).toString('hex')}-${digests.length}`, whole];
}

test('ETags computed on the fly match the slices, however the stream is chunked', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 0, max: 400 }),
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 20 }),
      (partSize, size, cuts) => {
        const data = randomBytes(size);
        const t = new EtagTracker(partSize);
        let off = 0;
        for (let i = 0; off < size; i++) {
          const n = cuts[i % cuts.length]!;
          t.update(data.subarray(off, off + n));
          off += n;
        }
        assert.equal(t.bytes, size);
        assert.deepEqual(t.finish(), expectedEtags(data, partSize));
      },
    ),
  );
});
