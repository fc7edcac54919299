/**
 * `--to` URLs: `file://<dir>` and `s3://<bucket>?region=…&endpoint=…`, parsed
 * once into a typed, read-only config with the meanings Nix gives them
 * (NixOS/nix `s3-binary-cache-store.hh`, `s3-url.cc`, `binary-cache-store.hh`).
 *
 * Pure: no I/O, no environment. An unknown scheme or parameter, a value Nix or
 * S3 would reject, or a setting narpush cannot honour is a BAD_CACHE_URL
 * error rather than something silently ignored. A `description` never carries
 * secrets (a URL cannot hold credentials: userinfo in an endpoint is refused).
 */
import * as nodePath from 'node:path';
import { NarpushError } from '../errors.js';

import { COMPRESSIONS, LEVEL_RANGES, type Compression } from '../cache/compression.js';
import { MAX_PART_SIZE, MIN_PART_SIZE } from '../s3/multipart.js';
import { type MetadataCompression, WRITTEN_CONTENT_ENCODINGS } from '../cache/content-encoding.js';
import { S3_CHECKSUM_MODES, STORAGE_CLASSES, type S3ChecksumMode, type S3Config, type StorageClass } from '../s3/s3-config.js';

export { COMPRESSIONS, type Compression };
export { STORAGE_CLASSES, type StorageClass };

export type AddressingStyle = 'auto' | 'path' | 'virtual';

/**
 * Binary-cache store parameters (Nix's BinaryCacheStoreConfig and StoreConfig)
 * that mean something to narpush. Absent means "not given": the caller applies
 * its own default (and command-line flags, which win over the URL).
 */
export interface CacheParams {
  readonly compression?: Compression;
  /** `compression-level`; Nix's -1 ("the method's default") is left undefined. */
  readonly compressionLevel?: number;
  readonly parallelCompression?: boolean;
  /** `secret-key` then the comma-separated `secret-keys`, in that order. */
  readonly secretKeyFiles: readonly string[];
  readonly wantMassQuery?: boolean;
  readonly priority?: number;
  /** `write-nar-listing`: write `<hashpart>.ls` beside each narinfo (default off, as in Nix). */
  readonly writeNarListing?: boolean;
}

export interface FileCacheConfig {
  readonly kind: 'file';
  /** Absolute directory of the cache. */
  readonly dir: string;
  readonly params: CacheParams;
  readonly description: string;
}

/** The s3:// backend's own config (S3Config), with the URL's meanings of its fields, and the cache's parameters. */
export interface S3CacheConfig extends S3Config {
  readonly kind: 's3';
  readonly bucket: string;
  /** `region`, default `us-east-1` as in Nix. */
  readonly region: string;
  /** `http` or `https`: from the endpoint URL when it has one, else `scheme`, else https. */
  readonly scheme: 'http' | 'https';
  /** `endpoint` as `scheme://host[:port]`, or undefined for AWS itself. */
  readonly endpoint?: string;
  /** `profile` of the shared AWS config/credentials files; undefined: the SDK's default chain. */
  readonly profile?: string;
  readonly addressingStyle: AddressingStyle;
  /** The result of `addressing-style`: path-style for custom endpoints and dotted buckets unless told otherwise. */
  readonly forcePathStyle: boolean;
  readonly storageClass?: StorageClass;
  /** `multipart-chunk-size` (alias `buffer-size`): the smallest part size to use. */
  readonly minPartSize?: number;
  /** `multipart-upload` as given; narpush streams, so objects larger than one part always go multipart. */
  readonly multipartUpload?: boolean;
  /** `connect-timeout` (seconds in the URL): how long a TCP/TLS connection may take to open. */
  readonly connectTimeoutMs?: number;
  /** `idle-timeout` (seconds in the URL): how long a request may see no byte either way (first byte, body) before it counts as dead. */
  readonly idleTimeoutMs?: number;
  readonly params: CacheParams;
  readonly description: string;
}

export type CacheConfig = FileCacheConfig | S3CacheConfig;

export interface ParseCacheUrlOptions {
  /** Directory that a relative `file://dir` is resolved against; without it a relative path is an error. */
  readonly cwd?: string;
}

