/**
 * Which GC roots the daemon holds, and for whom. Every queued path owns
 * the roots of the store paths it needs kept until it is uploaded: itself,
 * and for a .drv also its outputs (a root on a .drv keeps only the .drv's
 * own closure, not the outputs). A root is removed once no queued path owns
 * it any more (uploaded, dropped, rejected).
 *
 * Invariants:
 * - `hold` resolves only once the links exist and are synced; the daemon
 *   acknowledges a path only after that (no window for the collector). The
 *   sync of the links' directory (under the lock) runs while Nix registers
 *   them: both only need the links to exist.
 * - Links are created and removed one operation at a time (a lock), so a
 *   release never removes a link that a concurrent hold has just adopted.
 * - A link whose registration failed (the nix-daemon was unreachable) is
 *   kept and registered again by `retry`; it is never a reason to lose a path.
 *
 * The store is injected (`expand`, `register`), so the tests use fakes.
 */
import { DirSyncer } from './fs-util.js';
import { listRootLinks, placeRootLinks, removeRootLinks, removeStaleRootTemps } from './gc-roots.js';
import type { DaemonLogger } from './log.js';

export interface RootStore {
  /** The store paths `path` needs kept: the path, and for a .drv its built outputs. May throw. */
  readonly expand: (path: string) => Promise<readonly string[]>;
  /** Register these links (absolute paths) as indirect roots of these store paths. Throws when the store cannot. */
  readonly register: (links: readonly string[], storePaths: readonly string[]) => Promise<void>;
}

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

export class RootKeeper {
  /** Queued path -> the store paths kept for it. */
  private readonly owned = new Map<string, readonly string[]>();
  /** Store paths whose link exists but whose registration failed. */
  private readonly unregistered = new Set<string>();
  private lock: Promise<unknown> = Promise.resolve();
  /** Whether the last sync of the links' directory failed: links made then are not known to be durable. */
  private syncFailed = false;

  /**
   * `inUse(path)`: whether the queue has `path` again, or a request is
   * queueing it now; such a path keeps its roots whatever `release` is told
   * (a path uploaded and queued again at once must not lose its new root).
   * `dirs` syncs the links' directory, kept open (one sync per request).
   */
  constructor(
    readonly dir: string,
    private readonly store: RootStore,
    private readonly log: DaemonLogger,
    private readonly inUse: (path: string) => boolean = () => false,
    private readonly dirs: DirSyncer = new DirSyncer(),
  ) {}

  /** Queued paths that own roots. */
  get size(): number {
    return this.owned.size;
  }

  /**
   * Keep `paths` (queued paths) from the collector. Resolves once their
   * links exist on disk; throws only when the links cannot be made. Returns
   * the paths that were not held before (to release if queueing them fails).
   */
  async hold(paths: readonly string[]): Promise<string[]> {
    if (paths.length === 0) return [];
    const expanded = await Promise.all(
      paths.map(async (p) => {
        try {
          return [p, await this.store.expand(p)] as const;
        } catch (e) {
          // The .drv's outputs stay unprotected until the next start; the .drv itself is held.
          this.log({ event: 'warning', detail: `cannot find the outputs of ${p} (${message(e)}); holding a GC root for it alone` });
          return [p, [p]] as const;
        }
      }),
    );
    const fresh: string[] = [];
    const all = new Set<string>();
    let registered: Promise<void> | undefined;
    await this.exclusive(async () => {
      for (const [p, kept] of expanded) {
        if (!this.owned.has(p)) fresh.push(p);
        this.owned.set(p, [...new Set([...(this.owned.get(p) ?? []), ...kept])]);
        for (const k of kept) all.add(k);
      }
      try {
        const placed = await placeRootLinks(this.dir, [...all]);
        if (placed.madeDir) this.dirs.forget(this.dir);
        // The links exist: Nix registers them while their directory is synced.
        registered = this.registerOrDefer([...all]);
        // Links found in place were synced by the hold that made them (under this lock), unless
        // that sync failed: then this hold syncs them again.
        if (placed.changed || this.syncFailed) {
          this.syncFailed = true;
          await this.dirs.sync(this.dir);
          this.syncFailed = false;
        }
      } catch (e) {
        // A registration under way goes on (it never throws): the link stays until reconciled.
        for (const p of fresh) this.owned.delete(p);
        throw e;
      }
    });
    await registered;
    return fresh;
  }

  /** `paths` no longer need their roots (uploaded, dropped, rejected): remove the links nobody else owns. */
  async release(paths: readonly string[]): Promise<void> {
    await this.exclusive(async () => {
      const candidates = new Set<string>();
      for (const p of paths) {
        if (this.inUse(p)) continue;
        for (const k of this.owned.get(p) ?? [p]) candidates.add(k);
        this.owned.delete(p);
      }
      const still = this.ownedStorePaths();
      const gone = [...candidates].filter((k) => !still.has(k));
      for (const k of gone) this.unregistered.delete(k);
      await removeRootLinks(this.dir, gone.map(baseName));
    });
  }

  /** Register again the links whose registration failed. */
  async retry(): Promise<void> {
    if (this.unregistered.size === 0) return;
    const still = this.ownedStorePaths();
    const due = [...this.unregistered].filter((k) => still.has(k));
    this.unregistered.clear();
    if (due.length > 0) await this.registerOrDefer(due, true);
  }

  /** The base names of the links present now (for `reconcile`). */
  snapshot(): Promise<string[]> {
    return listRootLinks(this.dir);
  }

  /**
   * At start: remove the links in `listed` (taken before the spool was
   * ingested) that no held path owns and `alsoKeep` (store paths of spool
   * files not ingested) does not name. Links made after the listing are
   * never touched: a hook makes its links after its spool file is durable,
   * so a link in the listing belongs to a spool file that is now either
   * ingested (held) or still there (`alsoKeep`).
   */
  async reconcile(listed: readonly string[], alsoKeep: Iterable<string>): Promise<number> {
    await removeStaleRootTemps(this.dir, 10 * 60_000).catch(() => 0);
    return this.exclusive(async () => {
      const keep = new Set([...this.ownedStorePaths(), ...alsoKeep].map(baseName));
      return removeRootLinks(this.dir, listed.filter((b) => !keep.has(b)));
    });
  }

  /** Wait for link changes under way. */
  async settled(): Promise<void> {
    await this.lock.catch(() => {});
  }

  /** Give back the directory's descriptor; later changes sync it as without one. */
  async close(): Promise<void> {
    await this.settled();
    await this.dirs.close();
  }

  private async registerOrDefer(storePaths: readonly string[], quiet = false): Promise<void> {
    const links = storePaths.map((k) => `${this.dir}/${baseName(k)}`);
    try {
      await this.store.register(links, storePaths);
    } catch (e) {
      for (const k of storePaths) this.unregistered.add(k);
      if (!quiet) {
        this.log({ event: 'warning', detail: `cannot register ${links.length} GC root(s) with the Nix daemon (${message(e)}); the links are in ${this.dir}, registering again later` });
      }
    }
  }

  private ownedStorePaths(): Set<string> {
    const s = new Set<string>();
    for (const kept of this.owned.values()) for (const k of kept) s.add(k);
    return s;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }
}
