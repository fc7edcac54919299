/**
 * Reading `strace -f` logs in tests that check a system call was made (an
 * fsync nothing else can observe short of a power cut). `strace` is one of
 * the packages .ci/run installs.
 */
import { spawnSync } from 'node:child_process';

export const HAS_STRACE = spawnSync('strace', ['-V']).status === 0;

/**
 * In the lines of an `strace -f` log (`<tid> <call>`), the index of the line
 * where an fsync of a descriptor opened on `dir` returned 0, or -1. A call
 * strace split across two lines ("<unfinished ...>", "<... fsync resumed>")
 * returns on the second, in the same thread.
 */
export function dirSyncedAt(lines: readonly string[], dir: string): number {
  for (const [opened, line] of lines.entries()) {
    const fd = line.includes(`openat(AT_FDCWD, "${dir}"`) ? / = (\d+)$/.exec(line)?.[1] : undefined;
    if (fd === undefined) continue;
    const called = lines.findIndex((l, i) => i > opened && new RegExp(`\\bfsync\\(${fd}[ )]`).test(l));
    if (called < 0) continue;
    if (/ = 0$/.test(lines[called]!)) return called;
    const tid = lines[called]!.split(' ')[0];
    const returned = lines.findIndex((l, i) => i > called && l.startsWith(`${tid} `) && l.includes('<... fsync resumed>'));
    if (returned >= 0 && / = 0$/.test(lines[returned]!)) return returned;
  }
  return -1;
}
