/**
 * A small tmpfs for disk-full tests: mounted on a fresh directory, filled to
 * the last byte on demand, unmounted in the test's after hook. Needs root;
 * where mounting is not permitted the test is skipped with the reason.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { TestContext } from 'node:test';

export interface Tmpfs {
  readonly dir: string;
  /** Fill the file system until a write fails with ENOSPC (leaving `leaveBytes` free, roughly); returns the bytes written. */
  fill(leaveBytes?: number): Promise<number>;
  /** Remove what fill() wrote. */
  free(): Promise<void>;
}

/**
 * Mount a tmpfs of `size` (mount's syntax, e.g. "1m"). Returns undefined
 * after skipping `t` when mounting is not permitted. `cleanup` runs before
 * the unmount (stop whatever uses the mount there).
 */
export async function mountTmpfs(t: TestContext, size: string, cleanup: () => Promise<void> = async () => {}): Promise<Tmpfs | undefined> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-tmpfs-'));
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { encoding: 'utf8' });
  if (m.status !== 0) {
    await rmdir(dir).catch(() => {});
    t.skip(`cannot mount a tmpfs (${(m.stderr || m.error?.message || 'mount failed').trim()}); disk-full tests need root`);
    return undefined;
  }
  t.after(async () => {
    await cleanup().catch(() => {});
    spawnSync('umount', [dir]);
    if (spawnSync('mountpoint', ['-q', dir]).status === 0) spawnSync('umount', ['-l', dir]);
    await rmdir(dir).catch(() => {});
  });
  const filler = path.join(dir, 'filler');
  let n = 0;
  return {
    dir,
    async fill(leaveBytes = 0) {
      // One file per call, in chunks down to one byte, so the very last byte is taken.
      const h = await open(path.join(dir, `filler${n++}`), 'w');
      let written = 0;
      try {
        const statfs = spawnSync('stat', ['-f', '-c', '%a %S', dir], { encoding: 'utf8' }).stdout.trim().split(' ').map(Number);
        let goal = Math.max(0, (statfs[0] ?? 0) * (statfs[1] ?? 4096) - leaveBytes);
        for (let chunk = 64 * 1024; chunk >= 1; chunk = Math.floor(chunk / 2)) {
          const buf = Buffer.alloc(chunk, 0xaa);
          while (leaveBytes === 0 || goal >= chunk) {
            try {
              const { bytesWritten } = await h.write(buf);
              written += bytesWritten;
              goal -= bytesWritten;
              if (bytesWritten < chunk) break;
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
              break;
            }
          }
        }
      } finally {
        await h.close();
      }
      return written;
    },
    async free() {
      for (let i = 0; i < n; i++) await rm(`${filler}${i}`, { force: true });
    },
  };
}
