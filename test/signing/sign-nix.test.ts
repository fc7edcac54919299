/**
 * Signing with Nix as the referee:
 * - golden vectors: Nix signs real store paths with a key Nix generated;
 *   narpush, given the same key and the fingerprint built from `nix path-info`,
 *   produces byte-identical signatures (Ed25519 is deterministic);
 * - a file:// cache laid out by hand with narinfos formatted and signed by
 *   narpush passes `nix store verify` (and fails with a wrong key or a
 *   tampered signature), and Nix substitutes a deleted path from it with
 *   require-sigs on;
 * - keys made by `narpush generate-key` work in Nix both ways.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { nix, requireNix } from '../helpers/nix.js';
import { narpush } from '../helpers/run.js';
import { parseHash } from '../../src/hash/hash.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { formatNarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import { fingerprint } from '../../src/narinfo/fingerprint.js';
import { formatPublicKey, newSecretKey, parsePublicKey, toPublicKey, type SecretKey } from '../../src/signing/keys.js';
import { readPublicKeyFile, readSecretKeyFile } from '../../src/signing/key-file.js';
import { signFingerprint, signNarInfo, verifySignature } from '../../src/signing/sign.js';
import {
  NO_NARINFO_CACHE,
  type FixtureAttr,
  type NixPathInfo,
  addNar,
  buildFixtures,
  emptyCache,
  freshSalt,
  nixRun,
  pathInfo,
  tempDir,
  writeNarInfo,
} from '../narinfo/nix-cache.js';

let salt = '';
let fixtures: Record<FixtureAttr, string>;
let keyDir = '';
let nixKeyName = '';

before(async () => {
  await requireNix();
  salt = freshSalt();
  fixtures = await buildFixtures(salt);
  keyDir = await tempDir('sign-nix');
  nixKeyName = `nix-golden-${salt}`;
  await nix('nix-store', ['--generate-binary-cache-key', nixKeyName, path.join(keyDir, 'nix.sk'), path.join(keyDir, 'nix.pk')]);
});

/** narpush's fingerprint of a path, from what `nix path-info --json` says of it. */
function fingerprintOf(info: NixPathInfo): string {
  return fingerprint(
    parseStorePath(info.path),
    parseHash(info.narHash),
    info.narSize,
    info.references.map((r) => parseStorePath(r)),
  );
}

function sigBy(info: NixPathInfo, name: string): string {
  const sigs = (info.signatures ?? []).filter((s) => s.startsWith(`${name}:`));
  assert.equal(sigs.length, 1, `${info.path} has one signature by ${name}: ${sigs.join(' ')}`);
  return sigs[0]!;
}

test('golden vectors: narpush signs exactly as Nix does with a key Nix generated', async () => {
  const sk = await readSecretKeyFile(path.join(keyDir, 'nix.sk'));
  const pk = await readPublicKeyFile(path.join(keyDir, 'nix.pk'));
  const paths = Object.values(fixtures);
  await nix('nix', ['store', 'sign', '--key-file', path.join(keyDir, 'nix.sk'), ...paths]);
  const infos = await pathInfo(paths);
  // The fixtures cover no references, one, and several including the path itself.
  const refCounts = infos.map((i) => i.references.length).sort();
  assert.deepEqual(refCounts, [0, 0, 1, 3]);
  assert.ok(infos.some((i) => i.references.includes(i.path)), 'a self-reference');
  for (const info of infos) {
    const fp = fingerprintOf(info);
    const nixSig = sigBy(info, nixKeyName);
    assert.equal(signFingerprint(fp, sk), nixSig, info.path);
    assert.equal(verifySignature(fp, nixSig, [pk]), true, info.path);
  }
});

test('Nix verifies a file:// cache whose narinfos narpush formatted and signed, and rejects wrong keys', async () => {
  const key = await readSecretKeyFile(path.join(keyDir, 'nix.sk'));
  const trusted = formatPublicKey(toPublicKey(key));
  const cache = await emptyCache('verify');
  const closure = [fixtures.leaf, fixtures.tree, fixtures.refs];
  for (const p of closure) await writeNarInfo(cache, p, formatNarInfo(signNarInfo(await addNar(cache, p), key)));

  const verify = (trustedKeys: string, extra: string[] = []) =>
    nixRun('nix', [
      'store', 'verify', '--store', `file://${cache}`, ...NO_NARINFO_CACHE,
      '--option', 'trusted-public-keys', trustedKeys, '--sigs-needed', '1', ...extra, ...closure,
    ]);
  // Contents and signatures.
  const ok = await verify(trusted);
  assert.equal(ok.code, 0, ok.stderr);
  // Nix reads back the signature narpush wrote.
  const infos = await pathInfo(closure, `file://${cache}`);
  for (const info of infos) assert.equal(sigBy(info, nixKeyName), signFingerprint(fingerprintOf(info), key));

  // The check can fail: the same name on another key, another name, a tampered signature.
  const other = formatPublicKey(toPublicKey(newSecretKey(nixKeyName)));
  const wrongKey = await verify(other, ['--no-contents']);
  assert.notEqual(wrongKey.code, 0, 'a different key under the same name');
  assert.match(wrongKey.stderr, /untrusted/);
  const wrongName = await verify(trusted.replace(nixKeyName, `${nixKeyName}-x`), ['--no-contents']);
  assert.notEqual(wrongName.code, 0, 'the right key under another name');

  const tampered = await emptyCache('tampered');
  const info = signNarInfo(await addNar(tampered, fixtures.leaf), key);
  const sig = info.sigs[0]!;
  const flipped = sig.slice(0, -4) + (sig.at(-4) === 'A' ? 'B' : 'A') + sig.slice(-3);
  await writeNarInfo(tampered, fixtures.leaf, formatNarInfo({ ...info, sigs: [flipped] }));
  const bad = await nixRun('nix', [
    'store', 'verify', '--store', `file://${tampered}`, ...NO_NARINFO_CACHE, '--no-contents',
    '--option', 'trusted-public-keys', trusted, '--sigs-needed', '1', fixtures.leaf,
  ]);
  assert.notEqual(bad.code, 0, 'a tampered signature');
  // And narpush agrees with Nix on each verdict.
  assert.equal(verifySignature(fingerprint(info.storePath, info.narHash, info.narSize, info.references), flipped, [toPublicKey(key)]), false);
});

