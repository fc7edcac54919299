/**
 * narinfo parse/format without Nix: round trips (property), Nix's tolerances
 * and each malformed case with its line and field. What Nix itself accepts is
 * checked in narinfo-nix.test.ts; these tests pin the details cheaply.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { FIXTURES } from '../helpers/run.js';
import { formatHash } from '../../src/hash/hash.js';
import { type NarInfo, formatNarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import { parseContentAddress, formatContentAddress } from '../../src/narinfo/content-address.js';
import { narInfoArb } from './arbitraries.js';

// Signed by cache.nixos.org (see test/fixtures/narinfo/README.md): Nix wrote these bytes.
const CURL = readFileSync(path.join(FIXTURES, 'narinfo', 'cache.nixos.org', 'syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo'), 'utf8');

function lines(text: string): string[] {
  return text.split('\n').slice(0, -1);
}

function edit(text: string, key: string, replacement: string | null): string {
  const out = lines(text).flatMap((l) => (l.startsWith(`${key}: `) ? (replacement === null ? [] : [replacement]) : [l]));
  return out.join('\n') + '\n';
}

test('parses a narinfo written by cache.nixos.org and writes the same bytes back', () => {
  const info = parseNarInfo(CURL);
  assert.equal(info.storePath.path, '/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin');
  assert.equal(info.url, 'nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz');
  assert.equal(info.compression, 'xz');
  assert.equal(formatHash(info.fileHash!), 'sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56');
  assert.equal(info.fileSize, 68852);
  assert.equal(formatHash(info.narHash), 'sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0');
  assert.equal(info.narSize, 196040);
  assert.deepEqual(
    info.references.map((r) => r.baseName),
    [
      '0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0',
      '6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115',
      'j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12',
      'yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n',
    ],
  );
  assert.equal(info.deriver?.baseName, '5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv');
  assert.equal(info.sigs.length, 1);
  assert.equal(info.ca, undefined);
  assert.equal(formatNarInfo(info), CURL);
});

test('format then parse gives the same record (property)', () => {
  fc.assert(
    fc.property(narInfoArb, (info) => {
      const text = formatNarInfo(info);
      assert.deepStrictEqual(parseNarInfo(text), info);
      assert.equal(formatNarInfo(parseNarInfo(text)), text);
    }),
    { numRuns: 300 },
  );
});

test('any field order, hash encoding and unknown keys parse to the same record (property)', () => {
  const encodings = ['nix32', 'base16', 'base64', 'sri'] as const;
  fc.assert(
    fc.property(
      narInfoArb,
      fc.constantFrom(...encodings),
      fc.constantFrom(...encodings),
      fc.array(fc.constantFrom('System: x86_64-linux', 'Provenance: {}', 'X-Other: a: b', ': empty key'), { maxLength: 3 }),
      fc.nat(),
      (info, narEnc, fileEnc, extra, seed) => {
        const text = formatNarInfo(info)
          .replace(/^NarHash: .*$/m, `NarHash: ${formatHash(info.narHash, narEnc)}`)
          .replace(/^FileHash: .*$/m, `FileHash: ${info.fileHash ? formatHash(info.fileHash, fileEnc) : ''}`);
        const all = [...lines(text), ...extra];
        // A deterministic shuffle driven by fast-check's seed, so failures shrink and replay.
        const shuffled = all
          .map((l, i) => ({ l, k: (seed * 7919 + i * 104729) % 1000003 }))
          .sort((a, b) => a.k - b.k)
          .map((x) => x.l);
        assert.deepStrictEqual(parseNarInfo(shuffled.join('\n') + '\n'), info);
      },
    ),
    { numRuns: 200 },
  );
});

test("tolerates what Nix tolerates", () => {
  const base = parseNarInfo(CURL);
  const same = (text: string, what: string, expect: NarInfo = base): void =>
    assert.deepStrictEqual(parseNarInfo(text), expect, what);

  same(CURL.replace('Compression: xz\n', 'Compression: xz\nSystem: x86_64-linux\n'), 'unknown key');
  same(edit(CURL, 'Compression', null), 'missing Compression', { ...base, compression: 'bzip2' });
  same(edit(CURL, 'Compression', 'Compression: '), 'empty Compression', { ...base, compression: 'bzip2' });
  same(edit(CURL, 'NarHash', `NarHash: ${formatHash(base.narHash, 'base16')}`), 'base16 NarHash');
  same(edit(CURL, 'NarHash', `NarHash: ${formatHash(base.narHash, 'sri')}`), 'SRI NarHash');
  same(edit(CURL, 'NarHash', `NarHash: ${formatHash(base.narHash, 'base64')}`), 'base64 NarHash');
  same(edit(CURL, 'FileHash', `FileHash: ${formatHash(base.fileHash!, 'sri')}`), 'SRI FileHash');
  same(edit(CURL, 'NarSize', 'NarSize: +196040'), 'NarSize with a plus sign (string2Int accepts it)');
  same(edit(CURL, 'NarSize', 'NarSize: 000196040'), 'NarSize with leading zeros');
  const { deriver: _d, ...noDeriver } = base;
  same(edit(CURL, 'Deriver', 'Deriver: unknown-deriver'), 'unknown-deriver', noDeriver);
  same(edit(CURL, 'Deriver', null), 'no Deriver', noDeriver);
  const { fileHash: _h, fileSize: _s, ...noFile } = base;
  same(edit(edit(CURL, 'FileHash', null), 'FileSize', null), 'no FileHash/FileSize', noFile);
  same(edit(CURL, 'CA', null) + 'CA: \n', 'empty CA means none');
  same(CURL.replace('References: ', 'References:  ').replace(/\nDeriver/, '  \nDeriver'), 'extra spaces in References');
  same(CURL + `Sig: ${base.sigs[0]}\n`, 'a repeated Sig');
  same(CURL + 'URL: elsewhere.nar.xz\n', 'a repeated URL: the last wins', { ...base, url: 'elsewhere.nar.xz' });
  same(edit(CURL, 'References', 'References: ') + 'References: ' + base.references.map((r) => r.baseName).join(' ') + '\n', 'an empty References then a full one');

  // A path may refer to itself (most packages do).
  const self = parseNarInfo(CURL.replace('References: ', `References: ${base.storePath.baseName} `));
  assert.equal(self.references.length, 5);
  assert.ok(self.references.some((r) => r.equals(base.storePath)));

  // Sigs and references are kept as Nix keeps them: sorted, without duplicates.
  const sigs = parseNarInfo(CURL + 'Sig: a-1:x\nSig: Z-1:y\nSig: a-1:x\n').sigs;
  assert.deepEqual(sigs, ['Z-1:y', 'a-1:x', base.sigs[0]]);

  // CA: any hash encoding in, nix32 out.
  const ca = parseContentAddress('fixed:r:sha256:128zzn9nxi8v9q5xpl6qcnqnqcmx5gsmsha3azgj7sscpnnnqqnm');
  const b16 = `fixed:r:sha256:${ca.hash.digest.toString('hex')}`;
  assert.equal(parseNarInfo(CURL + `CA: ${b16}\n`).ca, formatContentAddress(ca));
  assert.equal(parseNarInfo(CURL, '/nix/store', 'x.narinfo').storePath.storeDir, '/nix/store');
});

test('each malformed narinfo is refused with its line and field', () => {
  const n = (key: string): number => lines(CURL).findIndex((l) => l.startsWith(`${key}: `)) + 1;
  const cases: [string, string, RegExp][] = [
    ['no final newline', CURL.slice(0, -1), new RegExp(`line ${n('Sig')} \\(Sig\\): the last line does not end with a newline`)],
    ['CRLF', CURL.replace(/\n/g, '\r\n'), /line 1 \(StorePath\): carriage return/],
    ['line without a colon', CURL.replace('Compression: xz\n', 'Compression xz\n'), /line 3: expected 'Key: value', got "Compression xz"/],
    ['no space after the colon', CURL.replace('URL: ', 'URL:'), /line 2 \(URL\): expected 'Key: value'/],
    ['blank line', CURL.replace('\nURL', '\n\nURL'), /line 2: expected 'Key: value', got ""/],
    ['blank line at the end', CURL + '\n', new RegExp(`line ${lines(CURL).length + 1}: expected 'Key: value'`)],
    ['StorePath outside the store', CURL.replace('/nix/store/syd', '/gnu/store/syd'), /line 1 \(StorePath\): bad store path: .*not in the Nix store/],
    ['StorePath with a subpath', CURL.replace('curl-7.82.0-bin\n', 'curl-7.82.0-bin/bin\n'), /line 1 \(StorePath\): bad store path/],
    ['StorePath with a bad hash', CURL.replace('syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin', 'eyd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin'), /line 1 \(StorePath\): bad store path/],
    ['bad NarHash', edit(CURL, 'NarHash', 'NarHash: sha256:zzz'), new RegExp(`line ${n('NarHash')} \\(NarHash\\): bad hash "sha256:zzz"`)],
    ['NarHash without its algorithm', edit(CURL, 'NarHash', 'NarHash: 1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0'), /\(NarHash\): bad hash/],
    ['NarHash of the wrong length', edit(CURL, 'NarHash', 'NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys'), /\(NarHash\): bad hash/],
    ['unknown hash algorithm', edit(CURL, 'FileHash', 'FileHash: sha3:abc'), new RegExp(`line ${n('FileHash')} \\(FileHash\\): bad hash`)],
    ['NarSize not a number', edit(CURL, 'NarSize', 'NarSize: 12a'), new RegExp(`line ${n('NarSize')} \\(NarSize\\): invalid NarSize "12a"`)],
    ['NarSize negative', edit(CURL, 'NarSize', 'NarSize: -1'), /\(NarSize\): invalid NarSize/],
    ['NarSize with a trailing space', edit(CURL, 'NarSize', 'NarSize: 1 '), /\(NarSize\): invalid NarSize/],
    ['NarSize beyond 2^53', edit(CURL, 'NarSize', 'NarSize: 18446744073709551615'), /\(NarSize\): invalid NarSize/],
    ['NarSize zero', edit(CURL, 'NarSize', 'NarSize: 0'), new RegExp(`line ${n('NarSize')} \\(NarSize\\): NarSize is zero`)],
    ['FileSize empty', edit(CURL, 'FileSize', 'FileSize: '), new RegExp(`line ${n('FileSize')} \\(FileSize\\): invalid FileSize`)],
    ['bad reference', edit(CURL, 'References', 'References: foo'), new RegExp(`line ${n('References')} \\(References\\): bad reference: 'foo'`)],
    ['full path as a reference', edit(CURL, 'References', 'References: /nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0'), /\(References\): bad reference/],
    ['two non-empty References', CURL + 'References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0\n', /\(References\): extra References line/],
    ['bad Deriver', edit(CURL, 'Deriver', 'Deriver: '), new RegExp(`line ${n('Deriver')} \\(Deriver\\): bad deriver`)],
    ['bad CA', CURL + 'CA: foo\n', /\(CA\): bad content address: invalid content address 'foo'/],
    ['CA with an unknown method', CURL + 'CA: git:sha256:0b04g3nhgc8jc366356xwclmaphbrz3a1s7c28nrwkvwkpbqv1qq\n', /\(CA\): bad content address/],
    ['text CA not sha256', CURL + 'CA: text:sha1:0b04g3nhgc8jc366356xwclmaphbrz3a\n', /\(CA\): bad content address/],
    ['two CAs', CURL + 'CA: text:sha256:0b04g3nhgc8jc366356xwclmaphbrz3a1s7c28nrwkvwkpbqv1qq\nCA: text:sha256:0b04g3nhgc8jc366356xwclmaphbrz3a1s7c28nrwkvwkpbqv1qq\n', /\(CA\): extra CA line/],
    ['no StorePath', edit(CURL, 'StorePath', null), /: StorePath: the StorePath line is missing/],
    ['no NarHash', edit(CURL, 'NarHash', null), /: NarHash: the NarHash line is missing/],
    ['no URL', edit(CURL, 'URL', null), /: URL: the URL line is missing or empty/],
    ['empty URL', edit(CURL, 'URL', 'URL: '), /: URL: the URL line is missing or empty/],
    ['no NarSize', edit(CURL, 'NarSize', null), /: NarSize: the NarSize line is missing/],
    ['empty file', '', /StorePath line is missing/],
  ];
  for (const [what, text, message] of cases) {
    assert.throws(() => parseNarInfo(text), { code: 'BAD_NARINFO', message }, what);
    // One line, and the file is named when the caller says which.
    assert.throws(() => parseNarInfo(text, '/nix/store', 'x.narinfo'), (e: Error) => {
      assert.match(e.message, /^narinfo 'x\.narinfo' is corrupt: /, what);
      assert.doesNotMatch(e.message, /\n/, what);
      return true;
    });
  }
});

test('a binary object read as a narinfo is refused in printable ASCII that shows its bytes', () => {
  // A .nar.xz, a zstd frame or an escape sequence where a narinfo should be.
  const xz = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x0a]).toString('utf8');
  const zst = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x3a, 0x9b, 0x32, 0x4a, 0x0a]).toString('latin1');
  const cases: [string, string, RegExp][] = [
    ['xz magic', xz, /line 1: expected 'Key: value', got "\\ufffd7zXZ\\u0000\\u0000\\u0004/],
    ['C1 control in the key', zst, /line 1 \("\(\\u00b5\/\\u00fd"\): expected 'Key: value', got .*\\u009b2J/],
    ['terminal title in a value', CURL.replace('Compression: xz', 'Compression xz\x1b]0;pwned\x07'), /got "Compression xz\\u001b\]0;pwned\\u0007"/],
    ['escape in a field', edit(CURL, 'NarSize', 'NarSize: 1\x1b[2J'), /invalid NarSize "1\\u001b\[2J"/],
  ];
  for (const [what, text, message] of cases) {
    assert.throws(() => parseNarInfo(text, '/nix/store', 'x.narinfo'), (e: Error) => {
      assert.match(e.message, message, what);
      assert.match(e.message, /^[\x20-\x7e]+$/, `${what}: ${JSON.stringify(e.message)}`);
      return true;
    });
  }
});

test('refuses to write a narinfo Nix would not write or read back', () => {
  const base = parseNarInfo(CURL);
  const cases: [string, NarInfo, RegExp][] = [
    ['empty URL', { ...base, url: '' }, /URL is empty/],
    ['newline in URL', { ...base, url: 'a\nNarSize: 1' }, /URL contains a line break/],
    ['newline in Compression', { ...base, compression: 'xz\r' }, /Compression contains a line break/],
    ['newline in a Sig', { ...base, sigs: ['a:b\nc'] }, /Sig contains a line break/],
    ['NarSize 0', { ...base, narSize: 0 }, /NarSize 0/],
    ['fractional FileSize', { ...base, fileSize: 1.5 }, /FileSize 1.5/],
    ['sha512 NarHash', { ...base, narHash: { algo: 'sha512', digest: Buffer.alloc(64) } }, /NarHash is sha512/],
    ['bad CA', { ...base, ca: 'nonsense' }, /invalid content address/],
  ];
  for (const [what, info, message] of cases) assert.throws(() => formatNarInfo(info), { code: 'BAD_NARINFO', message }, what);
});

test('references and signatures are written in Nix order whatever order the record has', () => {
  const base = parseNarInfo(CURL);
  const shuffled: NarInfo = { ...base, references: [...base.references].reverse(), sigs: ['b:2', 'a:1', 'b:2'] };
  const text = formatNarInfo(shuffled);
  assert.equal(text, formatNarInfo({ ...base, sigs: ['a:1', 'b:2'] }));
  assert.match(text, /\nSig: a:1\nSig: b:2\n$/);
});
