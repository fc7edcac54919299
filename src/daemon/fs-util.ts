/**
 * Small filesystem helpers the daemon and the hook share. Node builtins only
 * (the hook imports this). `makeDirs` exists because Node 20's recursive
 * mkdir never returns for some paths (under /proc), and the hook must not
 * hang a build on a mistyped NARPUSH_STATE_DIR.
 */
import { mkdir, open } from 'node:fs/promises';
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
