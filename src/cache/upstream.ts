/**
 * Upstream filtering: which store paths another cache already serves, so
 * that narpush need not upload them (as attic does with its upstream key
 * names). A path is served upstream when
 *  - the local store holds a signature by a key named in `keyNames` (free:
 *    PathInfo.sigs), or
 *  - one of `caches` serves its narinfo with the same NarHash (one GET of
 *    `<hash>.narinfo` per path and cache, in parallel, answers remembered
 *    in `answers`).
 * Each path is judged on its own, as attic does: the whole closure is still
 * computed, and a path reachable only through upstream paths is uploaded
 * unless it is itself upstream (it usually is: cache.nixos.org serves the
 * closure of what it serves). Skipped paths stay in the References of the
 * paths that are uploaded; the caller treats them as satisfied references.
 *
 * What this module must never do: fail an upload. An upstream that is down,
 * answers 500, times out, or serves garbage (or is a cache for another store
 * directory) only means "not known to be upstream": the path is uploaded,
 * and `onUnavailable` is told once, not per path. Failures are never
 * remembered in `answers`. It opens nothing by URL (cli/upstream-settings.ts
 * does) and prints nothing.
 */
import { formatHash } from '../hash/hash.js';
import { parseNarInfo } from '../narinfo/narinfo.js';
import type { PathInfo } from '../store/path-info.js';
import { CACHE_INFO_KEY, parseCacheInfo } from './cache-info.js';
import { createLimiter } from './limit.js';
import type { LookupCache } from './lookup-cache.js';

/** Nix's own default substituter signs with this key; narpush skips its paths unless told otherwise. */
export const DEFAULT_UPSTREAM_KEYS: readonly string[] = ['cache.nixos.org-1'];

/** Read access to a cache: a CacheBackend (file://, s3://) or an HTTP cache (http-source.ts). */
export interface NarInfoSource {
  readonly description: string;
  /** The object, or undefined when the cache does not have it; rejects when the cache cannot answer. */
  get(key: string): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

/** An upstream's answer for one path: the NarHash it serves (nix32), or '' when it has no such narinfo. */
export type UpstreamAnswer = string;

export interface UpstreamOptions {
  /** Key names (the part before ':') whose signatures mark a path as upstream. */
  readonly keyNames: readonly string[];
  readonly caches: readonly NarInfoSource[];
  /** The local store directory: an upstream for another one is not used. */
  readonly storeDir: string;
  /** Answers remembered across lookups (a run's worth for upload-path; bounded and expiring in the daemon). */
  readonly answers: LookupCache<UpstreamAnswer>;
  /** How long "not there" is believed (Nix: narinfo-cache-negative-ttl); the cache's own TTL unless set. */
  readonly negativeTtlMs?: number;
  /** Narinfo requests at once, over all caches. */
  readonly concurrency?: number;
  /** An upstream could not be used: said once, then again only after it has answered since. */
  readonly onUnavailable?: (cache: string, reason: string) => void;
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

export class Upstream {
  private readonly keyNames: ReadonlySet<string>;
  private readonly limit;
  /** Per cache: its nix-cache-info check (undefined: usable, else why not), once it has succeeded. */
  private readonly checked = new Map<number, Promise<string | undefined>>();
  private readonly failing = new Set<number>();

  constructor(private readonly options: UpstreamOptions) {
    this.keyNames = new Set(options.keyNames);
    this.limit = createLimiter(options.concurrency ?? 32);
  }

  /** Whether anything is filtered at all. */
  get enabled(): boolean {
    return this.keyNames.size > 0 || this.options.caches.length > 0;
  }

  /** Signed by an upstream key in the local store: known without a request. */
  signed(info: PathInfo): boolean {
    if (this.keyNames.size === 0) return false;
    return info.sigs.some((s) => {
      const colon = s.indexOf(':');
      return colon > 0 && this.keyNames.has(s.slice(0, colon));
    });
  }

  /** Of `infos`, the base names some upstream cache serves with the same NarHash. Never rejects. */
  async lookup(infos: readonly PathInfo[]): Promise<ReadonlySet<string>> {
    const served = new Set<string>();
    if (this.options.caches.length === 0 || infos.length === 0) return served;
    // Caches that failed during this lookup get no more requests in it (a dead upstream costs one timeout, not one per path).
    const down = new Set<number>();
    await Promise.all(
      infos.map(async (info) => {
        for (let c = 0; c < this.options.caches.length; c++) {
          if (down.has(c)) continue;
          const answer = await this.answer(c, info, down);
          if (answer !== undefined && answer === formatHash(info.narHash)) {
            served.add(info.path.baseName);
            return;
          }
        }
      }),
    );
    return served;
  }

  close(): Promise<void> {
    return Promise.allSettled(this.options.caches.map((c) => c.close())).then(() => {});
  }

  /** Cache `c`'s answer for `info` (remembered or asked), or undefined when it cannot say. */
  private async answer(c: number, info: PathInfo, down: Set<number>): Promise<UpstreamAnswer | undefined> {
    const key = `${c} ${info.path.hashPart}`;
    const known = this.options.answers.get(key);
    if (known !== undefined) return known;
    const cache = this.options.caches[c]!;
    try {
      const unusable = await this.usable(c);
      if (unusable !== undefined) {
        down.add(c);
        return undefined;
      }
      if (down.has(c)) return undefined;
      const body = await this.limit(() => cache.get(`${info.path.hashPart}.narinfo`));
      let answer: UpstreamAnswer = '';
      if (body !== undefined) {
        const ni = parseNarInfo(body.toString('utf8'), this.options.storeDir, `${cache.description}/${info.path.hashPart}.narinfo`);
        if (ni.storePath.path !== info.path.path) throw new Error(`its narinfo for ${info.path.hashPart} is of '${ni.storePath.path}'`);
        answer = formatHash(ni.narHash);
      }
      this.failing.delete(c);
      if (answer === '' && this.options.negativeTtlMs !== undefined) this.options.answers.set(key, answer, this.options.negativeTtlMs);
      else this.options.answers.set(key, answer);
      return answer;
    } catch (e) {
      down.add(c);
      this.unavailable(c, message(e));
      return undefined;
    }
  }

  /** Undefined when cache `c` is for this store directory (or does not say); else why not. Rejects when it cannot be read. */
  private usable(c: number): Promise<string | undefined> {
    let check = this.checked.get(c);
    if (check === undefined) {
      const cache = this.options.caches[c]!;
      check = this.limit(() => cache.get(CACHE_INFO_KEY)).then((body) => {
        const storeDir = body === undefined ? undefined : parseCacheInfo(body.toString('utf8')).storeDir;
        if (storeDir === undefined || storeDir === this.options.storeDir) return undefined;
        const why = `it is a cache for the store '${storeDir}', not '${this.options.storeDir}'`;
        this.unavailable(c, why);
        return why;
      });
      this.checked.set(c, check);
      // A cache that could not be read is asked again next time; a wrong store directory is final.
      check.catch(() => this.checked.delete(c));
    }
    return check;
  }

  private unavailable(c: number, reason: string): void {
    if (this.failing.has(c)) return;
    this.failing.add(c);
    this.options.onUnavailable?.(this.options.caches[c]!.description, reason);
  }
}
