/**
 * The hook's spool: where bin/narpush-hook leaves a request when the daemon
 * does not answer, for the daemon to pick up. One file per request, written
 * atomically (temp file, fsync, rename, fsync of the directory), so the
 * daemon sees a request whole or not at all and concurrent hooks never
 * interleave. The daemon deletes a file only after its paths are durably in
 * the queue. Imported by the hook: node builtins only.
 */
import { open, readdir, rename, stat, unlink } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { ensureDir, fsyncDir, removeStaleTemps } from './fs-util.js';

export const SPOOL_SUBDIR = 'spool';
const SUFFIX = '.req';
const TEMP_PREFIX = '.tmp-';
/** Files the daemon could not use keep this suffix: evidence, never read again. */
export const REJECTED_SUFFIX = '.rejected';

export function spoolDir(stateDir: string): string {
  return nodePath.join(stateDir, SPOOL_SUBDIR);
}

/**
 * Write one request line durably as a new spool file; returns its path.
 * Names sort by time of writing, so the daemon ingests in order.
 */
export async function writeSpoolFile(dir: string, line: string): Promise<string> {
  await ensureDir(nodePath.dirname(dir));
  await ensureDir(dir);
  // Unique enough with the pid; 'wx' below refuses a clash rather than overwrite.
  // (Not node:crypto: loading it costs the hook milliseconds.)
  const nonce = Math.floor(Math.random() * 2 ** 48).toString(16).padStart(12, '0');
  const name = `${Date.now().toString().padStart(14, '0')}-${process.pid}-${nonce}${SUFFIX}`;
  const temp = nodePath.join(dir, `${TEMP_PREFIX}${name}`);
  const final = nodePath.join(dir, name);
  const h = await open(temp, 'wx', 0o600);
  try {
    await h.writeFile(line);
    await h.sync();
  } catch (e) {
    await h.close();
    await unlink(temp).catch(() => {});
    throw e;
  }
  await h.close();
  await rename(temp, final);
  await fsyncDir(dir);
  return final;
}

/** Complete spool files, oldest first (temporary and rejected files are not listed). */
export async function listSpool(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.filter((n) => n.endsWith(SUFFIX) && !n.startsWith('.')).sort();
}

/** Read a spool file, refusing one larger than `maxBytes`. */
export async function readSpoolFile(dir: string, name: string, maxBytes: number): Promise<string> {
  const h = await open(nodePath.join(dir, name), 'r');
  try {
    const size = (await h.stat()).size;
    if (size > maxBytes) throw new Error(`spool file is ${size} bytes, more than ${maxBytes}`);
    return await h.readFile({ encoding: 'utf8' });
  } finally {
    await h.close();
  }
}

export async function removeSpoolFile(dir: string, name: string): Promise<void> {
  await unlink(nodePath.join(dir, name));
  await fsyncDir(dir);
}

export async function markSpoolFileRejected(dir: string, name: string): Promise<void> {
  await rename(nodePath.join(dir, name), nodePath.join(dir, name + REJECTED_SUFFIX));
}

/** Remove temporary files a killed hook left behind, once they are `olderThanMs` old. */
export async function removeStaleTempFiles(dir: string, olderThanMs: number, now: number = Date.now()): Promise<number> {
  return removeStaleTemps(dir, TEMP_PREFIX, olderThanMs, now);
}
