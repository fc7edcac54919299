/**
 * `.narinfo` files: a typed, read-only record with a pure parser and writer.
 *
 * The parser follows Nix's NarInfo::NarInfo (src/libstore/nar-info.cc, checked
 * against Nix 2.8): unknown keys are ignored, a missing or empty Compression
 * means bzip2, hashes may be nix32, base16, base64 or SRI, `Deriver:
 * unknown-deriver` means none, later scalar lines win, `Sig` lines add up, a
 * second non-empty References or CA is corrupt, and every line, the last one
 * included, must end in `\n` (Nix rejects a file without the final newline
 * and, through the StorePath line, any CRLF file). Where Nix only works by
 * accident (a line without `: `, whose first value character it drops) this
 * parser is strict. Each error names the line and the field.
 *
 * The writer produces exactly Nix's NarInfo::to_string for the same record.
 * Nothing here does I/O, and nothing here may format a record Nix would
 * refuse to read back.
 */
import { NarpushError } from '../errors.js';
import { type Hash, formatHash, parseHash } from '../hash/hash.js';
import {
  DEFAULT_STORE_DIR,
  type StorePath,
  parseStorePath,
  parseStorePathBaseName,
} from '../store/store-path.js';
import { formatContentAddress, parseContentAddress } from './content-address.js';

export interface NarInfo {
  readonly storePath: StorePath;
  /** Where the (compressed) NAR is, relative to the cache root; opaque to readers. */
  readonly url: string;
  /** `none`, `xz`, `zstd`, `bzip2`, ...; `bzip2` when the file did not say. */
  readonly compression: string;
  /** Hash and size of the file at `url` (the compressed NAR). */
  readonly fileHash?: Hash;
  readonly fileSize?: number;
  readonly narHash: Hash;
  readonly narSize: number;
  /** Sorted by base name, no duplicates (Nix keeps them in a set); may include the path itself. */
  readonly references: readonly StorePath[];
  readonly deriver?: StorePath;
  /** `name:base64` signatures, sorted, no duplicates (Nix keeps them in a set). */
  readonly sigs: readonly string[];
  /** Content address, as Nix renders it (`fixed:r:sha256:<nix32>`, `text:sha256:<nix32>`). */
  readonly ca?: string;
}

const UNKNOWN_DERIVER = 'unknown-deriver';

