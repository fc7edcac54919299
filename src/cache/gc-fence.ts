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
 * An uploader reads the markers before it checks what the cache holds (the
 * fence's `open`), and again before it makes each narinfo visible: if a
 * collector was running at the first look, or a marker appeared since, a
 * collection overlapped the upload; the objects the upload relies on may
 * have been condemned from a listing taken before the upload renewed or
 * re-created them, so the narinfo is not published (GC_CONFLICT: the daemon
 * retries it later, from the start). If none did, every collector that ever
 * deletes one of those objects listed it after the first look, when the
 * upload had already renewed it (see refresh.ts) or was about to make it
 * young by referring to it. Comparing sets of markers needs no clocks;
 * only a marker still "running" is judged by time (after its deadline plus
 * `clockSkewMs` by the uploader's clock, a crashed collector no longer
 * counts). Must never write or delete a marker (only the collector does); a
 * marker it cannot read counts as a collector running.
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

export interface FenceOptions {
  readonly clock?: () => Date;
  readonly clockSkewMs?: number;
}

/** The markers as one look saw them: key -> whether that collector may still be deleting. */
type Seen = Map<string, boolean>;

/** The markers of collections that may still be deleting (for an uploader that waits them out). */
export async function runningCollections(backend: CacheBackend, opts: FenceOptions = {}): Promise<string[]> {
  const seen = await lookAtMarkers(backend, opts.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS, opts.clock ?? (() => new Date()));
  return [...seen].filter(([, running]) => running).map(([k]) => k);
}

async function lookAtMarkers(backend: CacheBackend, skew: number, clock: () => Date): Promise<Seen> {
  const seen: Seen = new Map();
  for await (const o of backend.list(GC_MARKER_PREFIX)) {
    if (!o.key.endsWith('.json')) continue;
    const body = await backend.get(o.key);
    if (body === undefined) continue; // removed meanwhile: ended long ago
    const m = parseGcMarker(body.toString('utf8'));
    const running = !m || (m.ended === undefined && m.deadline.getTime() + skew >= clock().getTime());
    seen.set(o.key, running);
  }
  return seen;
}

/**
 * Answers "has a collector run since `open`?", sharing one listing of the
 * markers among every caller that asks while it is already waiting for the
 * next one (a listing that started before a caller asked cannot answer it).
 */
export class GcFence {
  // The listing under way, and the one that callers arriving meanwhile wait for (it starts after it).
  private inFlight?: Promise<NarpushError | undefined>;
  private pending?: Promise<NarpushError | undefined>;
  private first?: Seen;
  private readonly skew: number;
  private readonly clock: () => Date;

  constructor(
    private readonly backend: CacheBackend,
    opts: FenceOptions = {},
  ) {
    this.skew = opts.clockSkewMs ?? DEFAULT_CLOCK_SKEW_MS;
    this.clock = opts.clock ?? (() => new Date());
  }

  /** The first look, before the upload checks anything. */
  async open(): Promise<void> {
    this.first = await this.look();
  }

  /** Undefined when no collector ran since `open`, else the GC_CONFLICT error to fail with. Throws if the cache cannot be listed. */
  check(): Promise<NarpushError | undefined> {
    this.pending ??= (this.inFlight ?? Promise.resolve(undefined))
      .catch(() => undefined)
      .then(() => {
        this.pending = undefined;
        const p = this.compare();
        this.inFlight = p;
        p.catch(() => {}).finally(() => {
          if (this.inFlight === p) this.inFlight = undefined;
        });
        return p;
      });
    return this.pending;
  }

  private async compare(): Promise<NarpushError | undefined> {
    if (!this.first) throw new Error('GcFence.check before open');
    const first = this.first;
    const now = await this.look();
    const overlapping = [...first].find(([, running]) => running)?.[0] ?? [...now.keys()].find((k) => !first.has(k));
    if (overlapping === undefined) return undefined;
    return new NarpushError(
      'GC_CONFLICT',
      `narpush gc ran on ${this.backend.description} during this upload (${overlapping}); not publishing, to be retried`,
    );
  }

  private look(): Promise<Seen> {
    return lookAtMarkers(this.backend, this.skew, this.clock);
  }
}
