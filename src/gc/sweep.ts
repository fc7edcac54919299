/**
 * Carrying out a plan: deletes in batches of up to 1,000 keys, `jobs`
 * batches at once, in the plan's order. A narinfo round starts only when
 * the round before it has settled; a narinfo whose referrer could not be
 * deleted stays (and so does everything it needs), a NAR stays when any
 * narinfo naming it stayed. No request is sent after the deadline (see
 * cache/gc-fence.ts: uploaders count on it). Retries are the backend's (as
 * for uploads).
 */
import { type CacheBackend, MAX_DELETE_BATCH } from '../cache/backend.js';
import { createLimiter } from '../cache/limit.js';
import type { Inventory, OtherObject } from './inventory.js';
import type { GcPlan } from './plan.js';

export interface SweepOptions {
  readonly jobs: number;
  readonly deadline: number;
  readonly clock: () => Date;
  /** Stops the sweep like the deadline does (SIGINT/SIGTERM): requests in flight settle, nothing new is sent. */
  readonly signal?: AbortSignal;
  readonly onDeleted?: (objects: number, bytes: number) => void;
}

export interface SweepResult {
  readonly deletedObjects: number;
  readonly deletedBytes: number;
  /** Keys whose deletion failed, with why (the first few). */
  readonly failures: { readonly key: string; readonly error: Error }[];
  readonly failedCount: number;
  /** Stopped because the deadline came (or the signal aborted); what was left stays. */
  readonly timedOut: boolean;
}

const MAX_REPORTED_FAILURES = 10;

export async function sweep(backend: CacheBackend, inv: Inventory, plan: GcPlan, opts: SweepOptions): Promise<SweepResult> {
  const deleteMany = backend.deleteMany?.bind(backend);
  if (!deleteMany) throw new Error(`${backend.description} cannot delete`);
  const limit = createLimiter(Math.max(1, opts.jobs));
  let deletedObjects = 0;
  let deletedBytes = 0;
  let failedCount = 0;
  let timedOut = false;
  const failures: { key: string; error: Error }[] = [];

  /** Delete `items`; returns which were deleted. */
  const remove = async <T>(items: readonly T[], key: (t: T) => string, size: (t: T) => number): Promise<boolean[]> => {
    const done = new Array<boolean>(items.length).fill(false);
    const batches: number[][] = [];
    for (let s = 0; s < items.length; s += MAX_DELETE_BATCH) batches.push([...Array(Math.min(MAX_DELETE_BATCH, items.length - s)).keys()].map((k) => s + k));
    await Promise.all(
      batches.map((b) =>
        limit(async () => {
          if (opts.clock().getTime() >= opts.deadline || opts.signal?.aborted) {
            timedOut = true;
            return;
          }
          let errors: (Error | undefined)[];
          try {
            errors = await deleteMany(b.map((k) => key(items[k]!)));
          } catch (e) {
            errors = b.map(() => (e instanceof Error ? e : new Error(String(e))));
          }
          let bytes = 0;
          b.forEach((k, j) => {
            const error = errors[j];
            if (error) {
              failedCount++;
              if (failures.length < MAX_REPORTED_FAILURES) failures.push({ key: key(items[k]!), error });
              return;
            }
            done[k] = true;
            deletedObjects++;
            bytes += size(items[k]!);
          });
          deletedBytes += bytes;
          opts.onDeleted?.(deletedObjects, deletedBytes);
        }),
      ),
    );
    return done;
  };

  // Narinfos, referrers first. A path stays if it failed, or if a referrer of it stayed.
  const stayed = new Uint8Array(inv.hashes.length);
  for (const round of plan.rounds) {
    const ready = round.filter((i) => !stayed[i]);
    const done = await remove(ready, (i) => `${inv.hashes[i]}.narinfo`, (i) => inv.size[i]!);
    ready.forEach((i, k) => {
      if (!done[k]) stayed[i] = 1;
    });
    for (const i of round) if (stayed[i]) for (const r of inv.refs[i]!) if (!plan.kept[r]) stayed[r] = 1;
  }
  const narStays = new Uint8Array(inv.narKeys.length);
  const narinfoStays = new Set<string>();
  for (const round of plan.rounds) {
    for (const i of round) {
      if (!stayed[i]) continue;
      if (inv.nar[i]! >= 0) narStays[inv.nar[i]!] = 1;
      narinfoStays.add(inv.hashes[i]!);
    }
  }
  const key = (o: OtherObject): string => o.key;
  const size = (o: OtherObject): number => o.size;
  await remove(plan.listings.filter((o) => !narinfoStays.has(o.key.slice(0, 32))), key, size);
  await remove(
    plan.nars.filter((o) => {
      const n = inv.narNumberOf(o.key);
      return n === undefined || !narStays[n];
    }),
    key,
    size,
  );
  await remove(plan.logs, key, size);
  return { deletedObjects, deletedBytes, failures, failedCount, timedOut };
}
