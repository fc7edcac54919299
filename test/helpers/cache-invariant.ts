/**
 * The invariant every client of a cache relies on, checked directly: each
 * narinfo's NAR exists, and so does the narinfo of each of its references.
 * (`narpush verify` checks more; the lead may put it here instead.)
 * Returns the violations, one line each; empty when the cache is sound.
 */
import type { CacheBackend } from '../../src/cache/backend.js';
import { narInfoHash, narInfoLinks } from '../../src/gc/inventory.js';

/** Over a snapshot of keys and narinfo bodies (synchronous: for a test's scheduler). */
export function invariantViolations(has: (key: string) => boolean, narinfos: Iterable<[string, string]>): string[] {
  const out: string[] = [];
  for (const [key, text] of narinfos) {
    const links = narInfoLinks(text);
    if (!links) {
      out.push(`${key}: unreadable`);
      continue;
    }
    if (!has(links.url)) out.push(`${key}: its NAR ${links.url} is missing`);
    for (const r of links.references) {
      const ref = `${r.slice(0, 32)}.narinfo`;
      if (ref !== key && !has(ref)) out.push(`${key}: its reference ${r} is missing`);
    }
  }
  return out;
}

export function memoryInvariantViolations(objects: ReadonlyMap<string, { body: Buffer }>): string[] {
  const narinfos = [...objects].filter(([k]) => narInfoHash(k) !== undefined).map(([k, o]): [string, string] => [k, o.body.toString('utf8')]);
  return invariantViolations((k) => objects.has(k), narinfos);
}

/** Over a live backend (file:// or S3), listed once. */
export async function backendInvariantViolations(backend: CacheBackend): Promise<string[]> {
  const keys = new Set<string>();
  for await (const o of backend.list('')) keys.add(o.key);
  const narinfos: [string, string][] = [];
  for (const k of keys) {
    if (narInfoHash(k) === undefined) continue;
    const body = await backend.get(k);
    if (body) narinfos.push([k, body.toString('utf8')]);
  }
  return invariantViolations((k) => keys.has(k), narinfos);
}
