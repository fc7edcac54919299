// The daemon with --build-logs, fed by bin/narpush-hook from a real
// nix-build: the build's log reaches `log/<drv>` in the cache, and Nix 2.8's
// `nix log` prints it from there after the local log is removed. Without
// the flag the daemon writes no logs. (The daemon with write-nar-listing=true
// writes Nix's listing too.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { DEFAULT_NIX_LOG_DIR } from '../../src/cache/build-logs.js';
import { nix, nixEnv, requireNix } from '../helpers/nix.js';
import { hashPartOf, nixListings, parseListing } from '../helpers/nix-listing.js';
import { FIXTURES, REPO_ROOT, run } from '../helpers/run.js';
import { killLeftoverDaemons, startDaemonProcess } from './daemon-process.js';
import { tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');
let work: { dir: string; remove(): Promise<void> };

before(async () => {
  await requireNix();
  work = await tempDir('narpush-daemon-logs-');
});
after(async () => {
  await killLeftoverDaemons();
  await work?.remove();
});

/** Build a fresh derivation that logs `words`, through the hook of the daemon at `socket`. */
async function buildThroughHook(words: string, socket: string, stateDir: string): Promise<{ out: string; drv: string }> {
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')}; in
    lib.mk { name = "np-daemon-log"; salt = "${randomUUID()}"; script = "echo ${words}; echo ok > $out"; }`;
  const r = await run('nix-build', ['-E', expr, '--no-out-link', '--option', 'post-build-hook', HOOK], {
    env: nixEnv({ NARPUSH_SOCKET: socket, NARPUSH_STATE_DIR: stateDir }),
  });
  assert.equal(r.code, 0, `nix-build failed: ${r.stderr}`);
  const out = r.stdout.toString().trim();
  return { out, drv: (await nix('nix-store', ['-q', '--deriver', out])).toString().trim() };
}

for (const buildLogs of [true, false]) {
  test(`daemon ${buildLogs ? 'with' : 'without'} --build-logs: ${buildLogs ? 'nix log reads the log from the cache once the local one is gone' : 'no log in the cache'}`, async () => {
    const tag = buildLogs ? 'on' : 'off';
    const socket = path.join(work.dir, `${tag}.sock`);
    const stateDir = path.join(work.dir, `state-${tag}`);
    const cache = path.join(work.dir, `cache-${tag}`);
    const d = await startDaemonProcess({
      // With listings too: the daemon writes them as upload-path does.
      to: `file://${cache}${buildLogs ? '?write-nar-listing=true' : ''}`,
      socket,
      stateDir,
      env: nixEnv(),
      args: ['--compression', 'none', ...(buildLogs ? ['--build-logs'] : [])],
    });
    try {
      const words = `narpush-hook-log-${randomUUID()}`;
      const { out, drv } = await buildThroughHook(words, socket, stateDir);
      const s = await d.idle();
      assert.equal(s.uploaded, 1, d.log());
      assert.deepEqual(s.buildLogs, { written: buildLogs ? 1 : 0, missing: 0, failed: 0 }, 'narpush status counts it');
      const logs = await readdir(path.join(cache, 'log')).catch(() => []);
      assert.deepEqual(logs, buildLogs ? [path.basename(drv)] : []);
      const ls = path.join(cache, `${hashPartOf(out)}.ls`);
      if (!buildLogs) return;
      assert.deepEqual(parseListing(await readFile(ls)), parseListing((await nixListings([out])).get(out)!));
      const base = path.basename(drv);
      await rm(path.join(DEFAULT_NIX_LOG_DIR, 'drvs', base.slice(0, 2), `${base.slice(2)}.bz2`));
      const r = await run('nix', ['log', out, '--option', 'substituters', `file://${cache}`], { env: nixEnv() });
      assert.equal(r.code, 0, r.stderr.toString());
      assert.match(r.stdout.toString(), new RegExp(`^${words}$`, 'm'));
      const byStore = await run('nix', ['log', '--store', `file://${cache}`, out], { env: nixEnv() });
      assert.match(byStore.stdout.toString(), new RegExp(`^${words}$`, 'm'));
    } finally {
      assert.deepEqual(await d.stop(), { code: 0, signal: null }, d.log());
    }
  });
}
