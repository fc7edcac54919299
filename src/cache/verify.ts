/**
 * Checking a binary cache end to end, as a substituter would find it: for
 * each narinfo (every one in the cache, or those of chosen store paths), that
 * it parses, names the path its key says, carries a signature by a trusted
 * key (when keys are given), that its NAR object exists with the FileSize
 * and FileHash stated and decompresses to a valid NAR of the NarSize and
 * NarHash stated, that every reference has a narinfo, and that a `.ls`
 * listing, where there is one, is a listing.
 *
 * It is given a CacheReader, which has no write operation: it cannot change
 * the cache. It returns defects as records and never prints; the CLI
 * decides what a user sees. Memory: `jobs` NARs in flight (see
 * verify-nar.ts for one NAR's bound) plus the set of narinfo names, which
 * grows with the number of paths in the cache (about 100 bytes each).
 */
import { NarpushError, isNarpushError } from '../errors.js';
import { type Hash, formatHash, hashEquals } from '../hash/hash.js';
import { type NarInfo, parseNarInfo } from '../narinfo/narinfo.js';
import type { PublicKey } from '../signing/keys.js';
import { trustedKeyMap, verifyNarInfo } from '../signing/sign.js';
import { DEFAULT_STORE_DIR, type StorePath } from '../store/store-path.js';
import { type CacheReader, checkCacheKey } from './backend.js';
import { CACHE_INFO_KEY, parseCacheInfo } from './cache-info.js';
import { scanNar } from './verify-nar.js';

export type DefectKind =
  | 'missing-cache-info'
  | 'missing-narinfo'
  | 'bad-narinfo'
  | 'wrong-store-path'
  | 'bad-signature'
  | 'missing-nar'
  | 'file-size'
  | 'file-hash'
  | 'bad-compression'
  | 'bad-nar'
  | 'nar-size'
  | 'nar-hash'
  | 'missing-reference'
  | 'bad-listing'
  | 'read-error';

export interface Defect {
  /** The store path (or, for a narinfo that does not say, its key; for the cache itself, ''). */
  readonly path: string;
  /** The object the defect is in. */
  readonly key: string;
  readonly kind: DefectKind;
  readonly message: string;
}

export interface PathResult {
  readonly path: string;
  readonly fileBytes: number;
  readonly narBytes: number;
  readonly defects: readonly Defect[];
  /** Why the NAR's contents could not be checked (a compression narpush cannot decompress). */
  readonly unchecked?: string;
}

export interface VerifyReport {
  readonly checked: number;
  readonly fileBytes: number;
  readonly narBytes: number;
  /** Sorted by path, then in the order the checks ran. */
  readonly defects: readonly Defect[];
  readonly unchecked: readonly { readonly path: string; readonly reason: string }[];
}

export type VerifyEvent =
  | { readonly type: 'listed'; readonly total: number }
  | { readonly type: 'bytes'; readonly fileBytes: number }
  | { readonly type: 'checked'; readonly result: PathResult };

export interface VerifyOptions {
  readonly cache: CacheReader;
  /** Require a signature by one of these; empty: signatures are not checked. */
  readonly trustedKeys: readonly PublicKey[];
  /** Check these paths' narinfos only; undefined: every narinfo the cache lists. */
  readonly paths?: readonly StorePath[];
  /** Paths checked at once, each streaming its NAR. */
  readonly jobs: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: VerifyEvent) => void;
}

const NARINFO_KEY = /^([0-9a-df-np-sv-z]{32})\.narinfo$/;
const LISTING_KEY = /^([0-9a-df-np-sv-z]{32})\.ls$/;

/**
 * Check the cache. Errors reaching the cache itself (no such bucket or
 * directory, no access) are thrown; everything wrong inside it is a defect.
 */
