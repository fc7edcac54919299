/**
 * What the Nix store knows of one valid path (Nix: ValidPathInfo), how it
 * travels on the wire, and how `nix path-info --json` (Nix 2.8) prints it.
 * Pure: no I/O.
 */
import { type Hash, formatHash, parseHash } from '../hash/hash.js';
import { type StorePath, parseStorePath } from './store-path.js';
import type { Frame } from './wire-reader.js';

export interface PathInfo {
  readonly path: StorePath;
  /** The .drv that built it; absent for paths added directly (nix-store --add, builtins.toFile). */
  readonly deriver: StorePath | undefined;
  readonly narHash: Hash;
  /** Sorted by base name, as Nix keeps them; may include `path` itself. */
  readonly references: readonly StorePath[];
  /** Seconds since the epoch; 0 when unknown. */
  readonly registrationTime: number;
  readonly narSize: number;
  /** True when this machine built it (it was not substituted or copied). */
  readonly ultimate: boolean;
  readonly sigs: readonly string[];
  /** The content address as Nix renders it (`fixed:r:sha256:…`, `text:sha256:…`), for content-addressed paths. */
  readonly ca: string | undefined;
}

/** A path info as the daemon sends it, strings not yet checked. */
export interface WirePathInfo {
  readonly deriver: string;
  readonly narHash: string;
  readonly references: readonly string[];
  readonly registrationTime: number;
  readonly narSize: number;
  readonly ultimate: boolean;
  readonly sigs: readonly string[];
  readonly ca: string;
}

/** UnkeyedValidPathInfo as the daemon writes it (protocol >= 1.16). */
export const wirePathInfo: Frame<WirePathInfo> = (r) => ({
  deriver: r.string(),
  narHash: r.string(),
  references: r.strings(),
  registrationTime: r.u64(),
  narSize: r.u64(),
  ultimate: r.bool(),
  sigs: r.strings(),
  ca: r.string(),
});

/**
 * Check and type a wire path info; throws BAD_STORE_PATH / BAD_HASH on
 * nonsense. `parse` turns a full path into a StorePath (a caller may cache).
 */
export function pathInfoFromWire(
  path: StorePath,
  w: WirePathInfo,
  parse: (p: string) => StorePath = (p) => parseStorePath(p, path.storeDir),
): PathInfo {
  return {
    path,
    deriver: w.deriver === '' ? undefined : parse(w.deriver),
    narHash: parseHash(w.narHash, 'sha256'),
    references: w.references.map(parse),
    registrationTime: w.registrationTime,
    narSize: w.narSize,
    ultimate: w.ultimate,
    sigs: [...w.sigs],
    ca: w.ca === '' ? undefined : w.ca,
  };
}

/** Nix orders store paths by base name (byte order; base names are ASCII). */
export function compareStorePaths(a: StorePath, b: StorePath): number {
  return a.baseName < b.baseName ? -1 : a.baseName > b.baseName ? 1 : 0;
}

/**
 * One entry of `nix path-info --json` as Nix 2.8 writes it (Store::pathInfoToJSON
 * with impure info): keys in this order, optional ones only when set.
 */
export function pathInfoToNixJson(info: PathInfo): Record<string, unknown> {
  const o: Record<string, unknown> = {
    path: info.path.path,
    narHash: formatHash(info.narHash, 'sri'),
    narSize: info.narSize,
    references: info.references.map((r) => r.path),
  };
  if (info.ca !== undefined) o.ca = info.ca;
  if (info.deriver) o.deriver = info.deriver.path;
  if (info.registrationTime) o.registrationTime = info.registrationTime;
  if (info.ultimate) o.ultimate = true;
  if (info.sigs.length > 0) o.signatures = [...info.sigs];
  return o;
}

/** The whole `nix path-info --json` document: entries sorted by path, no trailing newline. */
export function formatNixPathInfoJson(infos: readonly PathInfo[]): string {
  const unique = new Map<string, PathInfo>();
  for (const i of infos) unique.set(i.path.baseName, i);
  const keys = [...unique.keys()].sort();
  return JSON.stringify(keys.map((k) => pathInfoToNixJson(unique.get(k)!)));
}
