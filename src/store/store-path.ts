/**
 * Store paths: `<storeDir>/<32 nix32 chars>-<name>`, validated with Nix's rules.
 * Parsing is pure; `followLinksToStorePath` is the one function here that
 * touches the filesystem, to resolve `./result`-style symlinks the way Nix does.
 */
import { lstat, readlink } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import { isNix32 } from '../hash/nix32.js';

export const DEFAULT_STORE_DIR = '/nix/store';
export const HASH_PART_LENGTH = 32;
export const MAX_NAME_LENGTH = 211;

const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/;

export class StorePath {
  /** The 32-character nix32 hash part. */
  readonly hashPart: string;
  /** The name after the dash. */
  readonly name: string;
  readonly storeDir: string;
  /** `<hash>-<name>`, as written in narinfo References and Deriver. */
  readonly baseName: string;
  /** The full path. */
  readonly path: string;

  // Closures sort and print thousands of these: compute the strings once.
  constructor(hashPart: string, name: string, storeDir: string = DEFAULT_STORE_DIR) {
    this.hashPart = hashPart;
    this.name = name;
    this.storeDir = storeDir;
    this.baseName = `${hashPart}-${name}`;
    this.path = `${storeDir}/${this.baseName}`;
  }

  toString(): string {
    return this.path;
  }

  equals(other: StorePath): boolean {
    return this.path === other.path;
  }
}

function bad(message: string): NarpushError {
  return new NarpushError('BAD_STORE_PATH', message);
}

/** Why `name` is not a legal store path name, or undefined when it is. */
export function storePathNameError(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_LENGTH) return `the name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME_CHARS.test(name)) return 'the name contains a character other than A-Z a-z 0-9 + - . _ ? =';
  if (name === '.' || name === '..') return `the name is '${name}'`;
  if (name.startsWith('.-') || name.startsWith('..-')) return `the name starts with '${name.startsWith('..') ? '..-' : '.-'}'`;
  return undefined;
}

/** Parse `<hash>-<name>` (the form in narinfo References and Deriver). */
export function parseStorePathBaseName(baseName: string, storeDir: string = DEFAULT_STORE_DIR): StorePath {
  const hashPart = baseName.slice(0, HASH_PART_LENGTH);
  if (baseName.length < HASH_PART_LENGTH + 2 || baseName[HASH_PART_LENGTH] !== '-') {
    throw bad(`'${baseName}' is not a store path base name (<32-char hash>-<name>)`);
  }
  if (!isNix32(hashPart, 20)) throw bad(`'${baseName}' has an invalid hash part '${hashPart}'`);
  const name = baseName.slice(HASH_PART_LENGTH + 1);
  const why = storePathNameError(name);
  if (why) throw bad(`'${baseName}' is not a valid store path: ${why}`);
  return new StorePath(hashPart, name, storeDir);
}

/** Parse a full store path strictly: no subpath, no trailing slash, no `..`. */
export function parseStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): StorePath {
  const prefix = storeDir + '/';
  if (!path.startsWith(prefix)) throw bad(`'${path}' is not in the Nix store (${storeDir})`);
  const rest = path.slice(prefix.length);
  if (rest.includes('/')) throw bad(`'${path}' is not a store path (it has a trailing slash or a subpath)`);
  return parseStorePathBaseName(rest, storeDir);
}

/** A store path and, for paths inside one, the part below it ('' for the store path itself). */
export interface StorePathAndSubpath {
  readonly storePath: StorePath;
  readonly subpath: string;
}

/** Split an absolute, normalized path inside the store into its store path and subpath. */
export function toStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): StorePathAndSubpath {
  const normal = nodePath.posix.normalize(path);
  if (normal !== path && normal + '/' !== path) {
    throw bad(`'${path}' is not a normalized path`);
  }
  const prefix = storeDir + '/';
  if (!normal.startsWith(prefix)) throw bad(`'${path}' is not in the Nix store (${storeDir})`);
  const rest = normal.slice(prefix.length);
  const slash = rest.indexOf('/');
  const base = slash < 0 ? rest : rest.slice(0, slash);
  const subpath = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/$/, '');
  return { storePath: parseStorePathBaseName(base, storeDir), subpath };
}

const MAX_SYMLINK_HOPS = 40;

/**
 * Resolve a user-supplied path to the store path it names, as Nix does: make it
 * absolute, then follow symlinks while it lies outside the store (so
 * `./result` works), then split off any subpath. `..` is resolved lexically
 * first, so `/nix/store/x-y/../../etc` is outside the store and rejected.
 */
export async function followLinksToStorePath(
  path: string,
  storeDir: string = DEFAULT_STORE_DIR,
  cwd: string = process.cwd(),
): Promise<StorePathAndSubpath> {
  let current = nodePath.resolve(cwd, path);
  const prefix = storeDir + '/';
  for (let hops = 0; !current.startsWith(prefix); hops++) {
    if (hops >= MAX_SYMLINK_HOPS) throw bad(`too many levels of symbolic links resolving '${path}'`);
    let isLink: boolean;
    try {
      isLink = (await lstat(current)).isSymbolicLink();
    } catch (e) {
      if (isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) {
        throw new NarpushError('PATH_NOT_FOUND', `path '${path}' does not exist`, { cause: e });
      }
      throw new NarpushError('PATH_UNREADABLE', `cannot read '${path}': ${(e as Error).message}`, { cause: e });
    }
    if (!isLink) throw bad(`'${path}' is not in the Nix store (${storeDir})`);
    current = nodePath.resolve(nodePath.dirname(current), await readlink(current));
  }
  return toStorePath(current, storeDir);
}