function bad(url: string, why: string): NarpushError {
  // One line whatever the input holds: control characters are shown escaped.
  const msg = `invalid cache URL '${redact(url)}': ${why}`.replace(
    /[\0-\x1f\x7f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
  return new NarpushError('BAD_CACHE_URL', msg);
}

/** Userinfo never reaches a message, whatever else is wrong with the URL. */
function redact(url: string): string {
  return url.replace(/(:\/\/)[^/?#@]*@/g, '$1***@');
}

// Parameters Nix knows that narpush deliberately does not support: say so instead of "unknown".
const NIX_ONLY: Record<string, string> = {
  'index-debug-info': 'narpush does not index debug info',
  'local-nar-cache': 'it only matters when reading a cache',
  'path-info-cache-size': 'it only matters when reading a cache',
  'multipart-threshold': 'narpush uses one PUT for objects that fit in one part and multipart for the rest',
  'tls-certificate': 'narpush does not use TLS client certificates',
  'tls-private-key': 'narpush does not use TLS client certificates',
  'use-transfer-acceleration': 'narpush does not use S3 transfer acceleration',
  store: 'the cache always declares the store directory of the local store',
  'system-features': 'it does not apply to binary caches',
  trusted: 'it does not apply to uploads',
  public: 'it only matters when reading a cache',
  versionId: 'it only matters when reading a cache',
};

const COMMON_PARAMS = new Set([
  'compression', 'compression-level', 'parallel-compression', 'secret-key', 'secret-keys',
  'want-mass-query', 'priority', 'write-nar-listing',
]);
const S3_PARAMS = new Set([
  'region', 'endpoint', 'profile', 'scheme', 'addressing-style', 'storage-class',
  'multipart-upload', 'multipart-chunk-size', 'buffer-size', 'narinfo-compression', 'ls-compression', 'log-compression',
  'connect-timeout', 'idle-timeout', 'checksum',
]);

/** Parse a `--to` URL. Throws NarpushError('BAD_CACHE_URL') with a one-line reason. */
export function parseCacheUrl(url: string, options: ParseCacheUrlOptions = {}): CacheConfig {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^?#]*)(?:\?([^#]*))?(#.*)?$/s.exec(url);
  if (!m) {
    if (url.startsWith('/')) throw bad(url, `a cache directory is written file://${url}`);
    throw bad(url, 'expected file://<dir> or s3://<bucket>[?parameters]');
  }
  const scheme = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (m[4] !== undefined) throw bad(url, 'a cache URL has no #fragment');
  if (/[\0-\x1f\x7f]/.test(url)) throw bad(url, 'control characters are not allowed');
  const query = parseQuery(url, m[3]);

  if (scheme === 'file') return parseFile(url, rest, query, options);
  if (scheme === 's3') return parseS3(url, rest, query);
  throw bad(url, `unknown scheme '${scheme}': narpush writes to file:// and s3:// caches`);
}

type Query = Map<string, string>;

function parseQuery(url: string, raw: string | undefined): Query {
  const q: Query = new Map();
  if (raw === undefined || raw === '') return q;
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw bad(url, `parameter '${decode(url, part)}' needs a value (name=value)`);
    const name = decode(url, part.slice(0, eq));
    const value = decode(url, part.slice(eq + 1));
    if (q.has(name)) throw bad(url, `parameter '${name}' is given twice`);
    q.set(name, value);
  }
  return q;
}

function decode(url: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw bad(url, `bad percent-encoding in '${s}'`);
  }
}

function checkNames(url: string, query: Query, allowed: ReadonlySet<string>, scheme: string): void {
  for (const name of query.keys()) {
    if (allowed.has(name)) continue;
    const why = NIX_ONLY[name];
    if (why !== undefined) throw bad(url, `parameter '${name}' is not supported by narpush: ${why}`);
    if (S3_PARAMS.has(name)) throw bad(url, `parameter '${name}' only applies to s3:// caches`);
    throw bad(url, `unknown parameter '${name}' for a ${scheme}:// cache`);
  }
}

// Nix's Setting<bool> accepts exactly these spellings.
function bool(url: string, name: string, v: string): boolean {
  if (v === 'true' || v === 'yes' || v === '1') return true;
  if (v === 'false' || v === 'no' || v === '0') return false;
  throw bad(url, `parameter '${name}' must be true or false, not '${v}'`);
}

function int(url: string, name: string, v: string, min: number, max: number): number {
  if (!/^-?[0-9]+$/.test(v)) throw bad(url, `parameter '${name}' must be an integer, not '${v}'`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw bad(url, `parameter '${name}' must be between ${min} and ${max}, not ${v}`);
  }
  return n;
}

/** Seconds, as Nix's connect-timeout; fractions are allowed (tests use short timeouts). */
function seconds(url: string, name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(v) || n < min || n > max) {
    throw bad(url, `parameter '${name}' must be a number of seconds from ${min} to ${max}, not '${v}'`);
  }
  return Math.round(n * 1000);
}

function compression(url: string, name: string, v: string): Compression {
  if ((COMPRESSIONS as readonly string[]).includes(v)) return v as Compression;
  throw bad(url, `${name} '${v}' is not supported by narpush (use ${COMPRESSIONS.join(', ')})`);
}

function nonEmpty(url: string, name: string, v: string): string {
  if (v === '') throw bad(url, `parameter '${name}' is empty`);
  return v;
}

const LEVELS: Record<Compression, readonly [number, number]> = {
  xz: [LEVEL_RANGES.xz.min, LEVEL_RANGES.xz.max],
  zstd: [LEVEL_RANGES.zstd.min, LEVEL_RANGES.zstd.max],
  none: [0, 0],
};

/**
 * `narinfo-compression`, `ls-compression`, `log-compression`: br, or none
 * (or empty, Nix's default). Undefined for none. Nix can also write xz,
 * zstd, gzip and bzip2 there, which narpush reads (but for bzip2) and does not write.
 */
function metadataCompression(url: string, q: Query, name: string): Exclude<MetadataCompression, 'none'> | undefined {
  const v = q.get(name);
  if (v === undefined || v === '' || v === 'none') return undefined;
  if (!(WRITTEN_CONTENT_ENCODINGS as readonly string[]).includes(v)) {
    throw bad(url, `${name} '${v}' is not one of ${WRITTEN_CONTENT_ENCODINGS.join(', ')} (narpush writes these objects Brotli-compressed or as they are)`);
  }
  return v as Exclude<MetadataCompression, 'none'>;
}

function parseCommon(url: string, q: Query): CacheParams {
  const get = (k: string): string | undefined => q.get(k);
  const comp = get('compression') === undefined ? undefined : compression(url, 'compression', get('compression')!);
  let compressionLevel: number | undefined;
  const level = get('compression-level');
  if (level !== undefined) {
    const [lo, hi] = comp === undefined ? [-1, 22] : LEVELS[comp];
    compressionLevel = level === '-1' ? undefined : int(url, 'compression-level', level, comp === undefined ? -1 : lo, hi);
    if (comp === 'none' && compressionLevel !== undefined) {
      throw bad(url, `compression-level does not apply to compression 'none'`);
    }
  }
  const secretKeyFiles: string[] = [];
  if (get('secret-key') !== undefined) secretKeyFiles.push(nonEmpty(url, 'secret-key', get('secret-key')!));
  if (get('secret-keys') !== undefined) {
    for (const f of get('secret-keys')!.split(',')) {
      if (f !== '') secretKeyFiles.push(f);
    }
  }
  const opt = <T>(k: string, f: (v: string) => T): T | undefined => {
    const v = get(k);
    return v === undefined ? undefined : f(v);
  };
  return {
    ...(comp !== undefined && { compression: comp }),
    ...(compressionLevel !== undefined && { compressionLevel }),
    ...opt('parallel-compression', (v) => ({ parallelCompression: bool(url, 'parallel-compression', v) })),
    secretKeyFiles,
    ...opt('want-mass-query', (v) => ({ wantMassQuery: bool(url, 'want-mass-query', v) })),
    ...opt('priority', (v) => ({ priority: int(url, 'priority', v, 0, 2 ** 31 - 1) })),
    ...opt('write-nar-listing', (v) => ({ writeNarListing: bool(url, 'write-nar-listing', v) })),
  };
}

function parseFile(url: string, rest: string, q: Query, options: ParseCacheUrlOptions): FileCacheConfig {
  checkNames(url, q, COMMON_PARAMS, 'file');
  // Nix takes everything after `file://` as the directory (so file:///abs is /abs).
  const raw = decode(url, rest);
  if (raw === '') throw bad(url, 'no directory: write file:///absolute/dir');
  if (raw.includes('\0')) throw bad(url, 'the directory contains a NUL byte');
  let dir: string;
  if (nodePath.isAbsolute(raw)) dir = nodePath.resolve(raw);
  else if (options.cwd !== undefined) dir = nodePath.resolve(options.cwd, raw);
  else throw bad(url, `'${raw}' is a relative path: write file:///absolute/dir`);
  const params = parseCommon(url, q);
  return Object.freeze({ kind: 'file', dir, params: Object.freeze(params), description: `file://${dir}` });
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const BAD_PREFIXES = ['xn--', 'sthree-', 'amzn-s3-demo-'];
const BAD_SUFFIXES = ['-s3alias', '--ol-s3', '.mrap', '--x-s3', '--table-s3'];

/** S3's naming rules for general purpose buckets; returns why a name is invalid, or undefined. */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 63) return 'must be 3 to 63 characters long';
  if (!BUCKET.test(name)) {
    return 'may only contain lowercase letters, digits, dots and hyphens, and must begin and end with a letter or digit';
  }
  if (name.includes('..')) return 'must not contain two adjacent dots';
  if (IPV4.test(name)) return 'must not look like an IP address';
  const prefix = BAD_PREFIXES.find((p) => name.startsWith(p));
  if (prefix) return `must not start with '${prefix}'`;
  const suffix = BAD_SUFFIXES.find((s) => name.endsWith(s));
  if (suffix) return `must not end with '${suffix}'`;
  return undefined;
}

