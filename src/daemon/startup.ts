/**
 * Start-up recovery: what a daemon finds from the one before it. The
 * journal is replayed (a torn last line or unreadable lines are warned
 * about and skipped, never fatal); GC roots are made for every path the
 * journal holds (state directories from before roots existed have none) and
 * removed for anything no queued or spooled path needs. Never removes a root
 * it cannot prove unneeded: when a spool file's needs cannot be known, all
 * roots stay.
 */
import { Journal, type ReplayResult } from './journal.js';
import { type DaemonLogger, errorLine } from './log.js';
import type { WorkQueue } from './queue.js';
import type { RootKeeper, RootStore } from './root-keeper.js';
import { spooledRequests } from './spool-ingest.js';
import { type StateDirLayout, releaseStateDir, unusable } from './state-dir.js';

/** Open and replay the journal; on failure the state directory is released and the error says it is unusable. */
export async function openJournal(
  stateDir: string,
  layout: StateDirLayout,
  compactAtBytes: number | undefined,
  log: DaemonLogger,
): Promise<{ journal: Journal; replayed: ReplayResult }> {
  let opened;
  try {
    opened = await Journal.open(layout.journal, { compactAtBytes });
  } catch (e) {
    await releaseStateDir(layout);
    throw unusable(stateDir, e);
  }
  const { replayed } = opened;
  if (replayed.tornTail) log({ event: 'warning', detail: 'the queue journal ended in a partial line (a crash mid-write); ignored it' });
  if (replayed.badLines > 0) log({ event: 'warning', detail: `skipped ${replayed.badLines} unreadable line(s) of the queue journal` });
  return opened;
}

export interface ReconcileContext {
  readonly queue: WorkQueue;
  readonly store: RootStore;
  readonly spoolDir: string;
  readonly storeDir: string;
  readonly log: DaemonLogger;
}

/**
 * Roots for everything the queue holds, and none for anything else. `listed`
 * is the roots' listing taken before the spool was ingested (see
 * RootKeeper.reconcile).
 */
export async function reconcileRoots(keeper: RootKeeper, listed: readonly string[], ctx: ReconcileContext): Promise<void> {
  const { log } = ctx;
  await keeper.hold(ctx.queue.list().map((i) => i.path));
  const leftover = (await spooledRequests(ctx.spoolDir, ctx.storeDir)).flatMap((r) => r.targets.map((t) => t.path));
  const keep: string[] = [];
  for (const p of leftover) {
    try {
      keep.push(...(await ctx.store.expand(p)));
    } catch (e) {
      // Not knowing what a spool file needs kept, remove nothing.
      log({ event: 'warning', detail: `cannot check the GC roots in ${keeper.dir} (${errorLine(e)}); left them as they are` });
      return;
    }
  }
  const removed = await keeper.reconcile(listed, keep);
  if (removed > 0) log({ event: 'warning', detail: `removed ${removed} GC root(s) in ${keeper.dir} that no queued path needs` });
}
