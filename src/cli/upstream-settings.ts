/**
 * `--upstream-key`, `--no-upstream-keys`, `--upstream` and `--no-upstream` (upload-path and
 * daemon): parsed once here into a read-only record, each problem a one-line
 * BAD_OPTION error before anything is uploaded; and the one place that opens
 * the upstream caches by URL (http(s):// with fetch, file:// and s3:// as
 * backends, read-only).
 */
import { NarpushError } from '../errors.js';
import { LookupCache } from '../cache/lookup-cache.js';
import { DEFAULT_UPSTREAM_KEYS, type NarInfoSource, Upstream } from '../cache/upstream.js';
import { keyNameError, parsePublicKey } from '../signing/keys.js';
import { type CacheConfig, parseCacheUrl } from './cache-url.js';
import { openCacheBackend } from './open-backend.js';

export interface UpstreamFlags {
  /** As given; empty means the default (DEFAULT_UPSTREAM_KEYS). */
  readonly upstreamKey?: readonly string[];
  readonly upstream?: readonly string[];
  /** --no-upstream: no filtering at all, whatever else is given. */
  readonly noUpstream?: boolean;
  /** --no-upstream-keys: no key, not even the default; the caches alone decide. */
  readonly noUpstreamKeys?: boolean;
}

export type UpstreamCache = { readonly kind: 'http'; readonly url: string } | { readonly kind: 'backend'; readonly config: CacheConfig };

export interface UpstreamSettings {
  readonly keyNames: readonly string[];
  readonly caches: readonly UpstreamCache[];
}

/**
 * How long the daemon believes an upstream's answers (the same NarHash
 * stays the same, but a path can appear upstream later, as with Nix's
 * narinfo-cache-negative-ttl), and how many it keeps.
 */
export const DAEMON_POSITIVE_TTL_MS = 24 * 3600_000;
export const DAEMON_NEGATIVE_TTL_MS = 3600_000;
export const DAEMON_MAX_ANSWERS = 100_000;

function oneLine(s: string): string {
  return s.replace(/[\0-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** The key name of an `--upstream-key` value: a name, or a whole `name:base64` public key. */
export function upstreamKeyName(value: string): string {
  if (value.includes(':')) {
    try {
      return parsePublicKey(value, `--upstream-key '${oneLine(value.slice(0, value.indexOf(':')))}:…'`).name;
    } catch (e) {
      throw new NarpushError('BAD_OPTION', (e as Error).message);
    }
  }
  const why = keyNameError(value);
  if (why !== undefined) throw new NarpushError('BAD_OPTION', `--upstream-key '${oneLine(value)}' is not a key name: ${why}`);
  return value;
}

/** An `--upstream` URL: http(s)://, or file:// / s3:// as `--to` takes them. */
export function upstreamCache(value: string, cwd: string): UpstreamCache {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(value)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new NarpushError('BAD_OPTION', `--upstream '${oneLine(value)}' is not a valid URL`);
    }
    if (url.search !== '' || url.hash !== '') {
      throw new NarpushError('BAD_OPTION', `--upstream '${oneLine(value)}': an http(s) cache URL takes no query or fragment`);
    }
    return { kind: 'http', url: url.href };
  }
  if (scheme === 'file' || scheme === 's3') {
    try {
      return { kind: 'backend', config: parseCacheUrl(value, { cwd }) };
    } catch (e) {
      throw new NarpushError('BAD_OPTION', `--upstream: ${(e as Error).message}`);
    }
  }
  throw new NarpushError('BAD_OPTION', `--upstream takes an https://, http://, file:// or s3:// URL, not '${oneLine(value)}'`);
}

export function upstreamSettings(flags: UpstreamFlags, cwd: string): UpstreamSettings {
  // Checked even with --no-upstream: a typo is reported, not hidden.
  const given = (flags.upstreamKey ?? []).map(upstreamKeyName);
  const caches = (flags.upstream ?? []).map((u) => upstreamCache(u, cwd));
  if (flags.noUpstreamKeys && given.length > 0) {
    throw new NarpushError('BAD_OPTION', '--no-upstream-keys and --upstream-key contradict each other: give one or the other');
  }
  if (flags.noUpstream) return { keyNames: [], caches: [] };
  if (flags.noUpstreamKeys) return { keyNames: [], caches };
  return { keyNames: [...new Set(given.length > 0 ? given : DEFAULT_UPSTREAM_KEYS)], caches };
}

export interface OpenUpstreamOptions {
  readonly storeDir: string;
  /** The daemon's: remembered across batches. Else a cache for this run only. */
  readonly answers?: LookupCache<string>;
  readonly negativeTtlMs?: number;
  readonly onUnavailable?: (cache: string, reason: string) => void;
}

/** The filter for `settings`, or undefined when nothing is filtered. Opens no connection yet. */
export async function openUpstream(settings: UpstreamSettings, opts: OpenUpstreamOptions): Promise<Upstream | undefined> {
  if (settings.keyNames.length === 0 && settings.caches.length === 0) return undefined;
  const sources: NarInfoSource[] = [];
  try {
    for (const c of settings.caches) {
      if (c.kind === 'http') {
        const { HttpNarInfoSource } = await import('../cache/http-source.js');
        sources.push(new HttpNarInfoSource(c.url));
      } else {
        sources.push(await openCacheBackend(c.config));
      }
    }
  } catch (e) {
    await Promise.allSettled(sources.map((s) => s.close()));
    throw e;
  }
  return new Upstream({
    keyNames: settings.keyNames,
    caches: sources,
    storeDir: opts.storeDir,
    // One run asks about each path once: its closure bounds this cache.
    answers: opts.answers ?? new LookupCache<string>({ maxEntries: Number.MAX_SAFE_INTEGER, ttlMs: Infinity }),
    ...(opts.negativeTtlMs !== undefined ? { negativeTtlMs: opts.negativeTtlMs } : {}),
    ...(opts.onUnavailable ? { onUnavailable: opts.onUnavailable } : {}),
  });
}
