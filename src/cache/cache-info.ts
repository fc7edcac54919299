/**
 * `nix-cache-info`, the file at the root of every binary cache. narpush
 * creates it when absent and checks it when present: a cache made for another
 * store directory is refused before anything is uploaded to it.
 */
import { NarpushError } from '../errors.js';
import type { CacheBackend } from './backend.js';

export const CACHE_INFO_KEY = 'nix-cache-info';
export const CACHE_INFO_CONTENT_TYPE = 'text/x-nix-cache-info';

export interface CacheInfo {
  readonly storeDir: string;
  readonly wantMassQuery?: boolean;
  readonly priority?: number;
}

/** Parse `Key: value` lines as Nix does: unknown keys and lines without a colon are ignored. */
export function parseCacheInfo(text: string): Partial<CacheInfo> {
  const out: { storeDir?: string; wantMassQuery?: boolean; priority?: number } = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (key === 'StoreDir') out.storeDir = value;
    else if (key === 'WantMassQuery') out.wantMassQuery = value === '1';
    else if (key === 'Priority' && /^-?\d+$/.test(value)) out.priority = Number(value);
  }
  return out;
}

export function formatCacheInfo(info: CacheInfo): string {
  let s = `StoreDir: ${info.storeDir}\n`;
  if (info.wantMassQuery !== undefined) s += `WantMassQuery: ${info.wantMassQuery ? 1 : 0}\n`;
  if (info.priority !== undefined) s += `Priority: ${info.priority}\n`;
  return s;
}

/**
 * Make sure the cache is one for `wanted.storeDir`: create `nix-cache-info`
 * (with WantMassQuery and Priority as given) when it is missing, refuse a
 * cache for another store. Returns what the cache says.
 */
export async function ensureCacheInfo(backend: CacheBackend, wanted: CacheInfo): Promise<Partial<CacheInfo>> {
  return (await checkCacheInfo(backend, wanted)) ?? createCacheInfo(backend, wanted);
}

/**
 * The read-only half of ensureCacheInfo: what the cache's `nix-cache-info`
 * says, undefined when it has none; a cache for another store is refused.
 * Writes nothing, so it may run before the paths to upload are known good.
 */
export async function checkCacheInfo(backend: CacheBackend, wanted: CacheInfo): Promise<Partial<CacheInfo> | undefined> {
  const existing = await backend.get(CACHE_INFO_KEY);
  if (existing === undefined) return undefined;
  const info = parseCacheInfo(existing.toString('utf8'));
  if (info.storeDir === undefined) {
    throw new NarpushError(
      'BAD_CACHE',
      `${backend.description} has a nix-cache-info without StoreDir; it is not a Nix binary cache narpush can write to`,
    );
  }
  if (info.storeDir !== wanted.storeDir) {
    throw new NarpushError(
      'WRONG_STORE_DIR',
      `${backend.description} is a cache for the store '${info.storeDir}', not '${wanted.storeDir}'`,
    );
  }
  return info;
}

/** Write the `nix-cache-info` of a new cache; returns what it says. */
export async function createCacheInfo(backend: CacheBackend, wanted: CacheInfo): Promise<CacheInfo> {
  await backend.putBytes(CACHE_INFO_KEY, Buffer.from(formatCacheInfo(wanted)), CACHE_INFO_CONTENT_TYPE);
  return wanted;
}
