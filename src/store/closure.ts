/**
 * Closures: every path reachable from some roots through references, in an
 * order where each path comes after all of its references (so a cache can
 * upload a path's narinfo only once its references are there).
 *
 * The order is Nix's own (Store::topoSortPaths, reversed, as `nix path-info
 * -r` prints it): a depth-first post-order visiting paths and references by
 * base name. It is deterministic, allows self-references, and visits each
 * path of a diamond once. Fetching is streamed: every reference is queried
 * as soon as it is seen, so the requests pipeline instead of going level by
 * level.
 */
import { NarpushError } from '../errors.js';
import type { PathInfo } from './path-info.js';
import type { StorePath } from './store-path.js';

export interface PathInfoSource {
  queryPathInfo(path: StorePath): Promise<PathInfo | undefined>;
}

export function invalidPath(path: StorePath, referrer?: StorePath): NarpushError {
  const why = referrer ? ` (it is a reference of '${referrer.path}'; the Nix database may be damaged)` : '';
  return new NarpushError('INVALID_PATH', `path '${path.path}' is not valid${why}`);
}

/** Fetch the info of every path in the closure of `roots`, unordered. Throws INVALID_PATH for a missing path. */
export function fetchClosure(source: PathInfoSource, roots: readonly StorePath[]): Promise<PathInfo[]> {
  const infos: PathInfo[] = [];
  const seen = new Set<string>();
  return new Promise<PathInfo[]>((resolve, reject) => {
    let pending = 0;
    let failed = false;
    const visit = (path: StorePath, referrer?: StorePath): void => {
      if (seen.has(path.baseName)) return;
      seen.add(path.baseName);
      pending++;
      const fail = (e: unknown): void => {
        if (failed) return;
        failed = true;
        reject(e);
      };
      const found = (info: PathInfo | undefined): void => {
        if (failed) return;
        if (!info) return fail(invalidPath(path, referrer));
        infos.push(info);
        for (const r of info.references) visit(r, path);
        if (--pending === 0) resolve(infos);
      };
      try {
        source.queryPathInfo(path).then(found, fail);
      } catch (e) {
        fail(e);
      }
    };
    for (const r of roots) visit(r);
    if (pending === 0) resolve(infos);
  });
}

/**
 * Order path infos so that each comes after its references (those in the
 * set; others are ignored). Throws STORE_CYCLE on a reference cycle between
 * different paths, which a valid Nix store cannot contain.
 */
export function sortByReferences(infos: readonly PathInfo[]): PathInfo[] {
  const byName = new Map<string, PathInfo>();
  for (const i of infos) byName.set(i.path.baseName, i);
  const DONE = 2;
  const ACTIVE = 1;
  const state = new Map<string, number>();
  const out: PathInfo[] = [];
  interface Frame {
    readonly name: string;
    readonly refs: string[];
    next: number;
  }
  const stack: Frame[] = [];
  const enter = (name: string): void => {
    state.set(name, ACTIVE);
    const refs = byName
      .get(name)!
      .references.map((r) => r.baseName)
      .filter((r) => r !== name && byName.has(r))
      .sort();
    stack.push({ name, refs, next: 0 });
  };
  for (const root of [...byName.keys()].sort()) {
    if (state.has(root)) continue;
    enter(root);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.next < top.refs.length) {
        const ref = top.refs[top.next++]!;
        const s = state.get(ref);
        if (s === ACTIVE) {
          throw new NarpushError('STORE_CYCLE', `cycle in the references of '${byName.get(ref)!.path.path}' and '${byName.get(top.name)!.path.path}'`);
        }
        if (s === undefined) enter(ref);
      } else {
        state.set(top.name, DONE);
        out.push(byName.get(top.name)!);
        stack.pop();
      }
    }
  }
  return out;
}

/** The closure of `roots`, each path after all of its references. */
export async function closure(source: PathInfoSource, roots: readonly StorePath[]): Promise<PathInfo[]> {
  return sortByReferences(await fetchClosure(source, roots));
}
