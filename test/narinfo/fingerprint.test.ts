/**
 * Fingerprints: the signed string. The referee is cache.nixos.org: its
 * signatures over real narinfos verify only if narpush builds exactly the
 * string Nix built (checked here, and any change to a signed field breaks it).
 * The signing tests check the same against Nix's own signatures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { FIXTURES } from '../helpers/run.js';
import { parseHash, sha256 } from '../../src/hash/hash.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { type NarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import { fingerprint, narInfoFingerprint } from '../../src/narinfo/fingerprint.js';
import { parsePublicKey } from '../../src/signing/keys.js';
import { verifyNarInfo } from '../../src/signing/sign.js';

const NIXOS_KEY = parsePublicKey('cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=');
const DIR = path.join(FIXTURES, 'narinfo', 'cache.nixos.org');
const REAL = readdirSync(DIR)
  .filter((n) => n.endsWith('.narinfo'))
  .map((n) => ({ name: n, info: parseNarInfo(readFileSync(path.join(DIR, n), 'utf8'), '/nix/store', n) }));

test('cache.nixos.org signatures verify over narpush fingerprints', () => {
  assert.equal(REAL.length, 3);
  for (const { name, info } of REAL) assert.equal(verifyNarInfo(info, [NIXOS_KEY]), 1, name);
});

test('changing any signed field breaks the cache.nixos.org signature; unsigned fields do not', () => {
  for (const { name, info } of REAL) {
    const other = parseStorePath('/nix/store/00000000000000000000000000000000-other');
    const signedChanges: [string, NarInfo][] = [
      ['path', { ...info, storePath: parseStorePath(info.storePath.path.replace(/.$/, 'x')) }],
      ['NarHash', { ...info, narHash: sha256('x') }],
      ['NarSize', { ...info, narSize: info.narSize + 1 }],
      ['a reference less', { ...info, references: info.references.slice(1) }],
      ['a reference more', { ...info, references: [...info.references, other] }],
    ];
    for (const [what, changed] of signedChanges) assert.equal(verifyNarInfo(changed, [NIXOS_KEY]), 0, `${name}: ${what}`);
    const unsignedChanges: [string, NarInfo][] = [
      ['URL', { ...info, url: 'nar/x.nar' }],
      ['Compression', { ...info, compression: 'none' }],
      ['FileHash', { ...info, fileHash: sha256('x'), fileSize: 1 }],
      ['Deriver', { ...info, deriver: other }],
      ['reference order', { ...info, references: [...info.references].reverse() }],
    ];
    for (const [what, changed] of unsignedChanges) assert.equal(verifyNarInfo(changed, [NIXOS_KEY]), 1, `${name}: ${what}`);
  }
});

test('fingerprint layout: full paths, sha256 in nix32, sorted comma-separated references', () => {
  const p = parseStorePath('/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin');
  const h = parseHash('sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0');
  const a = parseStorePath('/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0');
  const b = parseStorePath('/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n');
  const base = `1;${p.path};sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;`;
  assert.equal(fingerprint(p, h, 196040, []), base);
  assert.equal(fingerprint(p, h, 196040, [b, a, b]), `${base}${a.path},${b.path}`);
  // A NarHash given in another encoding is written in nix32.
  assert.equal(fingerprint(p, parseHash(`sha256-${h.digest.toString('base64')}`), 196040, [a]), `${base}${a.path}`);
  const curl = REAL.find((r) => r.name.startsWith('syd87'))!.info;
  assert.equal(narInfoFingerprint(curl), fingerprint(curl.storePath, curl.narHash, curl.narSize, curl.references));
});

test('refuses fingerprints Nix would not sign: non-sha256 NarHash, unknown NarSize', () => {
  const p = parseStorePath('/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin');
  const sha1 = { algo: 'sha1' as const, digest: Buffer.alloc(20) };
  assert.throws(() => fingerprint(p, sha1, 1, []), { code: 'BAD_FINGERPRINT', message: /NarHash is sha1, signatures need sha256/ });
  assert.throws(() => fingerprint(p, sha256('x'), 0, []), { code: 'BAD_FINGERPRINT', message: /NarSize \(0\) is not known/ });
  assert.throws(() => fingerprint(p, sha256('x'), 1.5, []), { code: 'BAD_FINGERPRINT' });
});
