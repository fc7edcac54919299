/**
 * The uploader's check "does the cache already have this narinfo?", with the
 * renewal that keeps `narpush gc` from collecting what uploads rely on.
 *
 * An uploader that skips a path because its narinfo exists makes new
 * narinfos that refer to it. The collector keeps every narinfo younger than
 * its --keep-since and their closure, so a narinfo an upload relies on is
 * safe while it is young; when it is older than `refreshAgeMs` the upload
 * renews it (touch: copy onto itself, never re-created if it vanished) before
 * relying on it. With --keep-since above refreshAge plus the longest upload,
 * no collector that lists the cache after this check can find the path old
 * before the upload's own narinfos, which refer to it, are visible and
 * young. Collectors already running are the fence's business (gc-fence.ts).
 * The argument in full: src/gc/README.md.
 */
import type { CacheBackend } from './backend.js';

export interface RefreshOptions {
  /** Renew a narinfo older than this before relying on it; undefined: never (no collector runs on this cache). */
  readonly refreshAgeMs?: number;
  readonly clock?: () => Date;
}

/**
 * Whether `key` exists and may be relied on: true once it is young enough
 * or renewed; false when it is missing (or vanished while being renewed),
 * in which case the caller uploads it.
 */
export async function presentAndFresh(backend: CacheBackend, key: string, contentType: string, opts: RefreshOptions): Promise<boolean> {
  if (opts.refreshAgeMs === undefined || !backend.stat || !backend.touch) return backend.exists(key);
  const st = await backend.stat(key);
  if (!st) return false;
  const age = (opts.clock ?? (() => new Date()))().getTime() - st.lastModified.getTime();
  if (age < opts.refreshAgeMs) return true;
  return backend.touch(key, contentType, st);
}