/** Sort by UTF-8 bytes and drop duplicates, as a C++ std::set<std::string> does. */
export function sortUnique(items: Iterable<string>): string[] {
  const seen = new Set(items);
  return [...seen].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** References in Nix's order (by base name), without duplicates. */
export function sortReferences(refs: Iterable<StorePath>): StorePath[] {
  const byName = new Map<string, StorePath>();
  for (const r of refs) if (!byName.has(r.baseName)) byName.set(r.baseName, r);
  return sortUnique(byName.keys()).map((k) => byName.get(k)!);
}

/**
 * A value quoted in an error, shortened. A narinfo is ASCII: anything else
 * (a binary object read as a narinfo decodes to U+FFFD, stray letters
 * and control characters) is shown as \u escapes.
 */
function excerpt(value: string): string {
  const quoted = JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  return quoted.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

class Corrupt {
  constructor(private readonly whence: string | undefined) {}

  error(where: string, why: string, cause?: unknown): NarpushError {
    const file = this.whence === undefined ? 'narinfo' : `narinfo '${this.whence}'`;
    return new NarpushError('BAD_NARINFO', `${file} is corrupt: ${where}: ${why}`, { cause });
  }
}

const SIZE = /^\+?[0-9]+$/;

function parseSize(value: string): number | undefined {
  if (!SIZE.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Parse a narinfo as Nix would. `storeDir` is the cache's store directory
 * (StorePath must lie in it); `whence` (such as the file name) goes into
 * error messages.
 */
export function parseNarInfo(text: string, storeDir: string = DEFAULT_STORE_DIR, whence?: string): NarInfo {
  const corrupt = new Corrupt(whence);
  let storePath: StorePath | undefined;
  let url = '';
  let compression = '';
  let fileHash: Hash | undefined;
  let fileSize: number | undefined;
  let narHash: Hash | undefined;
  let narSize = 0;
  let narSizeLine = 0;
  let references: StorePath[] = [];
  let deriver: StorePath | undefined;
  const sigs: string[] = [];
  let ca: string | undefined;

  let pos = 0;
  for (let line = 1; pos < text.length; line++) {
    const eol = text.indexOf('\n', pos);
    const raw = text.slice(pos, eol < 0 ? text.length : eol);
    const sep = raw.indexOf(': ');
    const colon = raw.indexOf(':');
    const key = colon < 0 ? raw : raw.slice(0, colon);
    const where = colon < 0 ? `line ${line}` : `line ${line} (${/^[\x20-\x7e]{1,40}$/.test(key) ? key : excerpt(key)})`;
    if (colon < 0 || sep !== colon) throw corrupt.error(where, `expected 'Key: value', got ${excerpt(raw)}`);
    if (raw.includes('\r')) throw corrupt.error(where, 'carriage return in line (CRLF line endings are not accepted)');
    if (eol < 0) throw corrupt.error(where, 'the last line does not end with a newline');
    const value = raw.slice(sep + 2);
    const field = (why: string, cause?: unknown): NarpushError =>
      corrupt.error(where, `${why}${cause instanceof Error ? `: ${cause.message}` : ''}`, cause);
    const hashField = (): Hash => {
      try {
        return parseHash(value);
      } catch (e) {
        throw field(`bad hash ${excerpt(value)}`, e);
      }
    };

    switch (key) {
      case 'StorePath':
        try {
          storePath = parseStorePath(value, storeDir);
        } catch (e) {
          throw field('bad store path', e);
        }
        break;
      case 'URL':
        url = value;
        break;
      case 'Compression':
        compression = value;
        break;
      case 'FileHash':
        fileHash = hashField();
        break;
      case 'FileSize':
        fileSize = parseSize(value);
        if (fileSize === undefined) throw field(`invalid FileSize ${excerpt(value)} (expected a non-negative integer)`);
        break;
      case 'NarHash':
        narHash = hashField();
        break;
      case 'NarSize': {
        const n = parseSize(value);
        if (n === undefined) throw field(`invalid NarSize ${excerpt(value)} (expected a positive integer)`);
        narSize = n;
        narSizeLine = line;
        break;
      }
      case 'References': {
        if (references.length > 0) throw field('extra References line');
        const refs: StorePath[] = [];
        for (const name of value.split(' ')) {
          if (name === '') continue;
          try {
            refs.push(parseStorePathBaseName(name, storeDir));
          } catch (e) {
            throw field('bad reference', e);
          }
        }
        references = sortReferences(refs);
        break;
      }
      case 'Deriver':
        if (value === UNKNOWN_DERIVER) break;
        try {
          deriver = parseStorePathBaseName(value, storeDir);
        } catch (e) {
          throw field('bad deriver', e);
        }
        break;
      case 'Sig':
        sigs.push(value);
        break;
      case 'CA':
        if (ca !== undefined) throw field('extra CA line');
        // Nix reads an empty CA as "not content-addressed".
        if (value === '') break;
        try {
          ca = formatContentAddress(parseContentAddress(value));
        } catch (e) {
          throw field('bad content address', e);
        }
        break;
      default:
        // Unknown keys (System:, Provenance:, ...) are ignored, as in Nix.
        break;
    }
    pos = eol + 1;
  }

  if (storePath === undefined) throw corrupt.error('StorePath', 'the StorePath line is missing');
  if (narHash === undefined) throw corrupt.error('NarHash', 'the NarHash line is missing');
  if (url === '') throw corrupt.error('URL', 'the URL line is missing or empty');
  if (narSize === 0) {
    throw narSizeLine > 0
      ? corrupt.error(`line ${narSizeLine} (NarSize)`, 'NarSize is zero')
      : corrupt.error('NarSize', 'the NarSize line is missing');
  }

  return {
    storePath,
    url,
    compression: compression === '' ? 'bzip2' : compression,
    ...(fileHash !== undefined && { fileHash }),
    ...(fileSize !== undefined && { fileSize }),
    narHash,
    narSize,
    references,
    ...(deriver !== undefined && { deriver }),
    sigs: sortUnique(sigs),
    ...(ca !== undefined && { ca }),
  };
}

function cannotFormat(info: NarInfo, why: string): NarpushError {
  return new NarpushError('BAD_NARINFO', `cannot write a narinfo for '${info.storePath.path}': ${why}`);
}

function oneLine(info: NarInfo, field: string, value: string): string {
  if (/[\r\n]/.test(value)) throw cannotFormat(info, `${field} contains a line break`);
  return value;
}

function checkSize(info: NarInfo, field: string, n: number, min: number): number {
  if (!Number.isSafeInteger(n) || n < min) throw cannotFormat(info, `${field} ${n} is not an integer >= ${min}`);
  return n;
}

// Nix's writer asserts SHA-256 for both hashes; its readers accept others.
function sha256Only(info: NarInfo, field: string, h: Hash): Hash {
  if (h.algo !== 'sha256') throw cannotFormat(info, `${field} is ${h.algo}, but Nix writes only sha256 hashes`);
  return h;
}

function renderCa(info: NarInfo, ca: string): string {
  try {
    return formatContentAddress(parseContentAddress(ca));
  } catch (e) {
    throw cannotFormat(info, (e as Error).message);
  }
}

/**
 * Write a narinfo exactly as Nix's NarInfo::to_string does: fixed field order,
 * hashes as `sha256:<nix32>`, `References: ` with a trailing space when
 * empty, references and signatures sorted. FileHash and FileSize are written
 * only when known (Nix always knows them when it writes one).
 */
export function formatNarInfo(info: NarInfo): string {
  if (info.url === '') throw cannotFormat(info, 'the URL is empty');
  const lines = [
    `StorePath: ${info.storePath.path}`,
    `URL: ${oneLine(info, 'URL', info.url)}`,
    `Compression: ${oneLine(info, 'Compression', info.compression === '' ? 'bzip2' : info.compression)}`,
  ];
  if (info.fileHash !== undefined) lines.push(`FileHash: ${formatHash(sha256Only(info, 'FileHash', info.fileHash), 'nix32')}`);
  if (info.fileSize !== undefined) lines.push(`FileSize: ${checkSize(info, 'FileSize', info.fileSize, 0)}`);
  lines.push(`NarHash: ${formatHash(sha256Only(info, 'NarHash', info.narHash), 'nix32')}`);
  lines.push(`NarSize: ${checkSize(info, 'NarSize', info.narSize, 1)}`);
  lines.push(`References: ${sortReferences(info.references).map((r) => r.baseName).join(' ')}`);
  if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver.baseName}`);
  for (const sig of sortUnique(info.sigs)) lines.push(`Sig: ${oneLine(info, 'Sig', sig)}`);
  if (info.ca !== undefined) lines.push(`CA: ${renderCa(info, info.ca)}`);
  return lines.join('\n') + '\n';
}
