// Large NARs in the formats narpush writes for them, read back by the
// reference tools and by Nix: an xz NAR in several blocks (encoded at once
// on idle cores, see src/cache/compression.ts xzBlockSize) is one standard
// .xz stream; a zstd NAR of ZSTD_ASYNC_FROM or more is in zstd's
// multithreaded format (compressed on zstd's own thread). Nix substitutes
// each path back from its cache with signatures required.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ZSTD_ASYNC_FROM } from '../../src/cache/compression.js';
import { nix, nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { narpush, run } from '../helpers/run.js';
import { assertCacheHas } from '../helpers/cache-check.js';

const work = await mkdtemp(path.join(tmpdir(), 'narpush-large-nar-'));
after(() => rm(work, { recursive: true, force: true }));

/**
 * A path of `lines` lines of compressible text, uploaded with `flags` into a
 * file:// cache of its own; `check` looks at the NAR file; then Nix deletes
 * the path and substitutes it back, signatures required.
 */
async function roundTrip(name: string, lines: number, flags: string[], check: (file: string, narSize: number) => void): Promise<void> {
  const dir = path.join(work, name);
  const secretKey = path.join(work, `${name}.sec`);
  const pub = path.join(work, `${name}.pub`);
  assert.equal((await narpush(['generate-key', `narpush-${name}-1`, secretKey, pub])).code, 0);
  const publicKey = (await readFile(pub, 'utf8')).trim();
  const [top] = await nixBuildExpr(
    `lib.mk { name = "np-${name}"; salt = "${randomUUID()}"; script = "mkdir $out; seq -f 'line %.0f of a compressible file' 1 ${lines} > $out/text"; }`,
  );
  const r = await narpush(['upload-path', '--to', `file://${dir}`, ...flags, '--secret-key-file', secretKey, top!], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  const [ni] = await assertCacheHas(async (k) => readFile(path.join(dir, k)).catch(() => undefined), [top!], publicKey);
  const files = await readdir(path.join(dir, 'nar'));
  assert.equal(files.length, 1);
  check(path.join(dir, 'nar', files[0]!), ni!.narSize);

  await nix('nix-store', ['--delete', top!]);
  const back = await run(
    'nix-store',
    ['-r', top!, '--option', 'substituters', `file://${dir}`, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(back.code, 0, `substitution failed: ${back.stderr}`);
  assert.equal((await run('nix-store', ['--verify-path', top!], { env: nixEnv() })).code, 0);
}

test('xz: a 20 MiB compressible NAR is uploaded in several blocks, which xz and Nix read back', async () => {
  // Preset 1: the block layout depends on the NAR's size, not the preset; a low one keeps the test quick.
  await roundTrip('xz-blocks', 700_000, ['--compression', 'xz', '--compression-level', '1'], (file, narSize) => {
    assert.ok(narSize >= 16 << 20, `NAR of ${narSize} bytes`);
    assert.equal(spawnSync('xz', ['-t', file]).status, 0, 'xz -t');
    const list = spawnSync('xz', ['--robot', '-lvv', file]).stdout.toString();
    assert.ok(list.split('\n').filter((l) => l.startsWith('block\t')).length >= 2, `several blocks:\n${list}`);
    assert.equal(list.split('\n').filter((l) => l.startsWith('stream\t')).length, 1, 'one stream');
  });
});

test("zstd: a NAR of 32 MiB or more (zstd's own thread) is read back by zstd and by Nix", async () => {
  await roundTrip('zstd-async', 1_200_000, ['--compression', 'zstd'], (file, narSize) => {
    assert.ok(narSize >= ZSTD_ASYNC_FROM, `NAR of ${narSize} bytes`);
    assert.ok(file.endsWith('.nar.zst'));
    assert.equal(spawnSync('zstd', ['-t', file]).status, 0, 'zstd -t');
  });
});
