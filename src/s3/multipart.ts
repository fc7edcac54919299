/**
 * Multipart arithmetic: the part size for an object of a given size, and the
 * ETag S3 gives the object, computed as the bytes stream past, so that an
 * upload whose final answer was lost (a reset after CompleteMultipartUpload
 * took effect) can be recognised as complete by a HEAD instead of failing.
 * Pure apart from hashing; never buffers data.
 */
import { createHash, type Hash } from 'node:crypto';

/** S3's limits on a multipart upload: parts per object, and the size of one part. */
export const MAX_PARTS = 10_000;
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
const MiB = 1024 * 1024;

/** Part size when the caller gives no size hint: objects up to 10,000 x 8 MiB (78 GiB). */
export const DEFAULT_PART_SIZE = 8 * MiB;

/**
 * The part size for an object of about `sizeHint` bytes: at least `minPartSize`
 * (S3's floor is 5 MiB) and large enough that the object fits in 10,000 parts
 * with room to spare, since a compressed NAR can come out slightly larger than
 * the NarSize it was hinted with. Whole MiB, capped at S3's 5 GiB per part.
 */
export function choosePartSize(sizeHint: number | undefined, minPartSize: number = MIN_PART_SIZE): number {
  const floor = Math.max(MIN_PART_SIZE, minPartSize);
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint < 0) return Math.max(floor, DEFAULT_PART_SIZE);
  // 2% + 1 MiB headroom: xz and zstd expand incompressible data by far less than that.
  const needed = Math.ceil((sizeHint * 1.02 + MiB) / MAX_PARTS);
  return Math.min(MAX_PART_SIZE, Math.max(floor, Math.ceil(needed / MiB) * MiB));
}

/**
 * MD5 of the whole stream and of each `partSize` slice, as lib-storage cuts
 * them. S3, MinIO and most servers give a multipart object the ETag
 * `md5(md5(part1) … md5(partN))-N` and a single PUT `md5(body)`; s3rver
 * gives every object `md5(body)`. Both are offered.
 */
export class EtagTracker {
  private readonly whole: Hash = createHash('md5');
  private part: Hash = createHash('md5');
  private inPart = 0;
  private readonly partDigests: Buffer[] = [];
  bytes = 0;

  constructor(private readonly partSize: number) {}

  update(chunk: Uint8Array): void {
    this.whole.update(chunk);
    this.bytes += chunk.byteLength;
    let off = 0;
    while (off < chunk.byteLength) {
      const n = Math.min(chunk.byteLength - off, this.partSize - this.inPart);
      this.part.update(chunk.subarray(off, off + n));
      this.inPart += n;
      off += n;
      if (this.inPart === this.partSize) {
        this.partDigests.push(this.part.digest());
        this.part = createHash('md5');
        this.inPart = 0;
      }
    }
  }

  /** The ETags (without quotes) the finished object may carry. Call once, at the end of the stream. */
  finish(): string[] {
    const wholeHex = this.whole.digest('hex');
    if (this.inPart > 0) this.partDigests.push(this.part.digest());
    const parts = this.partDigests.length;
    // lib-storage sends a body of at most one part as a single PUT.
    if (parts <= 1) return [wholeHex];
    const multi = `${createHash('md5').update(Buffer.concat(this.partDigests)).digest('hex')}-${parts}`;
    return [multi, wholeHex];
  }
}
