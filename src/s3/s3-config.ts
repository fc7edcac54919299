/**
 * What the s3:// backend needs to know about its bucket: the part of a
 * parsed `--to` URL that is S3's (cli/cache-url.ts builds it). S3's own
 * names and limits live in this folder (part sizes: multipart.ts), so the
 * URL parser asks S3 what it accepts, never the other way round.
 */

import type { MetadataCompression } from '../cache/content-encoding.js';

/** S3 storage classes Nix documents for `storage-class`, plus the newer ones S3 accepts. */
export const STORAGE_CLASSES = [
  'STANDARD', 'REDUCED_REDUNDANCY', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING',
  'GLACIER', 'DEEP_ARCHIVE', 'GLACIER_IR', 'OUTPOSTS', 'SNOW', 'EXPRESS_ONEZONE',
] as const;
export type StorageClass = (typeof STORAGE_CLASSES)[number];

export interface S3Config {
  readonly bucket: string;
  /** `region`, default `us-east-1` as in Nix. */
  readonly region: string;
  /** `http` or `https`: from the endpoint URL when it has one, else `scheme`, else https. */
  readonly scheme: 'http' | 'https';
  /** `endpoint` as `scheme://host[:port]`, or undefined for AWS itself. */
  readonly endpoint?: string;
  /** `profile` of the shared AWS config/credentials files; undefined: the SDK's default chain. */
  readonly profile?: string;
  /** Path-style requests (`bucket` in the path, not the host name). */
  readonly forcePathStyle: boolean;
  readonly storageClass?: StorageClass;
  /** The smallest part size to use (at least MIN_PART_SIZE). */
  readonly minPartSize?: number;
  /** How long a TCP/TLS connection may take to open. */
  readonly connectTimeoutMs?: number;
  /** How long a request may see no byte either way (first byte, body) before it counts as dead. */
  readonly idleTimeoutMs?: number;
  /**
   * `checksum`: whether requests carry the SDK's flexible checksums (CRC32 of
   * every body) and answers are checked against them. `when-required`
   * (default): only where S3 requires one, as Nix sends none; many
   * S3-compatible servers reject them (see S3_CHECKSUM_MODES).
   * `when-supported`: on every request that can carry one (AWS S3 itself).
   */
  readonly checksum?: S3ChecksumMode;
  /** `narinfo-compression`: narinfos uploaded compressed, with that Content-Encoding; default none. */
  readonly narinfoCompression?: Exclude<MetadataCompression, 'none'>;
  /** `ls-compression`: `.ls` listings (with write-nar-listing) uploaded compressed, likewise. */
  readonly lsCompression?: Exclude<MetadataCompression, 'none'>;
  /** `log-compression`: build logs (log/<drv>) uploaded compressed, likewise. */
  readonly logCompression?: Exclude<MetadataCompression, 'none'>;
  /** For logs and messages; never contains secrets. */
  readonly description: string;
}

/**
 * The values of the `checksum` URL parameter. Servers known to reject
 * `when-supported` (the SDK's own default since v3.729): Ceph RGW for
 * streamed bodies (HTTP 411), Garage, Cloudflare R2 and older MinIO (attic#267).
 */
export const S3_CHECKSUM_MODES = ['when-required', 'when-supported'] as const;
export type S3ChecksumMode = (typeof S3_CHECKSUM_MODES)[number];
