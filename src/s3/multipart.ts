/**
 * Multipart arithmetic: the part size for an object of a given size, and the
 * ETag S3 gives the object, so that an upload whose final answer was lost (a
 * reset after CompleteMultipartUpload took effect) can be recognised as
 * complete instead of failing. Pure apart from hashing; never buffers data.
 *
 * S3, MinIO and Ceph RGW give a single PUT the ETag `md5(body)` and a
 * multipart object `md5(md5(part1) … md5(partN))-N`, where each md5(part) is
 * the ETag the server answered that UploadPart with: the object's ETag is
 * predicted from those answers, without hashing the body here. s3rver gives
 * every object `md5(body)`; for such a server the object is read back and
 * each part's bytes compared with its ETag (`partsMatch`), which is the rare
 * recovery path only.
 */
import { createHash } from 'node:crypto';

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

/** An ETag as a bare string: servers quote it (`"…"`), some also prefix `W/`. */
export function unquoteEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/"/g, '');
}

const MD5_HEX = /^[0-9a-f]{32}$/i;

/**
 * The ETag of a multipart object whose parts the server answered with
 * `partEtags` (in part order, quoted or not): `md5(concat(md5 of each
 * part))-N`. Undefined when a part's ETag is not an MD5 (encrypted objects on
 * AWS): then nothing can be predicted.
 */
export function multipartEtag(partEtags: readonly string[]): string | undefined {
  const digests: Buffer[] = [];
  for (const e of partEtags) {
    const hex = unquoteEtag(e);
    if (!MD5_HEX.test(hex)) return undefined;
    digests.push(Buffer.from(hex, 'hex'));
  }
  return `${createHash('md5').update(Buffer.concat(digests)).digest('hex')}-${digests.length}`;
}

/** One part of an upload as the server acknowledged it. */
export interface UploadedPart {
  readonly size: number;
  /** The ETag the server answered the UploadPart with (MD5 of the part's bytes on S3 and its kin). */
  readonly etag: string;
}

/**
 * What an upload would have made, had its final request (PutObject or
 * CompleteMultipartUpload) taken effect: what a HEAD of the key is compared
 * with when that request's answer was lost.
 */
export interface ExpectedObject {
  readonly size: number;
  /** The ETag (bare) S3 gives it; undefined when it cannot be predicted. */
  readonly etag: string | undefined;
  /** Multipart only: the parts, in order. */
  readonly parts?: readonly UploadedPart[];
}

/**
 * Whether `body` is exactly the parts, in order: each slice of a part's size
 * has the MD5 its ETag says and nothing is left over. Hashes as the bytes
 * stream past, one part at a time.
 */
export async function partsMatch(body: AsyncIterable<Uint8Array>, parts: readonly UploadedPart[]): Promise<boolean> {
  let i = 0;
  let inPart = 0;
  let hash = createHash('md5');
  const closePart = (): boolean => {
    const ok = hash.digest('hex') === unquoteEtag(parts[i]!.etag).toLowerCase();
    i++;
    inPart = 0;
    hash = createHash('md5');
    return ok;
  };
  // Empty parts (there are none but the single part of an empty body) close at once.
  const skipEmpty = (): boolean => {
    while (i < parts.length && parts[i]!.size === 0) if (!closePart()) return false;
    return true;
  };
  if (!skipEmpty()) return false;
  for await (const chunk of body) {
    let off = 0;
    while (off < chunk.byteLength) {
      if (i >= parts.length) return false; // longer than our parts
      const n = Math.min(chunk.byteLength - off, parts[i]!.size - inPart);
      hash.update(chunk.subarray(off, off + n));
      inPart += n;
      off += n;
      if (inPart === parts[i]!.size && (!closePart() || !skipEmpty())) return false;
    }
  }
  return i === parts.length && inPart === 0;
}
