/**
 * What a cache holds, as far as collecting garbage needs it: every narinfo
 * (its hash part, last-modified time, NAR key, references, deriver) and
 * every other object, read from one listing and a GET per narinfo.
 *
 * Memory, for a cache of a million paths: paths are numbered; each keeps its
 * hash part (a 32-character string, also the key of one Map entry), its
 * time and size (floats), its NAR as a number (NAR keys are interned: a
 * shared NAR once), its references as an Int32Array of path numbers and its
 * deriver's hash part; each other object (NARs, listings, logs) a small
 * record with its key. Measured with 200,000 synthetic paths of ten
 * references, each with its own NAR: about 750 bytes per path, all told, so
 * some 750 MB for a million (within Node's default heap on 64-bit
 * machines). Narinfo bodies are parsed as they arrive and dropped. (One
 * Int32Array per path costs ~100 bytes of overhead: a shared array with
 * offsets would save that, if it ever matters.)
 *
 * Reads only: never writes or deletes. A narinfo it cannot read (no
 * StorePath or URL) stops the collection (INVENTORY_BAD_NARINFO) before
 * anything is deleted: its NAR and references are unknown.
 */
import { NarpushError } from '../errors.js';
import type { CacheBackend, ListedObject } from '../cache/backend.js';
import { createLimiter } from '../cache/limit.js';

const HASH = /^[0-9a-df-np-sv-z]{32}$/;

/** An object other than a narinfo, as listed. */
export interface OtherObject {
  readonly key: string;
  readonly size: number;
  /** ms since the epoch */
  readonly mtime: number;
}

export class Inventory {
  /** Path number -> hash part. */
  readonly hashes: string[] = [];
  readonly index = new Map<string, number>();
  readonly mtime: number[] = [];
  readonly size: number[] = [];
  /** Path number -> NAR number (-1: its URL could not be read yet). */
  readonly nar: number[] = [];
  readonly refs: Int32Array[] = [];
  readonly deriver: (string | undefined)[] = [];
  /** NAR number -> key, as narinfos name it. */
  readonly narKeys: string[] = [];
  private readonly narIndex = new Map<string, number>();
  /** Everything else the listing showed (nar/, *.ls, log/, …). */
  readonly others: OtherObject[] = [];

  addNarInfo(hash: string, o: ListedObject): void {
    this.index.set(hash, this.hashes.length);
    this.hashes.push(hash);
    this.mtime.push(o.lastModified.getTime());
    this.size.push(o.size);
    this.nar.push(-1);
    this.refs.push(EMPTY);
    this.deriver.push(undefined);
  }

  narNumber(key: string): number {
    let n = this.narIndex.get(key);
    if (n === undefined) {
      n = this.narKeys.length;
      this.narKeys.push(key);
      this.narIndex.set(key, n);
    }
    return n;
  }

  narNumberOf(key: string): number | undefined {
    return this.narIndex.get(key);
  }
}

const EMPTY = new Int32Array(0);

/** The fields of a narinfo collection needs, from its text; undefined when it has no StorePath or URL. */
export function narInfoLinks(text: string): { url: string; references: string[]; deriver?: string } | undefined {
  let url: string | undefined;
  let storePath = false;
  let references: string[] = [];
  let deriver: string | undefined;
  for (const line of text.split('\n')) {
    const colon = line.indexOf(': ');
    if (colon < 0) continue;
    const field = line.slice(0, colon);
    const value = line.slice(colon + 2).trim();
    if (field === 'StorePath') storePath = value.length > 0;
    else if (field === 'URL') url = value;
    else if (field === 'References') references = value.split(' ').filter((r) => r.length > 0);
    else if (field === 'Deriver' && value !== 'unknown-deriver') deriver = value;
  }
  if (!storePath || !url) return undefined;
  return { url, references, ...(deriver !== undefined && { deriver }) };
}

/** The hash part of a narinfo key (`<hash>.narinfo`), or undefined for any other key. */
export function narInfoHash(key: string): string | undefined {
  if (!key.endsWith('.narinfo') || key.includes('/')) return undefined;
  const h = key.slice(0, -'.narinfo'.length);
  return HASH.test(h) ? h : undefined;
}

export interface InventoryOptions {
  /** narinfo GETs at once */
  readonly jobs: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (listed: number, read: number) => void;
}

/** List the whole cache, then read every narinfo it listed. */
export async function takeInventory(backend: CacheBackend, opts: InventoryOptions): Promise<Inventory> {
  const inv = new Inventory();
  for await (const o of backend.list('', opts.signal ? { signal: opts.signal } : {})) {
    const hash = narInfoHash(o.key);
    if (hash !== undefined) inv.addNarInfo(hash, o);
    else inv.others.push({ key: o.key, size: o.size, mtime: o.lastModified.getTime() });
    if ((inv.hashes.length + inv.others.length) % 1000 === 0) opts.onProgress?.(inv.hashes.length + inv.others.length, 0);
  }
  const limit = createLimiter(opts.jobs);
  const gone: number[] = [];
  let read = 0;
  // In slices, so that a million pending promises are never held at once.
  const SLICE = 4096;
  for (let start = 0; start < inv.hashes.length; start += SLICE) {
    opts.signal?.throwIfAborted();
    const slice = inv.hashes.slice(start, start + SLICE);
    await Promise.all(
      slice.map((hash, k) =>
        limit(async () => {
          const i = start + k;
          const body = await backend.get(`${hash}.narinfo`);
          read++;
          if (body === undefined) return void gone.push(i);
          const links = narInfoLinks(body.toString('utf8'));
          if (!links) {
            throw new NarpushError('INVENTORY_BAD_NARINFO', `cannot read ${hash}.narinfo in ${backend.description} (no StorePath or URL); nothing was deleted`);
          }
          inv.nar[i] = inv.narNumber(links.url);
          inv.deriver[i] = links.deriver?.slice(0, 32);
          inv.refs[i] = Int32Array.from(
            links.references.flatMap((r) => {
              const n = inv.index.get(r.slice(0, 32));
              return n === undefined || n === i ? [] : [n];
            }),
          );
        }),
      ),
    );
    opts.onProgress?.(inv.hashes.length + inv.others.length, read);
  }
  // A narinfo deleted between the listing and its GET (another collector) is treated as absent.
  for (const i of gone) inv.mtime[i] = Number.NaN;
  return inv;
}
