/**
 * The settings `upload-path` and `daemon` share, read once from their flags
 * and the cache URL (flags win): compression, parallel jobs, signing keys,
 * what nix-cache-info should say, and upstream filtering. Every problem is a one-line error
 * before anything is uploaded.
 */
import { NarpushError } from '../errors.js';
import type { CacheInfo } from '../cache/cache-info.js';
import type { ListingOptions } from '../cache/nar-producers.js';
import type { MetadataCompressions } from '../cache/stage.js';
import { MAX_LISTING_BYTES } from '../nar/listing.js';
import type { CacheConfig } from './cache-url.js';
import { type CompressionOptions, compressionLevel, compressionThreads, parseCompression } from '../cache/compression.js';
import { readSecretKeyFile } from '../signing/key-file.js';
import type { SecretKey } from '../signing/keys.js';
import { type UpstreamFlags, type UpstreamSettings, upstreamSettings } from './upstream-settings.js';
import { parseDuration } from './duration.js';

export const DEFAULT_JOBS = 4;
export const MAX_JOBS = 256;
/** Renew a narinfo an upload relies on once it is this old (see cache/refresh.ts): --keep-since of narpush gc must exceed it plus the longest upload. */
export const DEFAULT_NARINFO_REFRESH_AGE_MS = 86_400_000;

export interface UploadFlags extends UpstreamFlags {
  readonly secretKeyFile: readonly string[];
  readonly compression?: string;
  readonly compressionLevel?: string;
  readonly jobs?: string;
  readonly narinfoRefreshAge?: string;
}

export interface UploadSettings {
  readonly compression: CompressionOptions;
  readonly jobs: number;
  readonly signingKeys: readonly SecretKey[];
  readonly cacheInfo: CacheInfo;
  readonly upstream: UpstreamSettings;
  /** With `write-nar-listing=true`: each path's `.ls` listing, capped (see nar/listing.ts). */
  readonly listing?: ListingOptions;
  /** s3:// narinfo-compression and ls-compression. */
  readonly metadataCompression?: MetadataCompressions;
  readonly refreshAgeMs: number;
}

/** A whole number within [min, max], or a BAD_OPTION error naming the flag. */
export function wholeNumber(flag: string, s: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(s) || Number(s) < min || Number(s) > max) {
    throw new NarpushError('BAD_OPTION', `${flag} takes a whole number from ${min} to ${max}, not '${s}'`);
  }
  return Number(s);
}

export async function uploadSettings(flags: UploadFlags, config: CacheConfig, storeDir: string): Promise<UploadSettings> {
  const method = flags.compression ? parseCompression(flags.compression) : (config.params.compression ?? 'xz');
  const levelGiven =
    flags.compressionLevel !== undefined
      ? wholeNumber('--compression-level', flags.compressionLevel, -1e6, 1e6)
      : config.params.compressionLevel;
  const level = levelGiven === undefined ? undefined : compressionLevel(method, levelGiven);
  const jobs = flags.jobs !== undefined ? wholeNumber('--jobs', flags.jobs, 1, MAX_JOBS) : DEFAULT_JOBS;
  const upstream = upstreamSettings(flags, process.cwd());
  const signingKeys: SecretKey[] = [];
  for (const f of new Set([...flags.secretKeyFile, ...config.params.secretKeyFiles])) signingKeys.push(await readSecretKeyFile(f));
  const refreshAgeMs =
    flags.narinfoRefreshAge !== undefined ? parseDuration('--narinfo-refresh-age', flags.narinfoRefreshAge) : DEFAULT_NARINFO_REFRESH_AGE_MS;
  return {
    refreshAgeMs,
    compression: { method, ...(level !== undefined ? { level } : {}), ...compressionThreads(config.params.parallelCompression) },
    jobs,
    signingKeys,
    upstream,
    ...(config.params.writeNarListing === true ? { listing: { maxBytes: MAX_LISTING_BYTES } } : {}),
    ...(config.kind === 's3' && (config.narinfoCompression !== undefined || config.lsCompression !== undefined)
      ? { metadataCompression: { narinfo: config.narinfoCompression ?? 'none', listing: config.lsCompression ?? 'none' } }
      : {}),
    cacheInfo: {
      storeDir,
      wantMassQuery: config.params.wantMassQuery ?? true,
      ...(config.params.priority !== undefined ? { priority: config.params.priority } : {}),
    },
  };
}
