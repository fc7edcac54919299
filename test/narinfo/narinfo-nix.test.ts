/**
 * narinfo against real Nix: every narinfo `nix copy` writes (compression none
 * and xz; with and without references, with a deriver, signed, and
 * content-addressed) parses to what Nix itself reads from it and formats back
 * to the same bytes; and for a table of variants (tolerated or corrupt),
 * narpush's verdict is Nix's verdict.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile, copyFile, mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import { nix, requireNix } from '../helpers/nix.js';
import { formatHash } from '../../src/hash/hash.js';
import { type NarInfo, formatNarInfo, parseNarInfo } from '../../src/narinfo/narinfo.js';
import {
  NO_NARINFO_CACHE,
  type NixPathInfo,
  buildFixtures,
  freshSalt,
  nixRun,
  pathInfo,
  tempDir,
} from './nix-cache.js';

let paths: string[] = [];
let work = '';

before(async () => {
  await requireNix();
  work = await tempDir('narinfo-nix');
  const salt = freshSalt();
  const f = await buildFixtures(salt);
  // A key made by Nix, so that the copies carry Sig lines.
  const sk = path.join(work, 'sk');
  await nix('nix-store', ['--generate-binary-cache-key', `narinfo-test-${salt}`, sk, path.join(work, 'pk')]);
  await nix('nix', ['store', 'sign', '--key-file', sk, f.leaf, f.refs]);
  // Content-addressed: a file added with nix-store --add (fixed:r:sha256) ...
  const file = path.join(work, `narpush-ca-${salt}`);
  await writeFile(file, `content-addressed ${salt}\n`);
  const added = (await nix('nix-store', ['--add', file])).toString().trim();
  // ... and a derivation (text:sha256, with references to other .drv files).
  const drv = (await nix('nix-store', ['--query', '--deriver', f.refs])).toString().trim();
  paths = [f.leaf, f.tree, f.refs, added, drv];
});

async function copyTo(compression: string): Promise<string> {
  const cache = await tempDir(`copy-${compression}`);
  const [outputs, drvs] = [paths.filter((p) => !p.endsWith('.drv')), paths.filter((p) => p.endsWith('.drv'))];
  await nix('nix', ['copy', '--to', `file://${cache}?compression=${compression}`, ...outputs]);
  await nix('nix', ['copy', '--derivation', '--to', `file://${cache}?compression=${compression}`, ...drvs]);
  return cache;
}

/** Assert that narpush's reading of a narinfo is Nix's reading of it. */
function sameAsNix(info: NarInfo, nixInfo: NixPathInfo, what: string): void {
  assert.equal(info.storePath.path, nixInfo.path, what);
  assert.equal(formatHash(info.narHash, 'sri'), nixInfo.narHash, what);
  assert.equal(info.narSize, nixInfo.narSize, what);
  assert.deepEqual(info.references.map((r) => r.path), nixInfo.references, what);
  assert.equal(info.deriver?.path, nixInfo.deriver, what);
  assert.deepEqual(info.sigs, nixInfo.signatures ?? [], what);
  assert.equal(info.ca, nixInfo.ca, what);
  assert.equal(info.url, nixInfo.url, what);
  assert.equal(info.fileHash && formatHash(info.fileHash, 'sri'), nixInfo.downloadHash, what);
  // Nix 2.8 leaves out a zero FileSize.
  assert.equal(info.fileSize || undefined, nixInfo.downloadSize, what);
}

for (const compression of ['none', 'xz']) {
  test(`narinfos written by nix copy (compression=${compression}) parse as Nix reads them and format back byte for byte`, async () => {
    const cache = await copyTo(compression);
    const names = (await readdir(cache)).filter((n) => n.endsWith('.narinfo'));
    const texts = await Promise.all(names.map((n) => readFile(path.join(cache, n), 'utf8')));
    const infos = texts.map((t, i) => parseNarInfo(t, '/nix/store', names[i]));
    const nixInfos = await pathInfo(infos.map((i) => i.storePath.path), `file://${cache}`);
    for (const [i, text] of texts.entries()) {
      const info = infos[i]!;
      assert.equal(formatNarInfo(info), text, names[i]);
      sameAsNix(info, nixInfos.find((n) => n.path === info.storePath.path)!, names[i]!);
      assert.equal(info.compression, compression);
    }
    // Every case the tests are meant to cover did occur (a fixture change must not silently drop one).
    const all = texts.join('');
    for (const p of paths) assert.ok(infos.some((i) => i.storePath.path === p), `${p} was copied`);
    assert.match(all, /^References: \n/m, 'a narinfo without references');
    assert.match(all, /^References: \S+ \S+/m, 'a narinfo with several references');
    assert.ok(infos.some((i) => i.references.some((r) => r.equals(i.storePath))), 'a self-reference');
    assert.match(all, /^Deriver: \S+\.drv\n/m);
    assert.match(all, /^Sig: narinfo-test-/m);
    assert.match(all, /^CA: fixed:r:sha256:/m);
    assert.match(all, /^CA: text:sha256:.*\n/m);
    assert.ok(texts.some((t) => /^References: \S/m.test(t) && /^CA: text:/m.test(t)), 'a text CA with references');
  });
}

