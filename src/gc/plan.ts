/**
 * What a collection deletes, decided from an inventory alone (pure: no I/O,
 * no clock; `now` is the moment the listing began).
 *
 * - Roots: narinfos younger than keepSince, or than grace, and the pinned.
 * - Kept: the closure of the roots along References.
 * - Condemned: every other narinfo, in rounds: a narinfo is deleted only
 *   after every condemned narinfo that refers to it (referrers first), so
 *   no visible narinfo ever loses a reference.
 * - Then `<hash>.ls` of condemned paths (and listings with no narinfo),
 *   NARs under nar/ that no kept narinfo names, and build logs under log/
 *   whose derivation is no kept path's deriver.
 * - Never an object younger than grace; never any other key (nix-cache-info,
 *   narpush-gc/ markers, realisations …).
 */
import { NarpushError } from '../errors.js';
import type { Inventory, OtherObject } from './inventory.js';

export interface PlanOptions {
  readonly now: number;
  readonly keepSinceMs: number;
  readonly graceMs: number;
  /** Hash parts of pinned paths. */
  readonly pins: ReadonlySet<string>;
}

export interface GcPlan {
  /** Path numbers per round, referrers in earlier rounds than their references. */
  readonly rounds: number[][];
  /** Whether each path is kept (by number). */
  readonly kept: Uint8Array;
  /** nar/, .ls and log/ objects to delete once the narinfos that need them are gone. */
  readonly nars: OtherObject[];
  readonly listings: OtherObject[];
  readonly logs: OtherObject[];
  /** Objects and bytes that stay, counted from the listing. */
  readonly keptObjects: number;
  readonly keptBytes: number;
}

export function planGc(inv: Inventory, opts: PlanOptions): GcPlan {
  const n = inv.hashes.length;
  const present = (i: number): boolean => !Number.isNaN(inv.mtime[i]!);
  const young = (mtime: number, limit: number): boolean => opts.now - mtime < limit;

  const kept = new Uint8Array(n);
  const stack: number[] = [];
  for (let i = 0; i < n; i++) {
    if (!present(i)) continue;
    if (young(inv.mtime[i]!, opts.keepSinceMs) || young(inv.mtime[i]!, opts.graceMs) || opts.pins.has(inv.hashes[i]!)) {
      kept[i] = 1;
      stack.push(i);
    }
  }
  while (stack.length > 0) {
    for (const r of inv.refs[stack.pop()!]!) {
      if (!kept[r] && present(r)) {
        kept[r] = 1;
        stack.push(r);
      }
    }
  }

  // Referrers first: count each condemned path's condemned referrers, then peel.
  const condemned = (i: number): boolean => present(i) && !kept[i];
  const waiting = new Int32Array(n);
  for (let i = 0; i < n; i++) if (condemned(i)) for (const r of inv.refs[i]!) if (condemned(r)) waiting[r]!++;
  const rounds: number[][] = [];
  let round: number[] = [];
  for (let i = 0; i < n; i++) if (condemned(i) && waiting[i] === 0) round.push(i);
  let placed = 0;
  while (round.length > 0) {
    rounds.push(round);
    placed += round.length;
    const next: number[] = [];
    for (const i of round) for (const r of inv.refs[i]!) if (condemned(r) && --waiting[r]! === 0) next.push(r);
    round = next;
  }
  // Paths on a cycle of references (Nix makes none) can never be peeled: no order would be safe.
  if (placed < countCondemned(n, condemned)) {
    const i = [...waiting.keys()].find((k) => condemned(k) && waiting[k]! > 0)!;
    throw new NarpushError('GC_REFERENCE_CYCLE', `${inv.hashes[i]}.narinfo is on a cycle of references; nothing was deleted`);
  }

  const narInUse = new Uint8Array(inv.narKeys.length);
  const derivers = new Set<string>();
  let keptObjects = 0;
  let keptBytes = 0;
  for (let i = 0; i < n; i++) {
    if (!kept[i]) continue;
    if (inv.nar[i]! >= 0) narInUse[inv.nar[i]!] = 1;
    const d = inv.deriver[i];
    if (d !== undefined) derivers.add(d);
    keptObjects++;
    keptBytes += inv.size[i]!;
  }

  const nars: OtherObject[] = [];
  const listings: OtherObject[] = [];
  const logs: OtherObject[] = [];
  for (const o of inv.others) {
    const old = !young(o.mtime, opts.graceMs);
    let target: OtherObject[] | undefined;
    if (o.key.startsWith('nar/')) {
      const num = inv.narNumberOf(o.key);
      if (num === undefined || !narInUse[num]) target = nars;
    } else if (/^[0-9a-z]{32}\.ls$/.test(o.key)) {
      const i = inv.index.get(o.key.slice(0, 32));
      if (i === undefined || !kept[i]) target = listings;
    } else if (o.key.startsWith('log/')) {
      if (!derivers.has(o.key.slice(4, 36))) target = logs;
    }
    if (target && old) target.push(o);
    else {
      keptObjects++;
      keptBytes += o.size;
    }
  }
  return { rounds, kept, nars, listings, logs, keptObjects, keptBytes };
}

function countCondemned(n: number, condemned: (i: number) => boolean): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (condemned(i)) c++;
  return c;
}
