// Whether a NAR's SHA-256 runs on the upload's own thread or on the crypto
// thread is decided by a probe of this CPU's speed (src/hash/hash-speed.ts).
// Its line must sort the two kinds of CPU apart with room to spare: the
// probe's reading moves with the machine's load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { FAST_SHA256_BYTES_PER_MS, sha256BytesPerMs, sha256IsFast } from '../../src/hash/hash-speed.js';

const MIB_PER_S = 1024 * 1024 / 1000; // bytes per ms in one MiB/s

/** Whether this CPU has SHA-256 instructions, from /proc/cpuinfo (x86 sha_ni, arm64 sha2); undefined where it cannot tell. */
function cpuHasShaExtensions(): boolean | undefined {
  let info: string;
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return undefined;
  }
  const flags = /^(?:flags|Features)\s*:(.*)$/m.exec(info)?.[1]?.split(/\s+/);
  if (!flags) return undefined;
  if (process.arch === 'x64') return flags.includes('sha_ni');
  if (process.arch === 'arm64') return flags.includes('sha2');
  return undefined;
}

test('the line lies well between the two kinds of CPU: 1.5x above OpenSSL without SHA extensions, 1.5x below this probe on a CPU with them', () => {
  const line = FAST_SHA256_BYTES_PER_MS / MIB_PER_S;
  assert.ok(line >= 400 * 1.5, `${line} MiB/s is too close to 400 MiB/s (no SHA extensions)`);
  assert.ok(line <= 1140 / 1.5, `${line} MiB/s is too close to 1,140 MiB/s (the slowest reading with them, under load)`);
});

test('the probe is measured once per process, and this CPU is put on the side its SHA extensions say', (t) => {
  const first = sha256BytesPerMs();
  assert.ok(Number.isFinite(first) && first > 0);
  assert.equal(sha256BytesPerMs(), first, 'measured once');
  assert.equal(sha256IsFast(), first >= FAST_SHA256_BYTES_PER_MS);
  const sha = cpuHasShaExtensions();
  if (sha === undefined) {
    t.skip('cannot tell from /proc/cpuinfo whether this CPU has SHA extensions');
    return;
  }
  assert.equal(sha256IsFast(), sha, `probe read ${(first / MIB_PER_S).toFixed(0)} MiB/s; SHA extensions: ${sha}`);
});
