/**
 * `narpush gc` as a library call: announce the collection (a marker, see
 * cache/gc-fence.ts), take the inventory, plan, sweep, abort incomplete
 * uploads, record the end, and report. Why this is safe beside running
 * uploaders: README.md in this folder.
 *
 * Never deletes anything when the inventory or the plan fails, in a dry run,
 * or after its deadline; never touches keys outside narinfos, `.ls`
 * listings, nar/, log/, and its own markers. Prints nothing: progress and
 * results are returned or reported as events.
 */
import { randomBytes } from 'node:crypto';
import { NarpushError, isNarpushError } from '../errors.js';
import type { CacheBackend, IncompleteUpload } from '../cache/backend.js';
import { GC_MARKER_HORIZON_MS, GC_MARKER_PREFIX, formatGcMarker, parseGcMarker } from '../cache/gc-fence.js';
import { takeInventory } from './inventory.js';
import { type GcPlan, planGc } from './plan.js';
import { sweep } from './sweep.js';

export const DEFAULT_GRACE_MS = 3600_000;
/** A collection sends no delete after this long (its marker says so; see gc-fence.ts). */
export const DEFAULT_TIME_LIMIT_MS = 12 * 3600_000;

export interface GcOptions {
  readonly keepSinceMs: number;
  readonly graceMs?: number;
  /** Hash parts of pinned store paths. */
  readonly pins?: ReadonlySet<string>;
  readonly dryRun?: boolean;
  /** Requests at once (narinfo reads, delete batches). */
  readonly jobs?: number;
  readonly timeLimitMs?: number;
  readonly clock?: () => Date;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: GcEvent) => void;
}

export type GcEvent =
  | { readonly type: 'inventory'; readonly listed: number; readonly read: number }
  | { readonly type: 'planned'; readonly narinfos: number; readonly others: number }
  | { readonly type: 'deleted'; readonly objects: number; readonly bytes: number };

export interface GcCount {
  readonly objects: number;
  readonly bytes: number;
}

export interface GcReport {
  readonly dryRun: boolean;
  readonly kept: GcCount;
  /** Deleted (with dryRun: what would be). */
  readonly freed: GcCount;
  readonly narinfos: number;
  readonly nars: number;
  readonly listings: number;
  readonly logs: number;
  /** Incomplete uploads aborted (or, with dryRun, that would be); null when the backend cannot list them. */
  readonly abortedUploads: number | null;
  readonly failedCount: number;
  readonly failures: readonly { readonly key: string; readonly message: string }[];
  readonly timedOut: boolean;
}

