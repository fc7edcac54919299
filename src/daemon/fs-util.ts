/**
 * Small filesystem helpers the daemon and the hook share. Node builtins only
 * (the hook imports this). `makeDirs` exists because Node 20's recursive
 * mkdir never returns for some paths (under /proc), and the hook must not
 * hang a build on a mistyped NARPUSH_STATE_DIR.
 */
import { type FileHandle, lstat, mkdir, open, readdir, unlink } from 'node:fs/promises';
import * as nodePath from 'node:path';

/** Create `dir` (one level); an existing directory is fine. */
export async function ensureDir(dir: string, mode = 0o700): Promise<void> {
  try {
    await mkdir(dir, { mode });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}

/** `mkdir -p`, one level at a time; new directories get `mode`. */
export async function makeDirs(dir: string, mode = 0o700): Promise<void> {
  const missing: string[] = [];
  for (let d = nodePath.resolve(dir); ; d = nodePath.dirname(d)) {
    try {
      await mkdir(d, { mode });
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') break;
      if (code !== 'ENOENT' || nodePath.dirname(d) === d || missing.length > 64) throw e;
      missing.push(d);
    }
  }
  for (const d of missing.reverse()) await ensureDir(d, mode);
}

/** Make a directory entry (a rename, a new file) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * Directory syncs for a process that makes entries in the same directories
 * again and again (the daemon, for every request): each directory is opened
 * once and its descriptor kept, so that a sync is one trip to the thread
 * pool instead of three (open, fsync, close). `forget` a directory that may
 * have been made again (the kept descriptor would sync the old one); a
 * failed sync forgets it too. After `close`, syncs open and close as
 * fsyncDir does.
 */
export class DirSyncer {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private closed = false;

  /** `openDir`: how a directory is opened for its syncs (the tests count the calls). */
  constructor(private readonly openDir: (dir: string) => Promise<FileHandle> = (dir) => open(dir, 'r')) {}

  /** Make `dir`'s entries durable. */
  readonly sync = async (dir: string): Promise<void> => {
    if (this.closed) return fsyncDir(dir);
    let opening = this.handles.get(dir);
    if (!opening) {
      opening = this.openDir(dir);
      this.handles.set(dir, opening);
      opening.catch(() => this.drop(dir, opening!));
    }
    const handle = await opening;
    try {
      await handle.sync();
    } catch (e) {
      this.drop(dir, opening);
      throw e;
    }
  };

  /** Open `dir` again at its next sync. */
  forget(dir: string): void {
    const opening = this.handles.get(dir);
    if (opening) this.drop(dir, opening);
  }

  /** Give the descriptors back (a sync still running finishes first). */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.allSettled(all.map(async (h) => (await h).close()));
  }

  private drop(dir: string, opening: Promise<FileHandle>): void {
    if (this.handles.get(dir) !== opening) return;
    this.handles.delete(dir);
    opening.then((h) => h.close()).catch(() => {});
  }
}

/**
 * Remove the entries of `dir` named `prefix…` (temporary names a killed
 * writer left behind) once they are `olderThanMs` old; a symlink's own age
 * counts, not its target's. Returns how many went.
 */
export async function removeStaleTemps(dir: string, prefix: string, olderThanMs: number, now: number = Date.now()): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const p = nodePath.join(dir, n);
    try {
      if (now - (await lstat(p)).mtimeMs > olderThanMs) {
        await unlink(p);
        removed++;
      }
    } catch {
      // gone meanwhile
    }
  }
  return removed;
}
