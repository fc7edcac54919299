#!/usr/bin/env node
// `npm run test:repeat [-- ROUNDS [substring...]]`: builds once, then runs
// the test files that use worker threads or the daemon ROUNDS times
// (default 10, or TEST_REPEAT_ROUNDS), each round exactly as `npm test`
// runs files (scripts/run-tests.mjs, serial phase included). A race that
// shows once in a few runs shows here. Prints one line per round, then
// each file's failure count over all rounds; exits non-zero when any
// round failed. Each round's full output is in a log file; those of
// failed rounds are kept and named at the end.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The files that start worker threads or a daemon (path substrings, as run-tests.mjs takes them). */
const THREADED = [
  'test/cache/threads/', // thread-pool.test, thread-idle.test, nar-job.test
  'test/cache/nar-producers.', // producers on the crypto thread and workers
  'test/cache/upload', // upload.test, upload-order.test, upload-path.test: crypto threads
  'test/daemon/', // the daemon, its worker and the hook, in process and as real processes
  'test/signing/sign-nix.', // `narpush upload` processes
];

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const roundsArg = args[0] !== undefined && /^\d+$/.test(args[0]) ? args.shift() : process.env.TEST_REPEAT_ROUNDS;
const rounds = roundsArg !== undefined ? Number(roundsArg) : 10;
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`test:repeat: the number of rounds must be a whole number from 1, not '${roundsArg}'`);
  process.exit(2);
}
const selection = args.length > 0 ? args : THREADED;

const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

const logs = mkdtempSync(join(tmpdir(), 'narpush-test-repeat-'));
const perFile = new Map();
const failedRounds = [];
for (let round = 1; round <= rounds; round++) {
  const log = join(logs, `round-${round}.log`);
  const summaryFile = join(logs, `round-${round}.json`);
  const fd = openSync(log, 'w');
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'run-tests.mjs'), `--summary-json=${summaryFile}`, ...selection], {
    cwd: root,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const seconds = ((Date.now() - t0) / 1000).toFixed(0);
  let summary;
  try {
    summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
  } catch {
    summary = { totals: { pass: 0, fail: 0, cancelled: 0 }, failures: { '(the runner itself)': 1 }, ok: false };
  }
  const ok = r.status === 0 && summary.ok;
  for (const [file, n] of Object.entries(summary.failures)) perFile.set(file, (perFile.get(file) ?? 0) + n);
  if (!ok) failedRounds.push({ round, log });
  const failed = summary.totals.fail + summary.totals.cancelled;
  console.log(`round ${round}/${rounds}: ${summary.totals.pass} passed, ${failed} failed, ${seconds} s${ok ? '' : `  (log: ${log})`}`);
}

console.log('');
if (perFile.size === 0) console.log(`test:repeat: ${rounds} rounds, no failures`);
else {
  console.log(`test:repeat: ${failedRounds.length} of ${rounds} rounds failed; failed tests per file over all rounds:`);
  for (const [file, n] of [...perFile].sort()) console.log(`  ${file}: ${n}`);
}
if (failedRounds.length === 0) rmSync(logs, { recursive: true, force: true });
else {
  // Only the failed rounds' logs are worth keeping.
  for (let round = 1; round <= rounds; round++) {
    if (!failedRounds.some((f) => f.round === round)) rmSync(join(logs, `round-${round}.log`), { force: true });
    rmSync(join(logs, `round-${round}.json`), { force: true });
  }
  console.log(`logs of the failed rounds: ${logs}`);
}
process.exit(failedRounds.length === 0 ? 0 : 1);
