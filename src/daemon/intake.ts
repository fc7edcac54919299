/**
 * Taking work in: a request, from the socket or a spool file, becomes queued
 * paths. The order that makes "nothing acknowledged is ever lost" hold here:
 * paths are validated against the store, their GC roots are made, they are
 * appended to the journal and fsync'd (queue.ts), and only then is the
 * request answered. A path given up on here keeps no root. Never answers
 * before the journal holds the paths, never throws for a bad request (it is
 * answered with an error), and throws only when the roots or the journal
 * cannot be written.
 */
import type { StorePath } from '../store/store-path.js';
import type { DaemonHealth } from './health.js';
import { type DaemonLogger, errorLine } from './log.js';
import type { EnqueueAnswer, ErrorAnswer, RejectedPath } from './protocol.js';
import type { WorkQueue } from './queue.js';
import { type ParsedRequest, parseRequest } from './request.js';
import type { RootKeeper } from './root-keeper.js';
import type { DaemonStats } from './stats.js';

export type EnqueueRequest = Extract<ParsedRequest, { op: 'enqueue' }>;

export interface IntakeDeps {
  readonly storeDir: string;
  /** The subset of `paths` that is valid in the local store; may throw when the store cannot be asked. */
  readonly validPaths: (paths: readonly StorePath[]) => Promise<ReadonlySet<string>>;
  readonly queue: WorkQueue;
  readonly roots?: RootKeeper;
  /** Give up the roots of these paths, in the background. */
  readonly releaseRoots: (paths: readonly string[]) => void;
  readonly stats: DaemonStats;
  readonly health: DaemonHealth;
  /** What a `status` request is answered with. */
  readonly status: () => unknown;
  readonly log: DaemonLogger;
}

export class Intake {
  /** Paths between their roots and their journal record (see RootKeeper's inUse), with how many requests hold each. */
  private readonly enqueuing = new Map<string, number>();

  constructor(private readonly deps: IntakeDeps) {}

  /** Whether a request is queueing `path` now. */
  isEnqueuing(path: string): boolean {
    return this.enqueuing.has(path);
  }

  /** Validate against the store, hold GC roots, queue durably. Throws only when the roots or the journal cannot be written. */
  async enqueue(req: EnqueueRequest, source: string): Promise<EnqueueAnswer> {
    const { log, roots, queue } = this.deps;
    const { targets, rejected } = await this.validate(req);
    for (const r of rejected) log({ event: 'rejected', subject: r.path, detail: `${r.reason} (from ${source})` });
    this.deps.stats.pathsRejected(rejected.length);
    // A hook that spooled made roots for these too; a path given up keeps none.
    const storeDir = this.deps.storeDir;
    const given = rejected.map((r) => r.path).filter((p) => p.startsWith(`${storeDir}/`) && !p.slice(storeDir.length + 1).includes('/'));
    this.deps.releaseRoots(given);
    // The roots exist before the journal has the paths, and so before any acknowledgement.
    const paths = targets.map((t) => t.path);
    for (const p of paths) this.enqueuing.set(p, (this.enqueuing.get(p) ?? 0) + 1);
    let r;
    let fresh: string[] = [];
    try {
      fresh = roots ? await roots.hold(paths) : [];
      r = await queue.enqueue(paths);
    } catch (e) {
      this.done(paths);
      this.deps.releaseRoots(fresh);
      throw e;
    }
    this.done(paths);
    const via = req.drv && !r.queued.includes(req.drv.path) ? `from ${source}, ${req.drv.path}` : `from ${source}`;
    for (const p of r.queued) log({ event: 'queued', subject: p, detail: `(${via})` });
    return { ok: true, queued: r.queued.length, duplicates: r.duplicates.length, rejected };
  }

  /** One line from the socket, answered: status, an enqueue, or the error why not. */
  async handleLine(line: string): Promise<unknown> {
    const { stats, log } = this.deps;
    const parsed = parseRequest(line, this.deps.storeDir);
    if (!parsed.ok) {
      stats.hookRequest('socket', 'rejected');
      log({ event: 'rejected', subject: 'a request', detail: parsed.error });
      return { ok: false, code: 'BAD_REQUEST', error: parsed.error } satisfies ErrorAnswer;
    }
    if (parsed.request.op === 'status') return { ok: true, status: this.deps.status() };
    try {
      const answer = await this.enqueue(parsed.request, 'the socket');
      stats.hookRequest('socket', 'ok');
      return answer;
    } catch (e) {
      stats.hookRequest('socket', 'error');
      this.deps.health.queueFailed(e);
      log({ event: 'warning', detail: `cannot queue the request (GC roots or journal): ${errorLine(e)}` });
      return { ok: false, code: 'QUEUE_UNAVAILABLE', error: `the daemon cannot write its queue: ${errorLine(e)}` } satisfies ErrorAnswer;
    }
  }

  /** The request's targets that are valid in the store, and every path rejected with why. */
  private async validate(req: EnqueueRequest): Promise<{ targets: readonly StorePath[]; rejected: RejectedPath[] }> {
    const rejected: RejectedPath[] = [...req.rejected];
    if (req.targets.length === 0) return { targets: req.targets, rejected };
    try {
      const valid = await this.deps.validPaths(req.targets);
      for (const t of req.targets) if (!valid.has(t.path)) rejected.push({ path: t.path, reason: 'not valid in the local store' });
      return { targets: req.targets.filter((t) => valid.has(t.path)), rejected };
    } catch (e) {
      // Queue them anyway: the worker checks again before uploading, and a path must not be lost to a store hiccup.
      this.deps.log({ event: 'warning', detail: `cannot check paths against the store (${errorLine(e)}); queueing them unchecked` });
      return { targets: req.targets, rejected };
    }
  }

  private done(paths: readonly string[]): void {
    for (const p of paths) {
      const n = (this.enqueuing.get(p) ?? 1) - 1;
      if (n > 0) this.enqueuing.set(p, n);
      else this.enqueuing.delete(p);
    }
  }
}