export async function verifyCache(opts: VerifyOptions): Promise<VerifyReport> {
  const { cache } = opts;
  const emit = opts.onEvent ?? (() => {});
  const cacheDefects: Defect[] = [];
  const infoText = await cache.get(CACHE_INFO_KEY);
  if (infoText === undefined) {
    cacheDefects.push({ path: '', key: CACHE_INFO_KEY, kind: 'missing-cache-info', message: 'nix-cache-info is missing: Nix does not take this for a binary cache' });
  }
  const storeDir = (infoText && parseCacheInfo(infoText.toString('utf8')).storeDir) || DEFAULT_STORE_DIR;

  // What is there: from one listing, or asked for path by path.
  let targets: { hashPart: string; path?: StorePath }[];
  let present: Lookup;
  let listings: ((hashPart: string) => boolean) | undefined;
  if (opts.paths === undefined) {
    const narinfos = new Set<string>();
    const ls = new Set<string>();
    for await (const o of cache.list('', { signal: opts.signal })) {
      const m = NARINFO_KEY.exec(o.key) ?? undefined;
      if (m) narinfos.add(m[1]!);
      const l = LISTING_KEY.exec(o.key);
      if (l) ls.add(l[1]!);
    }
    targets = [...narinfos].sort().map((hashPart) => ({ hashPart }));
    present = async (h) => narinfos.has(h);
    listings = (h) => ls.has(h);
  } else {
    targets = opts.paths.map((path) => ({ hashPart: path.hashPart, path }));
    const asked = new Map<string, Promise<boolean>>();
    present = (h) => {
      let p = asked.get(h);
      if (!p) asked.set(h, (p = cache.exists(`${h}.narinfo`)));
      return p;
    };
  }
  emit({ type: 'listed', total: targets.length });

  const checker = new PathChecker(opts, storeDir, present, listings, emit);
  const results: PathResult[] = new Array(targets.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < targets.length) {
      const i = next++;
      if (opts.signal?.aborted) throw new NarpushError('INTERRUPTED', 'interrupted', { cause: opts.signal.reason });
      results[i] = await checker.check(targets[i]!.hashPart, targets[i]!.path);
      emit({ type: 'checked', result: results[i]! });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs, targets.length)) }, worker));

  const sorted = [...results].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    checked: results.length,
    fileBytes: results.reduce((n, r) => n + r.fileBytes, 0),
    narBytes: results.reduce((n, r) => n + r.narBytes, 0),
    defects: [...cacheDefects, ...sorted.flatMap((r) => r.defects)],
    unchecked: sorted.flatMap((r) => (r.unchecked === undefined ? [] : [{ path: r.path, reason: r.unchecked }])),
  };
}

type Lookup = (hashPart: string) => Promise<boolean>;

class PathChecker {
  private readonly keys: ReadonlyMap<string, PublicKey>;

  constructor(
    private readonly opts: VerifyOptions,
    private readonly storeDir: string,
    private readonly present: Lookup,
    private readonly listings: ((hashPart: string) => boolean) | undefined,
    private readonly emit: (e: VerifyEvent) => void,
  ) {
    this.keys = trustedKeyMap(opts.trustedKeys);
  }

  async check(hashPart: string, wanted: StorePath | undefined): Promise<PathResult> {
    const key = `${hashPart}.narinfo`;
    const defects: Defect[] = [];
    let path = wanted?.path ?? key;
    const defect = (kind: DefectKind, message: string, at = key): void => {
      defects.push({ path, key: at, kind, message });
    };
    let fileBytes = 0;
    let narBytes = 0;
    let unchecked: string | undefined;
    try {
      const text = await this.opts.cache.get(key);
      if (text === undefined) {
        defect('missing-narinfo', `${key} is missing`);
        return { path, fileBytes, narBytes, defects };
      }
      let info: NarInfo;
      try {
        info = parseNarInfo(text.toString('utf8'), this.storeDir, key);
      } catch (e) {
        if (!isNarpushError(e)) throw e;
        defect('bad-narinfo', e.message);
        return { path, fileBytes, narBytes, defects };
      }
      path = wanted?.path ?? info.storePath.path;
      if (info.storePath.hashPart !== hashPart || (wanted !== undefined && info.storePath.path !== wanted.path)) {
        defect('wrong-store-path', `${key} is the narinfo of ${info.storePath.path}`);
      }
      if (this.keys.size > 0) {
        const problem = this.signatureProblem(info);
        if (problem !== undefined) defect('bad-signature', problem);
      }
      for (const ref of info.references) {
        if (ref.hashPart !== hashPart && !(await this.present(ref.hashPart))) {
          defect('missing-reference', `reference ${ref.path} has no narinfo in the cache`, `${ref.hashPart}.narinfo`);
        }
      }
      // From a listing, only the listings it showed; path by path, one GET tells.
      if (this.listings?.(hashPart) ?? true) await this.checkListing(`${hashPart}.ls`, defect);

      const nar = await this.checkNar(info, defect);
      fileBytes = nar.fileBytes;
      narBytes = nar.narBytes;
      unchecked = nar.unchecked;
    } catch (e) {
      if (this.opts.signal?.aborted || !isNarpushError(e)) throw e;
      defect('read-error', e.message);
    }
    return { path, fileBytes, narBytes, defects, ...(unchecked !== undefined && { unchecked }) };
  }

