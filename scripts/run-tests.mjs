#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with node's test
// runner. Node 20 has no glob support in `node --test`, hence this script.
//
// Two phases: every file first, two at a time; then the files named
// `*.serial.test.js`, one at a time and alone. A serial test may disturb
// others running beside it (`nix-store --gc` deletes what a concurrent
// test has just built and not yet rooted).
//
// The closing lines are the totals of both phases, in the runner's own
// words (`# tests N`, `# pass N`, `# fail N`), then `tests: N passed, N failed`
// alone on the last line; the exit code is non-zero when anything failed.
//
// Usage: node scripts/run-tests.mjs [--summary-json=FILE] [substring...]
//   substring       only files whose path contains one
//   --summary-json  also write the totals and each file's failed tests there
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');
const SERIAL = '.serial.test.js';

function walk(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(p));
    else if (entry.name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const summaryJson = args.find((a) => a.startsWith('--summary-json='))?.slice('--summary-json='.length);
const filters = args.filter((a) => !a.startsWith('--summary-json='));
// Only files whose source still exists: tsc does not delete the output of a removed test.
const files = walk(testDir)
  .filter((f) => existsSync(join(root, relative(join(root, 'dist'), f)).replace(/\.js$/, '.ts')))
  .filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)))
  .sort();
if (files.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}

const phases = [
  { files: files.filter((f) => !f.endsWith(SERIAL)), concurrency: 2 },
  { files: files.filter((f) => f.endsWith(SERIAL)), concurrency: 1 },
].filter((p) => p.files.length > 0);

const tmp = mkdtempSync(join(tmpdir(), 'narpush-run-tests-'));
const totals = { tests: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
const failures = {};
let exitFailed = false;
try {
  for (const [i, phase] of phases.entries()) {
    if (i > 0) console.log(`\nrun-tests: ${phase.files.length} serial file(s), one at a time`);
    const summaryFile = join(tmp, `phase-${i}.json`);
    const r = spawnSync(
      process.execPath,
      [
        '--test',
        `--test-concurrency=${phase.concurrency}`,
        '--test-reporter=spec',
        '--test-reporter-destination=stdout',
        `--test-reporter=${join(root, 'scripts', 'summary-reporter.mjs')}`,
        `--test-reporter-destination=${summaryFile}`,
        ...phase.files,
      ],
      { stdio: 'inherit', cwd: root },
    );
    if (r.status !== 0) exitFailed = true;
    let summary;
    try {
      summary = JSON.parse(readFileSync(summaryFile, 'utf8'));
    } catch {
      // The runner itself died: count the phase's files as failed.
      exitFailed = true;
      for (const f of phase.files) failures[f] = (failures[f] ?? 0) + 1;
      totals.fail += phase.files.length;
      continue;
    }
    for (const k of Object.keys(totals)) totals[k] += summary.counts[k] ?? 0;
    for (const [f, n] of Object.entries(summary.failures)) failures[f] = (failures[f] ?? 0) + n;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const failed = totals.fail + totals.cancelled;
if (failed > 0) exitFailed = true;
if (summaryJson) {
  // Named by their source: test/x/y.test.ts for dist/test/x/y.test.js.
  const source = (f) => relative(join(root, 'dist'), f).replace(/\.js$/, '.ts');
  const rel = Object.fromEntries(Object.entries(failures).map(([f, n]) => [source(f), n]));
  writeFileSync(summaryJson, `${JSON.stringify({ totals, failures: rel, ok: !exitFailed })}\n`);
}
console.log('');
for (const k of Object.keys(totals)) console.log(`# ${k} ${totals[k]}`);
console.log(`tests: ${totals.pass} passed, ${failed} failed`);
process.exit(exitFailed ? 1 : 0);
