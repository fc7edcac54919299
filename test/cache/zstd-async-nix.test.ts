// A zstd NAR of ZSTD_ASYNC_FROM or more is compressed in zstd's
// multithreaded format on zstd's own thread (src/cache/compression.ts): the
// zstd tool checks it, and Nix substitutes the path back from it with
// signatures required.
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

const work = await mkdtemp(path.join(tmpdir(), 'narpush-zstd-async-'));
after(() => rm(work, { recursive: true, force: true }));

test("zstd: a NAR of 32 MiB or more (zstd's own thread) is read back by zstd and by Nix", async () => {
  const secretKey = path.join(work, 'secret.key');
  const pub = path.join(work, 'public.key');
  assert.equal((await narpush(['generate-key', 'narpush-zstd-1', secretKey, pub])).code, 0);
  const publicKey = (await readFile(pub, 'utf8')).trim();
  const [top] = await nixBuildExpr(
    `lib.mk { name = "np-zstd-async"; salt = "${randomUUID()}"; script = "mkdir $out; seq -f 'line %.0f of a compressible file' 1 1200000 > $out/text"; }`,
  );
  const dir = path.join(work, 'cache');
  const r = await narpush(['upload-path', '--to', `file://${dir}`, '--compression', 'zstd', '--secret-key-file', secretKey, top!], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  const [ni] = await assertCacheHas(async (k) => readFile(path.join(dir, k)).catch(() => undefined), [top!], publicKey);
  assert.ok(ni!.narSize >= ZSTD_ASYNC_FROM, `NAR of ${ni!.narSize} bytes`);
  const files = await readdir(path.join(dir, 'nar'));
  assert.equal(files.length, 1);
  const file = path.join(dir, 'nar', files[0]!);
  assert.ok(file.endsWith('.nar.zst'));
  if (spawnSync('zstd', ['--version']).status === 0) assert.equal(spawnSync('zstd', ['-t', file]).status, 0, 'zstd -t');

  await nix('nix-store', ['--delete', top!]);
  const back = await run(
    'nix-store',
    ['-r', top!, '--option', 'substituters', `file://${dir}`, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(back.code, 0, `substitution failed: ${back.stderr}`);
  assert.equal((await run('nix-store', ['--verify-path', top!], { env: nixEnv() })).code, 0);
});
