/**
 * Fixed golden vectors that Nix made (see test/fixtures/keys/README.md and
 * test/fixtures/narinfo/README.md): a key pair from
 * `nix-store --generate-binary-cache-key` and narinfos that Nix wrote and
 * signed with it. narpush must load the key, reproduce each signature byte for
 * byte and reproduce each file. Needs no Nix at test time; sign-nix.test.ts
 * repeats the same checks live with fresh keys and paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { FIXTURES } from '../helpers/run.js';
import { formatNarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import { formatPublicKey, parsePublicKey, toPublicKey } from '../../src/signing/keys.js';
import { readSecretKeyFile } from '../../src/signing/key-file.js';
import { signNarInfo, verifyNarInfo } from '../../src/signing/sign.js';

const KEYS = path.join(FIXTURES, 'keys');
const SIGNED = path.join(FIXTURES, 'narinfo', 'nix-signed');

test('narpush reproduces the signatures Nix made with a Nix-generated key', async () => {
  const secret = await readSecretKeyFile(path.join(KEYS, 'nix-generated.secret'));
  const publicText = readFileSync(path.join(KEYS, 'nix-generated.public'), 'utf8');
  assert.equal(formatPublicKey(toPublicKey(secret)), publicText);
  const files = readdirSync(SIGNED).filter((n) => n.endsWith('.narinfo'));
  assert.equal(files.length, 2);
  const refCounts: number[] = [];
  for (const name of files) {
    const text = readFileSync(path.join(SIGNED, name), 'utf8');
    const info = parseNarInfo(text, '/nix/store', name);
    refCounts.push(info.references.length);
    assert.equal(info.sigs.length, 1, name);
    // Drop Nix's signature, sign again: the same bytes, and the same file.
    const resigned = signNarInfo({ ...info, sigs: [] }, secret);
    assert.deepEqual(resigned.sigs, info.sigs, name);
    assert.equal(formatNarInfo(resigned), text, name);
    assert.equal(verifyNarInfo(info, [parsePublicKey(publicText)]), 1, name);
  }
  assert.deepEqual(refCounts.sort(), [0, 3]);
});
