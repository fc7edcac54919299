/**
 * How uploaders and `narpush gc` stay out of each other's way without a
 * server or a lock: the uploader's half of the protocol (the collector's is
 * in src/gc/; the whole argument is in src/gc/README.md).
 *
 * A collector decides from a listing and deletes afterwards; S3 has no
 * conditional delete, so an object an uploader renews or re-creates after
 * the collector listed it can still be deleted. Each collector therefore
 * announces itself: before it lists anything it writes a marker
 * `narpush-gc/<id>.json` (started, deadline), and after its last delete has
 * settled it rewrites the marker with the time it ended. It never sends a
 * delete after its deadline, so a marker left by a collector that crashed
 * counts as ended at its deadline.
 *
 * An uploader records `since` before it checks what the cache holds, and
 * before it makes each narinfo visible it asks the fence: did any collector
 * run at any moment since then? If one did, the objects the upload relies on
 * may have been condemned from a listing taken before the upload renewed or
 * re-created them, and the narinfo is not published (GC_CONFLICT: the
 * daemon retries it later, from the start). If none did, every collector
 * that ever deletes one of those objects listed it after `since`, when the
 * upload had already renewed it (see refresh.ts).
 *
 * Clocks: times in markers are the collector's clock, `since` is the
 * uploader's; `clockSkewMs` is added on both sides. Must never write or
 * delete a marker (only the collector does); a marker it cannot read counts
 * as a collector running.
 */
import { NarpushError } from '../errors.js';
import type { CacheBackend } from './backend.js';

export const GC_MARKER_PREFIX = 'narpush-gc/';
/** How far apart the clocks of uploaders and collectors may be. */
export const DEFAULT_CLOCK_SKEW_MS = 5 * 60_000;
/** Markers of collectors that ended longer ago than this are removed (by the next collector); uploads must be shorter. */
export const GC_MARKER_HORIZON_MS = 7 * 24 * 3600_000;

export interface GcMarker {
  readonly started: Date;
  /** The collector sends no delete after this time. */
  readonly deadline: Date;
  /** When its last delete settled; absent while it runs (or if it crashed). */
  readonly ended?: Date;
}

export function formatGcMarker(m: GcMarker): string {
  const o = { started: m.started.toISOString(), deadline: m.deadline.toISOString(), ...(m.ended && { ended: m.ended.toISOString() }) };
  return `${JSON.stringify(o)}\n`;
}

export function parseGcMarker(text: string): GcMarker | undefined {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    const date = (v: unknown): Date | undefined => (typeof v === 'string' && !Number.isNaN(Date.parse(v)) ? new Date(v) : undefined);
    const started = date(o.started);
    const deadline = date(o.deadline);
    if (!started || !deadline) return undefined;
    const ended = date(o.ended);
    return { started, deadline, ...(ended && { ended }) };
  } catch {
    return undefined;
  }
}

/** The last moment this collector may have deleted anything. */
export function gcLastDelete(m: GcMarker): Date {
  return m.ended && m.ended < m.deadline ? m.ended : m.deadline;
}

export interface FenceOptions {
  readonly clock?: () => Date;
  readonly clockSkewMs?: number;
}

/**
 * Answers "has a collector run since `since`?", sharing one listing of the
 * markers among every caller that asks while it is already waiting for the
 * next one (a listing that started before a caller asked cannot answer it).
 */
export class GcFence {
  // The listing under way, and the one that callers arriving meanwhile wait for (it starts after it).
  private inFlight?: Promise<NarpushError | undefined>;
  private pending?: Promise<NarpushError | undefined>;
  private readonly skew: number;

  constructor(
    private readonly backend: CacheBackend,
    private readonly since: Date,
    opts: FenceOptions = {},
  ) {
    this.skew = opts.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS;
  }

  /** Undefined when no collector ran since `since`, else the GC_CONFLICT error to fail with. Throws if the cache cannot be listed. */
  check(): Promise<NarpushError | undefined> {
    this.pending ??= (this.inFlight ?? Promise.resolve(undefined))
      .catch(() => undefined)
      .then(() => {
        this.pending = undefined;
        const p = this.look();
        this.inFlight = p;
        p.catch(() => {}).finally(() => {
          if (this.inFlight === p) this.inFlight = undefined;
        });
        return p;
      });
    return this.pending;
  }

  private async look(): Promise<NarpushError | undefined> {
    for await (const o of this.backend.list(GC_MARKER_PREFIX)) {
      if (!o.key.endsWith('.json')) continue;
      const body = await this.backend.get(o.key);
      if (body === undefined) continue; // removed meanwhile: ended long ago
      const m = parseGcMarker(body.toString('utf8'));
      const overlaps = !m || gcLastDelete(m).getTime() + this.skew >= this.since.getTime();
      if (overlaps) {
        return new NarpushError(
          'GC_CONFLICT',
          `narpush gc ran on ${this.backend.description} during this upload (${o.key}); not publishing, to be retried`,
        );
      }
    }
    return undefined;
  }
}
