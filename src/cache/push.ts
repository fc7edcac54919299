/**
 * From "these store paths" to "these paths are in the cache": resolve the
 * paths' closure through the store, keep them from being garbage-collected
 * while they upload, and hand them to the upload pipeline. This is what
 * `narpush upload-path` and the daemon share.
 */
import { NarpushError } from '../errors.js';
import type { StoreClient } from '../store/client.js';
import { closure, invalidPath } from '../store/closure.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import { type UploadOptions, type UploadReport, uploadPaths } from './upload.js';

export interface PushOptions extends UploadOptions {
  /** Upload the closure of the paths (the default), or only the paths themselves. */
  readonly closure: boolean;
}

/**
 * Resolve .drv arguments to their outputs (as Nix 2.8 does for store path
 * arguments), register temporary GC roots, and fetch path infos in an order
 * where each path follows its references.
 */
export async function resolvePaths(store: StoreClient, paths: readonly StorePath[], withClosure: boolean): Promise<PathInfo[]> {
  const roots: StorePath[] = [];
  for (const p of paths) {
    if (!p.name.endsWith('.drv')) {
      roots.push(p);
      continue;
    }
    for (const [name, out] of await store.derivationOutputs(p)) {
      if (!out) throw new NarpushError('INVALID_PATH', `output '${name}' of '${p.path}' has not been built`);
      roots.push(out);
    }
  }
  // A temporary root protects a path and its closure until the connection closes.
  await Promise.all(roots.map((p) => store.addTempRoot(p)));
  if (withClosure) return closure(store, roots);
  const seen = new Set<string>();
  const unique = roots.filter((p) => !seen.has(p.baseName) && seen.add(p.baseName));
  return Promise.all(
    unique.map(async (p) => {
      const info = await store.queryPathInfo(p);
      if (!info) throw invalidPath(p);
      return info;
    }),
  );
}

export async function pushPaths(store: StoreClient, paths: readonly StorePath[], opts: PushOptions): Promise<UploadReport> {
  const infos = await resolvePaths(store, paths, opts.closure);
  return uploadPaths(infos, opts);
}
