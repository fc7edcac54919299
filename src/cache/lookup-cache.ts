/**
 * A bounded, expiring map for answers that are worth remembering for a while
 * but not for ever (an upstream cache's narinfo lookups, in the daemon).
 * Bounded: past `maxEntries` the least recently used entry goes, so a daemon
 * that sees millions of paths holds at most that many answers. Expiring: an
 * entry is forgotten `ttlMs` after it was set (each value chooses its own
 * TTL class, see `set`). The clock is injected, so tests need no waiting.
 * No I/O; never caches failures (the caller simply does not `set` them).
 */

export interface LookupCacheOptions {
  readonly maxEntries: number;
  /** Milliseconds an entry lives; `Infinity` for the life of the cache (one run). */
  readonly ttlMs: number;
  readonly now?: () => number;
}

export class LookupCache<V> {
  // A Map iterates in insertion order: re-inserting on use makes the first key the least recently used.
  private readonly entries = new Map<string, { readonly value: V; readonly expires: number }>();
  private readonly now: () => number;

  constructor(private readonly options: LookupCacheOptions) {
    if (!(options.maxEntries >= 1)) throw new RangeError('maxEntries must be at least 1');
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value, or undefined when absent or expired (an expired entry is dropped). */
  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    this.entries.delete(key);
    if (e.expires <= this.now()) return undefined;
    this.entries.set(key, e);
    return e.value;
  }

  /** Remember `value`; `ttlMs` overrides the cache's TTL for this entry. */
  set(key: string, value: V, ttlMs: number = this.options.ttlMs): void {
    this.entries.delete(key);
    this.entries.set(key, { value, expires: this.now() + ttlMs });
    while (this.entries.size > this.options.maxEntries) {
      this.entries.delete(this.entries.keys().next().value as string);
    }
  }
}
