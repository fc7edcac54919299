/**
 * The daemon's state directory: the queue journal, the hook's spool, the GC
 * roots of queued paths, and a pid file that keeps two daemons from sharing
 * one journal. A pid file left
 * by a daemon that died (SIGKILL, power loss) is taken over; one naming a
 * live process other than this one is refused.
 */
import { open, readFile, unlink, access } from 'node:fs/promises';
import { constants } from 'node:fs';
import * as nodePath from 'node:path';
import { NarpushError } from '../errors.js';
import { ensureDir, makeDirs } from './fs-util.js';
import { spoolDir } from './spool.js';
import { gcRootsDir } from './gc-roots.js';

export interface StateDirLayout {
  readonly dir: string;
  readonly journal: string;
  readonly spool: string;
  /** GC roots of queued and spooled paths (gc-roots.ts). */
  readonly gcRoots: string;
  readonly pidFile: string;
}

export function stateDirLayout(dir: string): StateDirLayout {
  return {
    dir,
    journal: nodePath.join(dir, 'queue.journal'),
    spool: spoolDir(dir),
    gcRoots: gcRootsDir(dir),
    pidFile: nodePath.join(dir, 'daemon.pid'),
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The one-line error for a state directory the daemon cannot write (full, read-only, not ours). */
export function unusable(dir: string, e: unknown): NarpushError {
  const err = e as NodeJS.ErrnoException;
  const why = err.code === 'ENOSPC' || err.code === 'EDQUOT' ? `${err.code}: no space left` : (err.code ?? err.message);
  return new NarpushError('STATE_DIR_UNUSABLE', `cannot write to the state directory ${dir} (${why}); free space there or choose another --state-dir`, {
    cause: e,
  });
}

/** Create the directories (0700 when new), check they are writable, and take the pid file. */
export async function claimStateDir(dir: string): Promise<StateDirLayout> {
  const layout = stateDirLayout(dir);
  try {
    await makeDirs(dir, 0o700);
    await ensureDir(layout.spool, 0o700);
    await ensureDir(layout.gcRoots, 0o700);
    await access(dir, constants.W_OK);
    await access(layout.spool, constants.W_OK);
    // The trailing '/.' fails with ENOTDIR when something else has the name.
    await access(`${layout.gcRoots}/.`, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new NarpushError('STATE_DIR_UNUSABLE', `cannot use the state directory ${dir} (${code}); create it writable for the daemon or choose another --state-dir`, {
      cause: e,
    });
  }
  for (let tries = 0; ; tries++) {
    let h;
    try {
      h = await open(layout.pidFile, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 2) throw unusable(dir, e);
    }
    if (h) {
      try {
        await h.writeFile(`${process.pid}\n`);
        await h.close();
        return layout;
      } catch (e) {
        // A full disk: no empty pid file is left for the next start to puzzle over.
        await h.close().catch(() => {});
        await unlink(layout.pidFile).catch(() => {});
        throw unusable(dir, e);
      }
    }
    const pid = Number((await readFile(layout.pidFile, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new NarpushError('DAEMON_ALREADY_RUNNING', `another narpush daemon (pid ${pid}) uses the state directory ${dir}`);
    }
    await unlink(layout.pidFile).catch(() => {});
  }
}

/** Give the pid file up (at a clean exit). */
export async function releaseStateDir(layout: StateDirLayout): Promise<void> {
  const pid = Number((await readFile(layout.pidFile, 'utf8').catch(() => '')).trim());
  if (pid === process.pid) await unlink(layout.pidFile).catch(() => {});
}