export async function collectGarbage(backend: CacheBackend, opts: GcOptions): Promise<GcReport> {
  const clock = opts.clock ?? (() => new Date());
  const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
  const jobs = Math.max(1, opts.jobs ?? 16);
  const dryRun = opts.dryRun ?? false;
  if (!dryRun && !backend.deleteMany) {
    throw new NarpushError('GC_UNSUPPORTED', `${backend.description} cannot delete objects`);
  }
  const started = clock();
  const deadline = started.getTime() + (opts.timeLimitMs ?? DEFAULT_TIME_LIMIT_MS);
  const markerKey = `${GC_MARKER_PREFIX}${started.toISOString().replace(/[:.]/g, '-')}-${randomBytes(4).toString('hex')}.json`;
  const marker = { started, deadline: new Date(deadline) };
  // Announced before the listing begins: an uploader that does not see it listed nothing we will use.
  if (!dryRun) await backend.putBytes(markerKey, Buffer.from(formatGcMarker(marker)), 'application/json');
  try {
    const inv = await takeInventory(backend, {
      jobs,
      ...(opts.signal && { signal: opts.signal }),
      onProgress: (listed, read) => opts.onEvent?.({ type: 'inventory', listed, read }),
    });
    const plan = planGc(inv, { now: started.getTime(), keepSinceMs: opts.keepSinceMs, graceMs, pins: opts.pins ?? new Set() });
    const narinfos = plan.rounds.reduce((a, r) => a + r.length, 0);
    opts.onEvent?.({ type: 'planned', narinfos, others: plan.nars.length + plan.listings.length + plan.logs.length });
    const incomplete = await staleUploads(backend, started.getTime() - graceMs, opts.signal);
    if (dryRun) return dryReport(inv.size, plan, narinfos, incomplete?.length ?? null);

    const result = await sweep(backend, inv, plan, {
      jobs,
      deadline,
      clock,
      ...(opts.signal && { signal: opts.signal }),
      onDeleted: (objects, bytes) => opts.onEvent?.({ type: 'deleted', objects, bytes }),
    });
    let aborted: number | null = incomplete ? 0 : null;
    for (const u of incomplete ?? []) {
      if (clock().getTime() >= deadline || opts.signal?.aborted) break;
      await backend.abortIncomplete!(u);
      aborted!++;
    }
    await removeOldMarkers(backend, started.getTime() - GC_MARKER_HORIZON_MS, markerKey);
    const planned = narinfos + plan.nars.length + plan.listings.length + plan.logs.length;
    return {
      dryRun: false,
      kept: { objects: plan.keptObjects + (planned - result.deletedObjects), bytes: plan.keptBytes + plannedBytes(inv.size, plan) - result.deletedBytes },
      freed: { objects: result.deletedObjects, bytes: result.deletedBytes },
      narinfos,
      nars: plan.nars.length,
      listings: plan.listings.length,
      logs: plan.logs.length,
      abortedUploads: aborted,
      failedCount: result.failedCount,
      failures: result.failures.map((f) => ({ key: f.key, message: f.error.message })),
      timedOut: result.timedOut,
    };
  } finally {
    // The end is recorded even after a failure: every request we sent has settled.
    if (!dryRun) await backend.putBytes(markerKey, Buffer.from(formatGcMarker({ ...marker, ended: clock() })), 'application/json');
  }
}

function plannedBytes(sizes: readonly number[], plan: GcPlan): number {
  let b = 0;
  for (const r of plan.rounds) for (const i of r) b += sizes[i]!;
  for (const o of [...plan.nars, ...plan.listings, ...plan.logs]) b += o.size;
  return b;
}

function dryReport(sizes: readonly number[], plan: GcPlan, narinfos: number, incomplete: number | null): GcReport {
  const objects = narinfos + plan.nars.length + plan.listings.length + plan.logs.length;
  return {
    dryRun: true,
    kept: { objects: plan.keptObjects, bytes: plan.keptBytes },
    freed: { objects, bytes: plannedBytes(sizes, plan) },
    narinfos,
    nars: plan.nars.length,
    listings: plan.listings.length,
    logs: plan.logs.length,
    abortedUploads: incomplete,
    failedCount: 0,
    failures: [],
    timedOut: false,
  };
}

/** Incomplete uploads begun before `before`; undefined when the backend cannot list them. */
async function staleUploads(backend: CacheBackend, before: number, signal?: AbortSignal): Promise<IncompleteUpload[] | undefined> {
  if (!backend.listIncomplete || !backend.abortIncomplete) return undefined;
  const out: IncompleteUpload[] = [];
  try {
    for await (const u of backend.listIncomplete(signal ? { signal } : {})) if (u.initiated.getTime() < before) out.push(u);
  } catch (e) {
    if (isNarpushError(e) && e.code === 'INCOMPLETE_UNSUPPORTED') return undefined;
    throw e;
  }
  return out;
}

/** Markers of collections that ended long ago (no upload still running can have begun before them). */
async function removeOldMarkers(backend: CacheBackend, before: number, own: string): Promise<void> {
  const old: string[] = [];
  for await (const o of backend.list(GC_MARKER_PREFIX)) {
    if (o.key === own || o.lastModified.getTime() >= before) continue;
    const body = await backend.get(o.key);
    const m = body && parseGcMarker(body.toString('utf8'));
    if (m && (m.ended ?? m.deadline).getTime() < before) old.push(o.key);
  }
  for (let s = 0; s < old.length; s += 1000) await backend.deleteMany!(old.slice(s, s + 1000));
}
