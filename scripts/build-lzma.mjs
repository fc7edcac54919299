#!/usr/bin/env node
// Rebuild lzma-native's liblzma with optimization (run by `npm ci` through
// the `prepare` script).
//
// Why: the Linux binaries lzma-native 8 ships were built from its bundled
// xz 5.2.3 at -O0 (its configure script sets CFLAGS to "-fPIC" alone, which
// drops autoconf's -O2): they compress 2.4x slower than the same source at
// -O2 on text and 1.2x slower on random data (measured: 13 MiB of text,
// 21.0 s vs 8.7 s). This builds the same bundled source with CFLAGS=-O2
// through npm's own node-gyp, exactly as lzma-native's install script would
// without a prebuild.
//
// Never fails the install: without a compiler the prebuilt binary stays in
// use (correct, only slower) and one line says so. Skipped when the
// optimized build is already there, or with NARPUSH_SKIP_LZMA_BUILD=1.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

const require = createRequire(import.meta.url);
const say = (line) => process.stderr.write(`narpush: ${line}\n`);

function main() {
  if (process.env.NARPUSH_SKIP_LZMA_BUILD === '1') return;
  let dir;
  try {
    dir = path.dirname(require.resolve('lzma-native/package.json'));
  } catch {
    return; // not installed (e.g. npm ci --omit=...): nothing to do
  }
  const marker = path.join(dir, 'build', 'narpush-O2');
  if (existsSync(marker) && existsSync(path.join(dir, 'build', 'Release', 'lzma_native.node'))) return;

  const nodeGyp =
    process.env.npm_config_node_gyp ??
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  if (!existsSync(nodeGyp)) {
    say(`node-gyp not found; keeping lzma-native's prebuilt (unoptimized) liblzma: xz compression will be slower`);
    return;
  }
  const log = path.join(dir, 'narpush-build.log');
  const fd = openSync(log, 'w');
  say('building liblzma for lzma-native with -O2 (its prebuilt binary is unoptimized); about a minute...');
  const r = spawnSync(process.execPath, [nodeGyp, 'rebuild'], {
    cwd: dir,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, CFLAGS: `-O2 ${process.env.CFLAGS ?? ''}`.trim() },
  });
  closeSync(fd);
  const loads =
    r.status === 0 &&
    spawnSync(process.execPath, ['-e', `require(${JSON.stringify(dir)})`], { stdio: 'ignore' }).status === 0;
  if (!loads) {
    // node-gyp-build prefers build/Release: remove a failed build so the prebuilt one loads.
    rmSync(path.join(dir, 'build'), { recursive: true, force: true });
    say(`could not build liblzma (see ${log}); keeping lzma-native's prebuilt (unoptimized) liblzma: xz compression will be slower`);
    return;
  }
  writeFileSync(marker, 'lzma-native rebuilt with CFLAGS=-O2 by scripts/build-lzma.mjs\n');
}

main();
