/**
 * What a store path argument means to narpush, as to Nix 2.8: a `.drv` stands
 * for all outputs of that derivation (InstallableStorePath::toDerivedPaths;
 * later Nix needs `drv^*`), anything else for itself. Shared by every command
 * and the daemon, so they all read arguments the same way.
 */
import { NarpushError } from '../errors.js';
import type { StoreClient } from './client.js';
import { closure, invalidPath } from './closure.js';
import type { PathInfo } from './path-info.js';
import type { StorePath } from './store-path.js';

/** Replace each `.drv` by its outputs; an output not built yet is INVALID_PATH. */
export async function expandDerivations(store: StoreClient, paths: readonly StorePath[]): Promise<StorePath[]> {
  const out: StorePath[] = [];
  for (const p of paths) {
    if (!p.name.endsWith('.drv')) {
      out.push(p);
      continue;
    }
    for (const [name, output] of await store.derivationOutputs(p)) {
      if (!output) throw new NarpushError('INVALID_PATH', `output '${name}' of '${p.path}' has not been built`);
      out.push(output);
    }
  }
  return out;
}

/** The info of each path (duplicates dropped), in the order given; INVALID_PATH for a path not in the store. */
export async function queryPathInfos(store: StoreClient, paths: readonly StorePath[]): Promise<PathInfo[]> {
  const seen = new Set<string>();
  const unique = paths.filter((p) => !seen.has(p.baseName) && seen.add(p.baseName));
  return Promise.all(
    unique.map(async (p) => {
      const info = await store.queryPathInfo(p);
      if (!info) throw invalidPath(p);
      return info;
    }),
  );
}

/**
 * Everything an upload needs from the store for some arguments: `.drv`s
 * expanded to their outputs, temporary GC roots registered (they protect each
 * path and its closure until the client closes), and the path infos of the
 * closure (or of the paths alone) in an order where each path follows its
 * references.
 */
export async function resolvePaths(
  store: StoreClient,
  paths: readonly StorePath[],
  withClosure: boolean,
  /** Called with each path's info as it arrives (before the closure is complete and sorted). */
  onInfo?: (info: PathInfo) => void,
): Promise<PathInfo[]> {
  const roots = await expandDerivations(store, paths);
  await Promise.all(roots.map((p) => store.addTempRoot(p)));
  if (!withClosure) {
    const infos = await queryPathInfos(store, roots);
    if (onInfo) infos.forEach(onInfo);
    return infos;
  }
  if (!onInfo) return closure(store, roots);
  const watched = {
    queryPathInfo: async (p: StorePath) => {
      const info = await store.queryPathInfo(p);
      if (info) onInfo(info);
      return info;
    },
  };
  return closure(watched, roots);
}
