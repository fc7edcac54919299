/**
 * Before an upload: which of its paths the cache already has, which an
 * upstream cache serves (upstream.ts), and so which to upload; and whether
 * each reference outside the upload (`--no-closure`) is there for clients:
 * in the cache, or served upstream (judged as any path is, from its local
 * info when `referenceInfo` gives it). The only write it
 * may cause is renewing an old narinfo it relies on (refresh.ts), and with a
 * dry run (an empty `refresh`) not even that.
 */
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import type { CacheBackend } from './backend.js';
import { createLimiter } from './limit.js';
import { type RefreshOptions, presentAndFresh } from './refresh.js';
import { NARINFO_CONTENT_TYPE, narInfoKey } from './stage.js';
import type { Upstream } from './upstream.js';

export interface PresenceOptions {
  readonly backend: CacheBackend;
  /** Upload even when the narinfo exists (then only references outside the set are checked). */
  readonly force?: boolean;
  readonly upstream?: Upstream;
  /**
   * The local store's info of a reference outside the set, for upstream
   * filtering: without it, such a reference is there only when the cache
   * has it (its signatures and NarHash are what an upstream is judged by).
   */
  readonly referenceInfo?: (path: StorePath) => Promise<PathInfo | undefined>;
  /** Existence checks at once. */
  readonly concurrency: number;
  readonly refresh: RefreshOptions;
}

export interface Presence {
  /** Already in the cache. */
  readonly skipped: readonly PathInfo[];
  /** Served by an upstream cache: not uploaded. */
  readonly upstream: readonly PathInfo[];
  readonly toUpload: readonly PathInfo[];
  /** Whether a path that is not uploaded is there for clients: its narinfo is in the cache, or an upstream serves it. */
  available(path: StorePath): boolean;
}

export async function checkPresence(infos: readonly PathInfo[], opts: PresenceOptions): Promise<Presence> {
  const inSet = new Map(infos.map((i) => [i.path.baseName, i]));
  // Signed by an upstream key: not ours to upload, and no request needed to know it.
  const upstreamSigned = opts.upstream ? infos.filter((i) => opts.upstream!.signed(i)) : [];
  const served = new Set(upstreamSigned.map((i) => i.path.baseName));
  const own = served.size > 0 ? infos.filter((i) => !served.has(i.path.baseName)) : infos;

  // Which narinfos exist: the paths themselves (unless forced) and any reference outside the set.
  const check = createLimiter(opts.concurrency);
  const outside = new Map<string, StorePath>();
  for (const i of infos) for (const r of i.references) if (!inSet.has(r.baseName)) outside.set(r.baseName, r);
  const toCheck = [...(opts.force ? [] : own.map((i) => i.path)), ...outside.values()];
  const presence = new Map<string, boolean>();
  await Promise.all(
    toCheck.map((p) =>
      check(async () => presence.set(p.baseName, await presentAndFresh(opts.backend, narInfoKey(p), NARINFO_CONTENT_TYPE, opts.refresh))),
    ),
  );

  const skipped = own.filter((i) => !opts.force && presence.get(i.path.baseName));
  const missing = own.filter((i) => opts.force || !presence.get(i.path.baseName));
  // References outside the set that ours lacks: judged upstream as the set's paths are.
  const outsideMissing = await outsideInfos(
    [...outside.values()].filter((p) => !presence.get(p.baseName)),
    opts,
    check,
  );
  for (const i of outsideMissing) if (opts.upstream!.signed(i)) served.add(i.path.baseName);
  // Asked of the upstream caches only for what ours lacks.
  const ask = [...missing, ...outsideMissing.filter((i) => !served.has(i.path.baseName))];
  for (const b of (await opts.upstream?.lookup(ask)) ?? []) served.add(b);
  return {
    skipped,
    upstream: infos.filter((i) => served.has(i.path.baseName)),
    toUpload: missing.filter((i) => !served.has(i.path.baseName)),
    available: (p) => presence.get(p.baseName) === true || served.has(p.baseName),
  };
}

/** The local info of `refs`, when an upstream could serve them and the caller can say. */
async function outsideInfos(
  refs: readonly StorePath[],
  opts: PresenceOptions,
  limit: ReturnType<typeof createLimiter>,
): Promise<PathInfo[]> {
  const { referenceInfo, upstream } = opts;
  if (refs.length === 0 || !referenceInfo || !upstream?.enabled) return [];
  const infos = await Promise.all(refs.map((p) => limit(() => referenceInfo(p))));
  return infos.filter((i): i is PathInfo => i !== undefined);
}