test('Nix substitutes a deleted path from a narpush-signed cache with require-sigs, using a key from narpush generate-key', async () => {
  const dir = await tempDir('subst-key');
  const name = `narpush-subst-${salt}`;
  const r = await narpush(['generate-key', name, path.join(dir, 'sk'), path.join(dir, 'pk')]);
  assert.equal(r.code, 0, r.stderr);
  const key: SecretKey = await readSecretKeyFile(path.join(dir, 'sk'));
  const publicText = await readFile(path.join(dir, 'pk'), 'utf8');

  const target = fixtures.deletable;
  const cache = await emptyCache('subst');
  const text = formatNarInfo(signNarInfo(await addNar(cache, target), key));
  assert.match(text, /^References: \S+-narpush-ni-leaf\n/m, 'the substituted path has a reference');
  await writeNarInfo(cache, target, text);

  await nix('nix-store', ['--delete', target]);
  await assert.rejects(access(target), 'the path is gone');
  const substitute = (trustedKeys: string) =>
    nixRun('nix-store', [
      '-r', target, ...NO_NARINFO_CACHE,
      '--option', 'substituters', `file://${cache}`,
      '--option', 'trusted-public-keys', trustedKeys,
      '--option', 'require-sigs', 'true',
    ]);

  // With a key that did not sign it, Nix refuses the substitute.
  const refused = await substitute(formatPublicKey(toPublicKey(newSecretKey(name))));
  assert.notEqual(refused.code, 0, 'substitution without a valid signature must fail');
  await assert.rejects(access(target), 'still gone');

  const ok = await substitute(publicText);
  assert.equal(ok.code, 0, ok.stderr);
  await access(target);
  const check = await nixRun('nix-store', ['--verify-path', target]);
  assert.equal(check.code, 0, check.stderr);
  // The substituted path keeps narpush's signature in the local store.
  const [info] = await pathInfo([target]);
  assert.equal(sigBy(info!, name), signFingerprint(fingerprintOf(info!), key));
});

test('Nix signs with a secret key from narpush generate-key; the signature matches narpush\'s', async () => {
  const dir = await tempDir('nix-signs');
  const name = `narpush-made-${salt}`;
  const sk = path.join(dir, 'secret.key');
  const pk = path.join(dir, 'public.key');
  const r = await narpush(['generate-key', name, sk, pk]);
  assert.equal(r.code, 0, r.stderr);
  await nix('nix', ['store', 'sign', '--key-file', sk, fixtures.refs, fixtures.leaf]);
  const key = await readSecretKeyFile(sk);
  const pub = parsePublicKey(await readFile(pk, 'utf8'));
  for (const info of await pathInfo([fixtures.refs, fixtures.leaf])) {
    const nixSig = sigBy(info, name);
    assert.equal(nixSig, signFingerprint(fingerprintOf(info), key));
    assert.equal(verifySignature(fingerprintOf(info), nixSig, [pub]), true);
  }
  // And Nix's own verifier trusts the public key file narpush wrote.
  const v = await nixRun('nix', [
    'store', 'verify', '--no-contents', '--sigs-needed', '1',
    '--option', 'trusted-public-keys', await readFile(pk, 'utf8'), fixtures.refs, fixtures.leaf,
  ]);
  assert.equal(v.code, 0, v.stderr);
  const v2 = await nixRun('nix', [
    'store', 'verify', '--no-contents', '--sigs-needed', '1',
    '--option', 'trusted-public-keys', formatPublicKey(toPublicKey(newSecretKey(name))), fixtures.refs,
  ]);
  assert.notEqual(v2.code, 0, 'and distrusts another key of the same name');
});

test('narinfos narpush writes for real paths are read by narpush as written (Nix-derived records)', async () => {
  const cache = await emptyCache('reread');
  const key = await readSecretKeyFile(path.join(keyDir, 'nix.sk'));
  for (const p of Object.values(fixtures)) {
    const info = signNarInfo(await addNar(cache, p), key);
    const text = formatNarInfo(info);
    assert.deepStrictEqual(parseNarInfo(text), info);
  }
});
