/**
 * Small filesystem helpers the daemon and the hook share. Node builtins only
 * (the hook imports this). `makeDirs` exists because Node 20's recursive
 * mkdir never returns for some paths (under /proc), and the hook must not
 * hang a build on a mistyped NARPUSH_STATE_DIR.
 */
import { lstat, mkdir, open, readdir, unlink } from 'node:fs/promises';
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
