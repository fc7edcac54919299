/**
 * `narpush generate-key` as a user runs it: Nix's file formats, a 0600 secret
 * whatever the umask, never an overwrite, nothing left behind on failure, and
 * one-line errors. (That Nix accepts the keys is in sign-nix.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { nix, requireNix } from '../helpers/nix.js';
import { narpush, run, NARPUSH_BIN } from '../helpers/run.js';
import { formatPublicKey, parseSecretKey, toPublicKey } from '../../src/signing/keys.js';
import { tempDir } from '../narinfo/nix-cache.js';

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

function assertOneLineError(stderr: string, pattern: RegExp): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr, got: ${stderr}`);
  assert.match(lines[0]!, /^narpush: error: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

test('writes the same formats as nix-store --generate-binary-cache-key', async () => {
  await requireNix();
  const dir = await tempDir('genkey');
  const r = await narpush(['generate-key', 'cache.example.org-1', path.join(dir, 'sk'), path.join(dir, 'pk')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
  await nix('nix-store', ['--generate-binary-cache-key', 'cache.example.org-1', path.join(dir, 'nix.sk'), path.join(dir, 'nix.pk')]);
  const ours = { sk: await readFile(path.join(dir, 'sk'), 'utf8'), pk: await readFile(path.join(dir, 'pk'), 'utf8') };
  const nixs = { sk: await readFile(path.join(dir, 'nix.sk'), 'utf8'), pk: await readFile(path.join(dir, 'nix.pk'), 'utf8') };
  // Same shape as Nix's files (name, colon, base64 of the same length, no newline), different random keys.
  const shape = (s: string): string => s.replace(/[A-Za-z0-9+/]/g, 'x');
  assert.equal(shape(ours.sk), shape(nixs.sk));
  assert.equal(shape(ours.pk), shape(nixs.pk));
  assert.notEqual(ours.sk, nixs.sk);
  assert.equal(formatPublicKey(toPublicKey(parseSecretKey(ours.sk))), ours.pk);
  assert.equal((await stat(path.join(dir, 'sk'))).mode & 0o777, 0o600);
});

test('the secret file is 0600 even under umask 000', async () => {
  const dir = await tempDir('genkey-umask');
  const sk = path.join(dir, 'sk');
  const pk = path.join(dir, 'pk');
  const script = `umask 000; exec "$0" "$1" generate-key umask-test-1 "$2" "$3"`;
  const r = await run('/bin/sh', ['-c', script, process.execPath, NARPUSH_BIN, sk, pk]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await stat(sk)).mode & 0o777, 0o600);
  // The public key is public: readable by all, but not writable by others.
  assert.equal((await stat(pk)).mode & 0o777, 0o644);
});

test('refuses to overwrite either file, before writing anything', async () => {
  const dir = await tempDir('genkey-exists');
  const sk = path.join(dir, 'sk');
  const pk = path.join(dir, 'pk');

  await writeFile(sk, 'precious secret');
  let r = await narpush(['generate-key', 'k-1', sk, pk]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, new RegExp(`'${sk}' already exists; refusing to overwrite it`));
  assert.equal(await readFile(sk, 'utf8'), 'precious secret');
  assert.equal(await exists(pk), false, 'the public file was not written either');

  const sk2 = path.join(dir, 'sk2');
  await writeFile(pk, 'precious public');
  r = await narpush(['generate-key', 'k-1', sk2, pk]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, new RegExp(`'${pk}' already exists`));
  assert.equal(await readFile(pk, 'utf8'), 'precious public');
  assert.equal(await exists(sk2), false, 'no secret was written when the public file exists');

  // A dangling symlink is a file too: following it would write somewhere unexpected.
  const link = path.join(dir, 'link');
  await symlink(path.join(dir, 'elsewhere'), link);
  r = await narpush(['generate-key', 'k-1', link, path.join(dir, 'pk3')]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, /already exists/);
  assert.equal(await exists(path.join(dir, 'elsewhere')), false);

  r = await narpush(['generate-key', 'k-1', path.join(dir, 'same'), path.join(dir, '.', 'same')]);
  assert.equal(r.code, 2, 'bad usage');
  assertOneLineError(r.stderr, /must be different files/);
});

test('bad names are refused in one line, and nothing is written', async () => {
  const dir = await tempDir('genkey-names');
  const cases: [string, RegExp][] = [
    ['', /invalid key name "": the name is empty/],
    ['a:b', /invalid key name "a:b": the name contains ':'/],
    ['a b', /the name contains whitespace/],
    ['a\nb', /invalid key name "a\\nb": the name contains whitespace/],
  ];
  for (const [i, [name, message]] of cases.entries()) {
    const sk = path.join(dir, `sk${i}`);
    const pk = path.join(dir, `pk${i}`);
    const r = await narpush(['generate-key', name, sk, pk]);
    assert.equal(r.code, 2, `bad usage: ${JSON.stringify(name)}`);
    assertOneLineError(r.stderr, message);
    assert.equal(await exists(sk), false);
    assert.equal(await exists(pk), false);
  }
});

test('when the public file cannot be written, the new secret file is removed', async () => {
  const dir = await tempDir('genkey-fail');
  const sk = path.join(dir, 'sk');
  const pk = path.join(dir, 'missing-dir', 'pk');
  let r = await narpush(['generate-key', 'k-1', sk, pk]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, new RegExp(`cannot create '${pk}': its directory '.*missing-dir' does not exist`));
  assert.equal(await exists(sk), false, 'no orphan secret key');

  // Nothing to remove when the secret itself cannot be created.
  r = await narpush(['generate-key', 'k-1', path.join(dir, 'nodir', 'sk'), path.join(dir, 'pk')]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, /cannot create .*nodir\/sk.*does not exist/);
  assert.equal(await exists(path.join(dir, 'pk')), false);

  await mkdir(path.join(dir, 'isdir'));
  r = await narpush(['generate-key', 'k-1', path.join(dir, 'sk4'), path.join(dir, 'isdir')]);
  assert.equal(r.code, 1);
  assertOneLineError(r.stderr, /already exists/);
  assert.equal(await exists(path.join(dir, 'sk4')), false);
});