const REGION = /^[a-z0-9]+(-[a-z0-9]+)*$/;
const HOST = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)(:(\d{1,5}))?$/;

function parseEndpoint(url: string, v: string, schemeParam: 'http' | 'https' | undefined): { endpoint: string; scheme: 'http' | 'https' } {
  if (v.includes('://')) {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      throw bad(url, `endpoint '${v}' is not a valid URL`);
    }
    if (u.username !== '' || u.password !== '') throw bad(url, 'the endpoint must not contain credentials');
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw bad(url, `endpoint scheme '${u.protocol.slice(0, -1)}' must be http or https`);
    }
    if (u.pathname !== '/' || u.search !== '' || u.hash !== '') {
      throw bad(url, `endpoint '${v}' must be scheme://host[:port] without a path or query`);
    }
    const scheme = u.protocol === 'http:' ? 'http' : 'https';
    if (schemeParam !== undefined && schemeParam !== scheme) {
      throw bad(url, `scheme=${schemeParam} contradicts the endpoint '${v}'`);
    }
    return { endpoint: `${scheme}://${u.host}`, scheme };
  }
  // Nix also accepts a bare authority (`minio.local:9000`); the scheme then comes from `scheme`.
  if (v.includes('@')) throw bad(url, 'the endpoint must not contain credentials');
  const hm = HOST.exec(v);
  if (!hm || (hm[6] !== undefined && (Number(hm[6]) < 1 || Number(hm[6]) > 65535))) {
    throw bad(url, `endpoint '${v}' is not host[:port] or an http(s) URL`);
  }
  const scheme = schemeParam ?? 'https';
  return { endpoint: `${scheme}://${new URL(`${scheme}://${v}`).host}`, scheme };
}

