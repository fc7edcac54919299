/**
 * The GC roots that keep queued work alive: one symlink per store path,
 * `<stateDir>/gcroots/<base name>` -> `<storeDir>/<base name>`, each made an
 * indirect root through the nix-daemon (AddIndirectRoot), as `nix-build -o`
 * does. The root lasts while the symlink exists; Nix's collector removes its
 * own `gcroots/auto/` entry once the symlink is gone.
 *
 * Both the hook (for what it spools) and the daemon (for what it queues)
 * create links in this one layout, so a link the hook made is the daemon's
 * from then on; only the daemon removes links. A link appears whole (a new
 * name is one symlink; a name already taken is replaced by a rename over it),
 * so the collector never sees a half-made or missing link where one existed.
 *
 * This file does file system work, and talks to a store only through the
 * client the caller hands registerIndirectRoots; node builtins only, because
 * the hook imports it.
 */
import { readdir, readlink, rename, symlink, unlink } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { ensureDir, fsyncDir, removeStaleTemps } from './fs-util.js';

export const GCROOTS_SUBDIR = 'gcroots';
const TEMP_PREFIX = '.tmp-';

export function gcRootsDir(stateDir: string): string {
  return nodePath.join(nodePath.resolve(stateDir), GCROOTS_SUBDIR);
}

/** The link for the store path `storePath` (its base name in `dir`). */
export function rootLinkPath(dir: string, storePath: string): string {
  return nodePath.join(dir, nodePath.basename(storePath));
}

/**
 * Make sure `dir` holds a link to each of `storePaths` (full store paths);
 * returns the links' absolute paths, in order. The directory is synced once
 * at the end, as the journal syncs its records, so the links survive a crash.
 * The directories are made when missing.
 */
export async function makeRootLinks(dir: string, storePaths: readonly string[]): Promise<string[]> {
  const placed = await placeRootLinks(dir, storePaths);
  if (placed.changed) await fsyncDir(dir);
  return placed.links;
}

/** What placeRootLinks did. */
export interface PlacedLinks {
  /** The links' absolute paths, in the order of the store paths. */
  readonly links: string[];
  /** Whether any link was made or replaced: the directory needs a sync for them to survive a crash. */
  readonly changed: boolean;
  /** Whether `dir` (or its parent) had to be made: a descriptor of it kept from before is stale. */
  readonly madeDir: boolean;
}

/**
 * makeRootLinks without the sync, for a caller that syncs `dir` itself (the
 * daemon, while Nix registers the links): the links exist, and the
 * collector sees them, once this resolves; they are durable only after that
 * sync.
 */
export async function placeRootLinks(dir: string, storePaths: readonly string[]): Promise<PlacedLinks> {
  const links: string[] = [];
  let changed = false;
  const made = { dir: false };
  for (const target of storePaths) {
    const link = rootLinkPath(dir, target);
    links.push(link);
    if (await placeLink(dir, target, link, made)) changed = true;
  }
  return { links, changed, madeDir: made.dir };
}

/**
 * Make `link` (in `dir`) point at `target`; whether anything changed. A new
 * name is one call, the common case (a fresh build output): a symlink appears
 * whole, so it needs no temporary name. A name already taken is replaced
 * through one, so that the collector never finds it missing.
 */
async function placeLink(dir: string, target: string, link: string, made: { dir: boolean }, retried = false): Promise<boolean> {
  try {
    await symlink(target, link);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !retried) {
      made.dir = true;
      await ensureDir(nodePath.dirname(dir));
      await ensureDir(dir);
      return placeLink(dir, target, link, made, true);
    }
    if (code !== 'EEXIST') throw e;
  }
  if ((await readlink(link).catch(() => undefined)) === target) return false;
  const nonce = Math.floor(Math.random() * 2 ** 48).toString(16).padStart(12, '0');
  const temp = nodePath.join(dir, `${TEMP_PREFIX}${process.pid}-${nonce}`);
  await symlink(target, temp);
  try {
    await rename(temp, link);
  } catch (e) {
    await unlink(temp).catch(() => {});
    throw e;
  }
  return true;
}

/** Where Nix keeps its side of indirect roots: `gcroots/auto` in its state directory. */
export function nixAutoRootsDir(env: Readonly<Record<string, string | undefined>>): string {
  return nodePath.join(env.NIX_STATE_DIR || '/nix/var/nix', 'gcroots', 'auto');
}

/** What registering indirect roots needs of a store client. */
export interface IndirectRootClient {
  addIndirectRoot(link: string): Promise<void>;
}

/**
 * Register `links` as indirect roots, then make Nix's side of them durable.
 * For each, Nix links `gcroots/auto/<hash>` to ours with a rename it does
 * not sync. After a power cut that link may be gone, and the collector
 * would not find ours until the daemon is back to register it again (a
 * collection at boot could come first). So its directory (`autoDir`) is
 * synced here, as ours is. Best effort: Nix's state directory may be
 * elsewhere or unreadable; returns why it was not synced. Throws only when a
 * registration fails.
 */
export async function registerIndirectRoots(
  client: IndirectRootClient,
  links: readonly string[],
  autoDir: string,
  sync: (dir: string) => Promise<void> = fsyncDir,
): Promise<string | undefined> {
  if (links.length === 0) return undefined;
  await Promise.all(links.map((l) => client.addIndirectRoot(l)));
  try {
    await sync(autoDir);
    return undefined;
  } catch (e) {
    return `cannot sync ${autoDir} (${(e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : String(e))})`;
  }
}

/** Remove the links named by these base names (a missing one is fine); syncs the directory. */
export async function removeRootLinks(dir: string, baseNames: Iterable<string>): Promise<number> {
  let removed = 0;
  for (const b of baseNames) {
    if (b.includes('/') || b.startsWith('.')) continue;
    try {
      await unlink(nodePath.join(dir, b));
      removed++;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  if (removed > 0) await fsyncDir(dir);
  return removed;
}

/** The base names of the links in `dir` (temporary names excluded); none when it does not exist. */
export async function listRootLinks(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => !n.startsWith('.')).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Remove temporary links a killed hook or daemon left behind, once they are `olderThanMs` old. */
export async function removeStaleRootTemps(dir: string, olderThanMs: number, now: number = Date.now()): Promise<number> {
  return removeStaleTemps(dir, TEMP_PREFIX, olderThanMs, now);
}
