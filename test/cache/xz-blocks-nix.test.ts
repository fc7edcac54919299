// A large xz NAR in several blocks (encoded at once on idle cores, see
// src/cache/compression.ts xzBlockSize) is one standard .xz stream: xz
// checks and lists it, and Nix substitutes the path back from it with
// signatures required.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { narpush, run } from '../helpers/run.js';
import { assertCacheHas } from '../helpers/cache-check.js';

const work = await mkdtemp(path.join(tmpdir(), 'narpush-xz-blocks-'));
after(() => rm(work, { recursive: true, force: true }));

test('xz: a 20 MiB compressible NAR is uploaded in several blocks, which xz and Nix read back', async () => {
  const secretKey = path.join(work, 'secret.key');
  const pub = path.join(work, 'public.key');
  assert.equal((await narpush(['generate-key', 'narpush-xz-1', secretKey, pub])).code, 0);
  const publicKey = (await readFile(pub, 'utf8')).trim();
  const [top] = await nixBuildExpr(
    `lib.mk { name = "np-xz-blocks"; salt = "${randomUUID()}"; script = "mkdir $out; seq -f 'line %.0f of a compressible file' 1 700000 > $out/text"; }`,
  );
  const dir = path.join(work, 'cache');
  // Preset 1: the block layout depends on the NAR's size, not the preset; a low one keeps the test quick.
  const r = await narpush(['upload-path', '--to', `file://${dir}`, '--compression', 'xz', '--compression-level', '1', '--secret-key-file', secretKey, top!], {
    env: nixEnv(),
  });
  assert.equal(r.code, 0, r.stderr);
  const [ni] = await assertCacheHas(async (k) => readFile(path.join(dir, k)).catch(() => undefined), [top!], publicKey);
  assert.ok(ni!.narSize >= 16 << 20, `NAR of ${ni!.narSize} bytes`);
  const files = await readdir(path.join(dir, 'nar'));
  assert.equal(files.length, 1);
  const file = path.join(dir, 'nar', files[0]!);
  assert.equal(spawnSync('xz', ['-t', file]).status, 0, 'xz -t');
  const list = spawnSync('xz', ['--robot', '-lvv', file]).stdout.toString();
  assert.ok(list.split('\n').filter((l) => l.startsWith('block\t')).length >= 2, `several blocks:\n${list}`);
  assert.equal(list.split('\n').filter((l) => l.startsWith('stream\t')).length, 1, 'one stream');

  await nix('nix-store', ['--delete', top!]);
  const back = await run(
    'nix-store',
    ['-r', top!, '--option', 'substituters', `file://${dir}`, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(back.code, 0, `substitution failed: ${back.stderr}`);
  assert.equal((await run('nix-store', ['--verify-path', top!], { env: nixEnv() })).code, 0);
});
