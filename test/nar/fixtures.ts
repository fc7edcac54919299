/**
 * The store paths of test/fixtures/nar-edge-cases.nix, built once per test
 * process by real Nix, keyed by their derivation name (e.g. 'nar-tree').
 * Also Nix's own view of them: `nix-store --dump` bytes and narHash/narSize.
 */
import { nix, nixBuildFile } from '../helpers/nix.js';
import { parseHash, type Hash } from '../../src/hash/hash.js';

export const FIXTURE_NAMES = [
  'nar-tree',
  'nar-large',
  'nar-root-file',
  'nar-root-exe',
  'nar-root-empty-file',
  'nar-root-empty-dir',
  'nar-root-symlink',
  'nar-root-rel-symlink',
] as const;
export type FixtureName = (typeof FIXTURE_NAMES)[number];

let built: Promise<Map<FixtureName, string>> | undefined;

export function narFixtures(): Promise<Map<FixtureName, string>> {
  built ??= (async () => {
    const paths = await nixBuildFile('nar-edge-cases.nix');
    const byName = new Map<FixtureName, string>();
    for (const p of paths) {
      const name = p.slice(p.indexOf('-') + 1) as FixtureName;
      if (FIXTURE_NAMES.includes(name)) byName.set(name, p);
    }
    for (const n of FIXTURE_NAMES) if (!byName.has(n)) throw new Error(`nar-edge-cases.nix did not build ${n}`);
    return byName;
  })();
  return built;
}

/** What `nix-store --dump` writes for a path. */
export function nixDump(path: string): Promise<Buffer> {
  return nix('nix-store', ['--dump', path]);
}

export interface NixPathInfo {
  readonly narHash: Hash;
  readonly narSize: number;
}

/** narHash and narSize as recorded in Nix's database. */
export async function nixPathInfo(path: string): Promise<NixPathInfo> {
  const out = JSON.parse((await nix('nix', ['path-info', '--json', path])).toString('utf8')) as unknown;
  const info = (Array.isArray(out) ? out[0] : (out as Record<string, unknown>)[path]) as { narHash: string; narSize: number };
  return { narHash: parseHash(info.narHash), narSize: info.narSize };
}