function parseS3(url: string, rest: string, q: Query): S3CacheConfig {
  checkNames(url, q, new Set([...COMMON_PARAMS, ...S3_PARAMS]), 's3');
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  if (slash >= 0 && rest.slice(slash) !== '/') {
    throw bad(url, 's3:// names a bucket only: a key prefix is not supported');
  }
  if (bucket.includes('@')) throw bad(url, 'credentials do not belong in the URL: use the AWS credential chain or profile=');
  if (bucket === '') throw bad(url, 'no bucket name');
  const bucketProblem = bucketNameProblem(bucket);
  if (bucketProblem) throw bad(url, `bucket name '${bucket}' ${bucketProblem}`);

  const region = q.get('region') ?? 'us-east-1';
  if (!REGION.test(region) || region.length > 64) throw bad(url, `region '${region}' is not a region name`);

  const schemeRaw = q.get('scheme');
  if (schemeRaw !== undefined && schemeRaw !== 'http' && schemeRaw !== 'https') {
    throw bad(url, `scheme must be http or https, not '${schemeRaw}'`);
  }
  const endpointRaw = q.get('endpoint');
  let scheme: 'http' | 'https' = schemeRaw ?? 'https';
  let endpoint: string | undefined;
  if (endpointRaw !== undefined) {
    ({ endpoint, scheme } = parseEndpoint(url, nonEmpty(url, 'endpoint', endpointRaw), schemeRaw));
  }

  const profile = q.get('profile');
  if (profile !== undefined && !/^[A-Za-z0-9_.+@-]+$/.test(profile)) {
    throw bad(url, `profile '${profile}' is not a profile name`);
  }

  const style = q.get('addressing-style') ?? 'auto';
  if (style !== 'auto' && style !== 'path' && style !== 'virtual') {
    throw bad(url, `addressing-style must be auto, path or virtual, not '${style}'`);
  }
  if (style === 'virtual' && bucket.includes('.')) {
    throw bad(url, `addressing-style=virtual cannot be used with the dotted bucket name '${bucket}'`);
  }
  // Nix: `auto` is virtual-hosted for AWS, path-style for custom endpoints and dotted buckets.
  const forcePathStyle = style === 'path' || (style === 'auto' && (endpoint !== undefined || bucket.includes('.')));

  const sc = q.get('storage-class');
  if (sc !== undefined && !(STORAGE_CLASSES as readonly string[]).includes(sc)) {
    throw bad(url, `storage-class '${sc}' is not one of ${STORAGE_CLASSES.join(', ')}`);
  }
  if (q.has('multipart-chunk-size') && q.has('buffer-size')) {
    throw bad(url, 'give multipart-chunk-size or its alias buffer-size, not both');
  }
  const chunkName = q.has('buffer-size') ? 'buffer-size' : 'multipart-chunk-size';
  const chunk = q.get(chunkName);
  const minPartSize = chunk === undefined ? undefined : int(url, chunkName, chunk, MIN_PART_SIZE, MAX_PART_SIZE);
  const mpu = q.get('multipart-upload');
  const narinfoC = metadataCompression(url, q, 'narinfo-compression');
  const lsC = metadataCompression(url, q, 'ls-compression');
  const logC = metadataCompression(url, q, 'log-compression');

  const connectRaw = q.get('connect-timeout');
  const connectTimeoutMs = connectRaw === undefined ? undefined : seconds(url, 'connect-timeout', connectRaw, 0.1, 3600);
  const idleRaw = q.get('idle-timeout');
  const idleTimeoutMs = idleRaw === undefined ? undefined : seconds(url, 'idle-timeout', idleRaw, 0.1, 3600);

  const checksum = q.get('checksum');
  if (checksum !== undefined && !(S3_CHECKSUM_MODES as readonly string[]).includes(checksum)) {
    throw bad(url, `checksum '${checksum}' is not one of ${S3_CHECKSUM_MODES.join(', ')}`);
  }

  const where = endpoint !== undefined ? `at ${endpoint}` : `in ${region}`;
  const description = `s3://${bucket} (${where}${profile !== undefined ? `, profile ${profile}` : ''})`;
  return Object.freeze({
    kind: 's3',
    bucket,
    region,
    scheme,
    ...(endpoint !== undefined && { endpoint }),
    ...(profile !== undefined && { profile }),
    addressingStyle: style,
    forcePathStyle,
    ...(sc !== undefined && { storageClass: sc as StorageClass }),
    ...(minPartSize !== undefined && { minPartSize }),
    ...(mpu !== undefined && { multipartUpload: bool(url, 'multipart-upload', mpu) }),
    ...(connectTimeoutMs !== undefined && { connectTimeoutMs }),
    ...(idleTimeoutMs !== undefined && { idleTimeoutMs }),
    ...(checksum !== undefined && { checksum: checksum as S3ChecksumMode }),
    ...(narinfoC !== undefined && { narinfoCompression: narinfoC }),
    ...(lsC !== undefined && { lsCompression: lsC }),
    ...(logC !== undefined && { logCompression: logC }),
    params: Object.freeze(parseCommon(url, q)),
    description,
  });
}
