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
 * strace split across two lines because another thread made a call meanwhile
 * ("<unfinished ...>", then "<... openat resumed>" or "<... fsync resumed>"
 * in the same thread) returns on the second.
 */
export function dirSyncedAt(lines: readonly string[], dir: string): number {
  for (const [i, line] of lines.entries()) {
    if (!line.includes(`openat(AT_FDCWD, "${dir}"`)) continue;
    const opened = returnedAt(lines, i, 'openat');
    const fd = opened < 0 ? undefined : / = (\d+)$/.exec(lines[opened]!)?.[1];
    if (fd === undefined) continue;
    const called = lines.findIndex((l, j) => j > opened && new RegExp(`\\bfsync\\(${fd}[ )]`).test(l));
    if (called < 0) continue;
    const returned = returnedAt(lines, called, 'fsync');
    if (returned >= 0 && / = 0$/.test(lines[returned]!)) return returned;
  }
  return -1;
}

/** The index of the line where the call on line `at` returned: that line, or its thread's "<... call resumed>" line; -1 if none. */
function returnedAt(lines: readonly string[], at: number, call: string): number {
  const line = lines[at]!;
  if (!line.endsWith('<unfinished ...>')) return at;
  const tid = line.split(' ')[0];
  return lines.findIndex((l, i) => i > at && l.startsWith(`${tid} `) && l.includes(`<... ${call} resumed>`));
}
