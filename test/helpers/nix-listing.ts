/**
 * Nix's own `.ls` listings, the referee for narpush's: `nix copy` of paths
 * into a fresh file:// cache with `write-nar-listing=true`, read back as
 * bytes. Listings may hold bytes that are not UTF-8 (Nix 2.8 copies names as
 * they are), so they are parsed from latin1: lossless, one char per byte.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix } from './nix.js';

export function hashPartOf(storePath: string): string {
  return path.basename(storePath).slice(0, 32);
}

/** The listing Nix writes for each path, by path. */
export async function nixListings(paths: readonly string[]): Promise<Map<string, Buffer>> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-nix-ls-'));
  try {
    await nix('nix', ['copy', '--to', `file://${dir}?write-nar-listing=true&compression=none`, ...paths]);
    const out = new Map<string, Buffer>();
    for (const p of paths) out.set(p, await readFile(path.join(dir, `${hashPartOf(p)}.ls`)));
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A listing as JSON, bytes kept (latin1). */
export function parseListing(bytes: Buffer): unknown {
  return JSON.parse(bytes.toString('latin1'));
}