test("narpush accepts exactly the narinfo variants Nix accepts, and reads them as Nix does", async () => {
  const cache = await copyTo('none');
  const refs = paths[2]!;
  const hashPart = path.basename(refs).slice(0, 32);
  const base = await readFile(path.join(cache, `${hashPart}.narinfo`), 'utf8');
  const info = parseNarInfo(base);
  const line = (key: string, value: string | null): string =>
    base.split('\n').slice(0, -1).flatMap((l) => (l.startsWith(`${key}: `) ? (value === null ? [] : [`${key}: ${value}`]) : [l])).join('\n') + '\n';
  const firstRef = info.references.find((r) => !r.equals(info.storePath))!.baseName;

  const cases: [string, string, boolean][] = [
    ['as written', base, true],
    ['unknown key', base + 'System: x86_64-linux\n', true],
    ['no Compression (bzip2)', line('Compression', null), true],
    ['empty Compression (bzip2)', line('Compression', ''), true],
    ['no FileHash', line('FileHash', null), true],
    ['no FileSize', line('FileSize', null), true],
    ['NarSize with +', line('NarSize', `+${info.narSize}`), true],
    ['NarSize with leading zeros', line('NarSize', `00${info.narSize}`), true],
    ['base16 NarHash', line('NarHash', formatHash(info.narHash, 'base16')), true],
    ['base64 NarHash', line('NarHash', formatHash(info.narHash, 'base64')), true],
    ['SRI NarHash', line('NarHash', formatHash(info.narHash, 'sri')), true],
    ['SRI FileHash', line('FileHash', formatHash(info.fileHash!, 'sri')), true],
    ['unknown-deriver', line('Deriver', 'unknown-deriver'), true],
    ['extra spaces in References', line('References', `  ${info.references.map((r) => r.baseName).join('  ')} `), true],
    ['empty CA', base + 'CA: \n', true],
    ['URL twice', base + 'URL: nar/elsewhere.nar\n', true],
    ['Sig twice', base + base.split('\n').filter((l) => l.startsWith('Sig: ')).join('\n') + '\n', true],
    ['no final newline', base.slice(0, -1), false],
    ['CRLF', base.replace(/\n/g, '\r\n'), false],
    ['blank line', base.replace('\nURL', '\n\nURL'), false],
    ['blank line at the end', base + '\n', false],
    ['no URL', line('URL', null), false],
    ['no StorePath', line('StorePath', null), false],
    ['no NarHash', line('NarHash', null), false],
    ['no NarSize', line('NarSize', null), false],
    ['NarSize 0', line('NarSize', '0'), false],
    ['NarSize not a number', line('NarSize', '12a'), false],
    ['NarSize with a trailing space', line('NarSize', `${info.narSize} `), false],
    ['FileSize empty', line('FileSize', ''), false],
    ['NarHash without algorithm', line('NarHash', formatHash(info.narHash).slice('sha256:'.length)), false],
    ['NarHash too short', line('NarHash', formatHash(info.narHash).slice(0, -1)), false],
    ['two References lines', base + `References: ${firstRef}\n`, false],
    ['bad reference', line('References', 'foo'), false],
    ['bad Deriver', line('Deriver', 'foo'), false],
    ['StorePath in another store', line('StorePath', info.storePath.path.replace('/nix/store', '/gnu/store')), false],
    ['bad CA', base + 'CA: foo\n', false],
    ['two CA lines', base + 'CA: fixed:sha256:' + formatHash(info.narHash).slice(7) + '\n' + 'CA: fixed:sha256:' + formatHash(info.narHash).slice(7) + '\n', false],
  ];

  const nar = path.join(cache, info.url);
  const disagreements: string[] = [];
  await Promise.all(
    cases.map(async ([what, text, expected], i) => {
      const dir = path.join(await tempDir('variant'), String(i));
      await mkdir(path.join(dir, 'nar'), { recursive: true });
      await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
      await copyFile(nar, path.join(dir, info.url));
      await writeFile(path.join(dir, `${hashPart}.narinfo`), text);
      const r = await nixRun('nix', ['path-info', '--json', '--sigs', '--store', `file://${dir}`, ...NO_NARINFO_CACHE, refs]);
      const nixInfo = r.code === 0 ? (JSON.parse(r.stdout.toString()) as NixPathInfo[])[0] : undefined;
      const nixAccepts = nixInfo !== undefined && nixInfo.valid !== false;
      let ours: NarInfo | undefined;
      try {
        ours = parseNarInfo(text);
      } catch (e) {
        assert.equal((e as { code?: string }).code, 'BAD_NARINFO', what);
      }
      if (nixAccepts !== expected) disagreements.push(`${what}: Nix ${nixAccepts ? 'accepts' : 'rejects'} it (${r.stderr.trim()})`);
      if ((ours !== undefined) !== expected) disagreements.push(`${what}: narpush ${ours ? 'accepts' : 'rejects'} it`);
      if (ours && nixInfo && nixAccepts) sameAsNix(ours, nixInfo, what);
    }),
  );
  assert.deepEqual(disagreements, []);
});
