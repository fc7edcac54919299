import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, symlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import {
  followLinksToStorePath,
  parseStorePath,
  parseStorePathBaseName,
  storePathNameError,
  toStorePath,
} from '../../src/store/store-path.js';

const HASH = 'sbldylj3clbkc0aqvjjzfa6slp4zdvlj';

test('parses a store path', () => {
  const p = parseStorePath(`/nix/store/${HASH}-hello-2.12.1`);
  assert.equal(p.hashPart, HASH);
  assert.equal(p.name, 'hello-2.12.1');
  assert.equal(p.baseName, `${HASH}-hello-2.12.1`);
  assert.equal(p.path, `/nix/store/${HASH}-hello-2.12.1`);
  assert.equal(parseStorePathBaseName(`${HASH}-a+b-c.d_e?f=g`).name, 'a+b-c.d_e?f=g');
  assert.equal(parseStorePath(`/other/store/${HASH}-x`, '/other/store').storeDir, '/other/store');
});

test('rejects what Nix rejects', () => {
  const cases: [string, RegExp][] = [
    [`/nix/store/${HASH}-hello/`, /trailing slash or a subpath/],
    [`/nix/store/${HASH}-hello/bin`, /trailing slash or a subpath/],
    [`/nix/store/../store/${HASH}-hello`, /invalid hash part|not a store path/],
    [`/nix/stor/${HASH}-hello`, /not in the Nix store/],
    [`nix/store/${HASH}-hello`, /not in the Nix store/],
    [`/nix/store/${HASH}`, /not a store path base name/],
    [`/nix/store/${HASH}-`, /not a store path base name/],
    [`/nix/store/${HASH.replace('s', 'e')}-hello`, /invalid hash part/],
    [`/nix/store/${HASH.slice(1)}-hello`, /not a store path base name|invalid hash part/],
    [`/nix/store/${HASH}-hel lo`, /character other than/],
    [`/nix/store/${HASH}-héllo`, /character other than/],
    [`/nix/store/${HASH}-..`, /the name is '..'/],
    [`/nix/store/${HASH}-.`, /the name is '.'/],
    [`/nix/store/${HASH}-.-foo`, /starts with '.-'/],
    [`/nix/store/${HASH}-..-foo`, /starts with '..-'/],
    [`/nix/store/${HASH}-${'a'.repeat(212)}`, /longer than 211/],
  ];
  for (const [p, re] of cases) assert.throws(() => parseStorePath(p), { code: 'BAD_STORE_PATH', message: re }, p);
  assert.equal(storePathNameError('a'.repeat(211)), undefined);
  assert.equal(storePathNameError('.foo'), undefined);
});

test('toStorePath splits off subpaths and rejects unnormalized paths', () => {
  const r = toStorePath(`/nix/store/${HASH}-hello/bin/hello`);
  assert.equal(r.storePath.name, 'hello');
  assert.equal(r.subpath, 'bin/hello');
  assert.equal(toStorePath(`/nix/store/${HASH}-hello`).subpath, '');
  assert.throws(() => toStorePath(`/nix/store/${HASH}-hello/../../etc`), { code: 'BAD_STORE_PATH' });
});

test('followLinksToStorePath resolves ./result-style symlinks and refuses the rest', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-sp-'));
  try {
    await symlink(`/nix/store/${HASH}-hello`, path.join(dir, 'result'));
    await symlink('result', path.join(dir, 'result2'));
    await symlink('/etc/passwd', path.join(dir, 'outside'));
    assert.equal((await followLinksToStorePath('result', undefined, dir)).storePath.name, 'hello');
    assert.equal((await followLinksToStorePath(path.join(dir, 'result2'))).storePath.hashPart, HASH);
    assert.equal((await followLinksToStorePath(`/nix/store/${HASH}-hello`)).storePath.hashPart, HASH);
    await assert.rejects(followLinksToStorePath('outside', undefined, dir), { code: 'BAD_STORE_PATH', message: /not in the Nix store/ });
    await assert.rejects(followLinksToStorePath('missing', undefined, dir), { code: 'PATH_NOT_FOUND', message: /does not exist/ });
    await assert.rejects(followLinksToStorePath(`/nix/store/${HASH}-hello/../../../etc/passwd`), { code: 'BAD_STORE_PATH' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