  /** Why no signature counts, or undefined when one does. */
  private signatureProblem(info: NarInfo): string | undefined {
    if (verifyNarInfo(info, this.keys) > 0) return undefined;
    if (info.sigs.length === 0) return 'has no signature';
    const each = info.sigs.map((sig) => {
      const name = sig.slice(0, Math.max(0, sig.indexOf(':')));
      return this.keys.has(name) ? `an invalid signature by ${name}` : `a signature by ${name || '(no name)'}, not a trusted key`;
    });
    return `has no valid signature by a trusted key: ${each.join(', ')}`;
  }

  private async checkNar(
    info: NarInfo,
    defect: (kind: DefectKind, message: string, at?: string) => void,
  ): Promise<{ fileBytes: number; narBytes: number; unchecked?: string }> {
    const url = info.url;
    try {
      checkCacheKey(url);
    } catch {
      defect('bad-narinfo', `URL '${url}' is not a key in the cache`);
      return { fileBytes: 0, narBytes: 0 };
    }
    const body = await this.opts.cache.getStream(url, { signal: this.opts.signal });
    if (body === undefined) {
      defect('missing-nar', `NAR ${url} is missing`, url);
      return { fileBytes: 0, narBytes: 0 };
    }
    const scan = await scanNar(this.counted(body), {
      compression: info.compression,
      fileHashAlgo: info.fileHash?.algo ?? 'sha256',
      narHashAlgo: info.narHash.algo,
      narSizeLimit: info.narSize,
    });
    if (info.fileSize !== undefined && scan.fileSize !== info.fileSize) {
      defect('file-size', `NAR ${url} has ${scan.fileSize} bytes, the narinfo says FileSize ${info.fileSize}`, url);
    }
    if (info.fileHash !== undefined && !hashEquals(scan.fileHash, info.fileHash)) {
      defect('file-hash', `NAR ${url} has hash ${show(scan.fileHash)}, the narinfo says FileHash ${show(info.fileHash)}`, url);
    }
    if (scan.problem?.kind === 'decompress') {
      defect('bad-compression', `NAR ${url} does not decompress as ${info.compression}: ${scan.problem.message}`, url);
    } else if (scan.problem?.kind === 'too-large') {
      defect('nar-size', `NAR ${url} ${scan.problem.message}, the narinfo says NarSize ${info.narSize} (not decompressed further)`, url);
    } else if (scan.problem?.kind === 'nar') {
      defect('bad-nar', `NAR ${url} is not a valid NAR: ${scan.problem.message.replace(/^invalid NAR: /, '')}`, url);
    }
    if (scan.nar !== undefined) {
      if (scan.nar.size !== info.narSize) {
        defect('nar-size', `NAR ${url} decompresses to ${scan.nar.size} bytes, the narinfo says NarSize ${info.narSize}`, url);
      }
      if (!hashEquals(scan.nar.hash, info.narHash)) {
        defect('nar-hash', `NAR ${url} decompresses to hash ${show(scan.nar.hash)}, the narinfo says NarHash ${show(info.narHash)}`, url);
      }
    }
    return {
      fileBytes: scan.fileSize,
      narBytes: scan.nar?.size ?? 0,
      ...(scan.unsupported !== undefined && { unchecked: `NAR contents not checked: ${scan.unsupported} decompression is not supported` }),
    };
  }

  /** A `.ls` listing must be Nix's JSON: `{"version":1,"root":{"type":…}}`. */
  private async checkListing(key: string, defect: (kind: DefectKind, message: string, at?: string) => void): Promise<void> {
    const body = await this.opts.cache.get(key);
    if (body === undefined) return;
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('latin1'));
    } catch (e) {
      defect('bad-listing', `listing ${key} is not JSON: ${(e as Error).message}`, key);
      return;
    }
    const d = doc as { version?: unknown; root?: { type?: unknown } } | null;
    if (typeof d !== 'object' || d === null || d.version !== 1 || typeof d.root !== 'object' || d.root === null || typeof d.root.type !== 'string') {
      defect('bad-listing', `listing ${key} is not a version 1 NAR listing`, key);
    }
  }

  private async *counted(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      this.emit({ type: 'bytes', fileBytes: chunk.length });
      yield chunk;
    }
  }
}

function show(h: Hash): string {
  return formatHash(h, 'nix32');
}
