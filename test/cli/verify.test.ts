// `narpush verify` end to end: caches written by narpush and by `nix copy`
// (file:// and s3rver) verify clean; then one defect at a time is made by hand
// and must be reported against the right path, and nothing else. Also: the
// --json shape, usage errors, and that verify never writes to the cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { compressBuffer } from '../../src/cache/compression.js';
import { FileBackend } from '../../src/cache/file-backend.js';
import { openCacheBackend } from '../../src/cli/open-backend.js';
import { parseCacheUrl } from '../../src/cli/cache-url.js';
import { parseNarInfo, type NarInfo } from '../../src/narinfo/narinfo.js';
import { nix, nixBuildFile, nixEnv } from '../helpers/nix.js';
import { nixClosure } from '../helpers/cache-check.js';
import { narpush, type RunResult } from '../helpers/run.js';
import { startS3rver, S3RVER_CREDENTIALS, S3RVER_ENV, type S3rverHandle } from '../helpers/s3rver.js';

let work: string;
let secretKey: string;
let publicKey: string;
let otherPublicKey: string;
let closure: string[];
/** The clean cache written by narpush (xz), copied for each defect. */
let clean: string;
let s3: S3rverHandle;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV });
const servers: S3rverHandle[] = [];

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'narpush-verify-'));
  secretKey = path.join(work, 'secret.key');
  for (const [name, pub] of [['narpush-test-1', 'public.key'], ['other-1', 'other.key']] as const) {
    const r = await narpush(['generate-key', name, path.join(work, `${name}.secret`), path.join(work, pub)]);
    assert.equal(r.code, 0, r.stderr);
  }
  await cp(path.join(work, 'narpush-test-1.secret'), secretKey);
  publicKey = (await readFile(path.join(work, 'public.key'), 'utf8')).trim();
  otherPublicKey = (await readFile(path.join(work, 'other.key'), 'utf8')).trim();
  const [top] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', randomUUID(), '--arg', 'bigBytes', String(1 << 20)]);
  closure = await nixClosure([top!]);
  assert.equal(closure.length, 4);
  clean = path.join(work, 'clean');
  const r = await narpush(['upload-path', '--to', `file://${clean}`, '--secret-key-file', secretKey, top!], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  s3 = await startS3rver();
});

after(async () => {
  await Promise.all([s3, ...servers].map((s) => s?.stop()));
  await rm(work, { recursive: true, force: true });
});

const nameOf = (p: string): string => p.replace(/^\/nix\/store\/[a-z0-9]{32}-/, '');
const pathNamed = (name: string): string => closure.find((p) => nameOf(p) === name)!;
const hashOf = (p: string): string => path.basename(p).slice(0, 32);

async function verify(url: string, args: readonly string[] = []): Promise<RunResult> {
  return narpush(['verify', '--store', url, ...args], { env: env() });
}

interface JsonDefect {
  path: string;
  key: string;
  kind: string;
  message: string;
}

async function verifyJson(url: string, args: readonly string[] = []): Promise<{ r: RunResult; report: { ok: boolean; checked: number; defects: JsonDefect[] } }> {
  const r = await verify(url, ['--json', ...args]);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return { r, report: JSON.parse(r.stdout.toString()) };
}

/** A fresh copy of the clean cache, and its narinfos by path name. */
async function copyOfClean(): Promise<{ dir: string; infos: Map<string, NarInfo> }> {
  const dir = path.join(work, `case-${randomUUID()}`);
  await cp(clean, dir, { recursive: true });
  const infos = new Map<string, NarInfo>();
  for (const p of closure) {
    const key = `${hashOf(p)}.narinfo`;
    infos.set(nameOf(p), parseNarInfo(await readFile(path.join(dir, key), 'utf8'), '/nix/store', key));
  }
  return { dir, infos };
}

/** A new s3rver bucket holding exactly the objects of the file:// cache `dir`. */
/**
 * A copy of a file:// cache in a fresh s3rver bucket. With `encode`, the
 * narinfos and listings are stored as Nix's S3 store stores them with
 * narinfo-compression=xz and ls-compression=br: compressed, with that
 * Content-Encoding.
 */
async function mirrorToS3(dir: string, encode = false): Promise<string> {
  const server = await startS3rver({ bucket: 'mirror' });
  servers.push(server);
  const from = new FileBackend(dir);
  const to = await openCacheBackend(parseCacheUrl(server.url), { s3: { credentials: S3RVER_CREDENTIALS } });
  try {
    for await (const o of from.list('')) {
      const body = await readFile(path.join(dir, o.key));
      if (encode && o.key.endsWith('.narinfo')) {
        await to.putBytes(o.key, await compressBuffer({ method: 'xz' }, body), 'text/x-nix-narinfo', { contentEncoding: 'xz' });
      } else if (encode && o.key.endsWith('.ls')) {
        await to.putBytes(o.key, brotliCompressSync(body), 'application/json', { contentEncoding: 'br' });
      } else {
        await to.putBytes(o.key, body, 'application/octet-stream');
      }
    }
  } finally {
    await Promise.all([from.close(), to.close()]);
  }
  return server.url;
}

/** Every file of a cache directory with a hash of its bytes and its mtime. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of (await readdir(dir, { recursive: true, withFileTypes: true })).filter((d) => d.isFile())) {
    const p = path.join(f.parentPath ?? (f as unknown as { path: string }).path, f.name);
    out.push(`${p} ${createHash('sha256').update(await readFile(p)).digest('hex')} ${(await stat(p)).mtimeMs}`);
  }
  return out.sort();
}

test('caches narpush writes (xz, zstd, none; file:// and s3) verify clean, and verify changes nothing', async () => {
  const top = closure.find((p) => nameOf(p) === 'np-top')!;
  for (const compression of ['xz', 'zstd', 'none']) {
    const dir = path.join(work, `clean-${compression}`);
    const up = await narpush(['upload-path', '--to', `file://${dir}`, '--compression', compression, '--secret-key-file', secretKey, top], { env: env() });
    assert.equal(up.code, 0, up.stderr);
    const before = await snapshot(dir);
    const r = await verify(`file://${dir}`, ['--trusted-public-key', publicKey]);
    assert.equal(r.code, 0, `${compression}: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout.toString(), /^checked 4 paths \(.*\): no defects$/m);
    assert.deepEqual(await snapshot(dir), before, 'the cache is unchanged, mtimes included');
  }
  const up = await narpush(['upload-path', '--to', s3.url, '--compression', 'zstd', '--secret-key-file', secretKey, top], { env: env() });
  assert.equal(up.code, 0, up.stderr);
  const from = s3.requests.length;
  const r = await verify(s3.url, ['--trusted-public-key', publicKey]);
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout.toString(), /checked 4 paths .*: no defects/);
  const writes = s3.requests.slice(from).filter((q) => !q.startsWith('GET ') && !q.startsWith('HEAD '));
  assert.deepEqual(writes, [], 'verify sent only GET and HEAD requests');
  assert.ok(s3.requests.slice(from).some((q) => /list-type=2/.test(q)), 'the bucket was listed');
});

test('a cache written by nix copy (signed, with listings) verifies clean on file:// and s3', async () => {
  const dir = path.join(work, 'nix-copy');
  await nix('nix', ['copy', '--to', `file://${dir}?secret-key=${secretKey}&write-nar-listing=true`, ...closure]);
  assert.ok((await readdir(dir)).some((f) => f.endsWith('.ls')), 'nix wrote listings');
  // The last: narinfos and listings compressed with a Content-Encoding, as Nix's S3 store writes them when asked.
  for (const url of [`file://${dir}`, await mirrorToS3(dir), await mirrorToS3(dir, true)]) {
    const r = await verify(url, ['--trusted-public-keys', `${otherPublicKey} ${publicKey}`]);
    assert.equal(r.code, 0, `${url}: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout.toString(), /checked 4 paths .*: no defects/);
  }
  // A listing that is not one is reported against its path.
  const ls = (await readdir(dir)).find((f) => f.endsWith('.ls'))!;
  await writeFile(path.join(dir, ls), '{"version":1,');
  const { r, report } = await verifyJson(`file://${dir}`);
  assert.equal(r.code, 1);
  assert.deepEqual(report.defects.map((d) => [hashOf(d.path), d.kind, d.key]), [[ls.slice(0, 32), 'bad-listing', ls]]);
  // Path by path too, where no listing of the cache says which .ls files exist.
  const byPath = await verifyJson(`file://${dir}`, closure);
  assert.equal(byPath.r.code, 1);
  assert.deepEqual(byPath.report.defects.map((d) => [hashOf(d.path), d.kind, d.key]), [[ls.slice(0, 32), 'bad-listing', ls]]);
});

interface Case {
  readonly name: string;
  /** Make the defect in `dir`; return what verify must say: [path name or key, kind] pairs. */
  make(dir: string, infos: Map<string, NarInfo>): Promise<[string, string][]>;
  readonly args?: readonly string[];
}

const narFile = (dir: string, info: NarInfo): string => path.join(dir, info.url);
const narinfoFile = (dir: string, name: string): string => path.join(dir, `${hashOf(pathNamed(name))}.narinfo`);

async function editNarinfo(dir: string, name: string, edit: (text: string) => string): Promise<void> {
  const f = narinfoFile(dir, name);
  await writeFile(f, edit(await readFile(f, 'utf8')));
}

const CASES: Case[] = [
  {
    name: 'a flipped byte in a NAR',
    async make(dir, infos) {
      const f = narFile(dir, infos.get('np-big')!);
      const b = await readFile(f);
      b[b.length >> 1] = b[b.length >> 1]! ^ 0x01;
      await writeFile(f, b);
      return [['np-big', 'file-hash'], ['np-big', 'bad-compression']];
    },
  },
  {
    name: 'a truncated NAR',
    async make(dir, infos) {
      const f = narFile(dir, infos.get('np-selfref')!);
      await truncate(f, (await stat(f)).size >> 1);
      return [['np-selfref', 'file-size'], ['np-selfref', 'file-hash'], ['np-selfref', 'bad-compression']];
    },
  },
  {
    name: 'a wrong FileSize',
    async make(dir, infos) {
      const size = infos.get('np-base')!.fileSize!;
      await editNarinfo(dir, 'np-base', (t) => t.replace(`FileSize: ${size}\n`, `FileSize: ${size + 1}\n`));
      return [['np-base', 'file-size']];
    },
  },
  {
    name: 'a wrong NarSize (which also breaks the signature)',
    async make(dir, infos) {
      const size = infos.get('np-top')!.narSize;
      await editNarinfo(dir, 'np-top', (t) => t.replace(`NarSize: ${size}\n`, `NarSize: ${size + 8}\n`));
      return [['np-top', 'bad-signature'], ['np-top', 'nar-size']];
    },
  },
  {
    name: 'a forged signature',
    async make(dir) {
      await editNarinfo(dir, 'np-big', (t) => t.replace(/^Sig: (narpush-test-1:)(.)/m, (_, k: string, c: string) => `Sig: ${k}${c === 'A' ? 'B' : 'A'}`));
      return [['np-big', 'bad-signature']];
    },
  },
  {
    name: 'signatures by a key that is not trusted',
    async make() {
      return closure.map((p): [string, string] => [nameOf(p), 'bad-signature']);
    },
    args: ['--trusted-public-key', 'placeholder-other'],
  },
  {
    name: 'a missing NAR',
    async make(dir, infos) {
      await rm(narFile(dir, infos.get('np-big')!));
      return [['np-big', 'missing-nar']];
    },
  },
  {
    name: 'a reference without its narinfo',
    async make(dir) {
      await rm(narinfoFile(dir, 'np-base'));
      return [['np-big', 'missing-reference'], ['np-selfref', 'missing-reference'], ['np-top', 'missing-reference']];
    },
  },
  {
    name: 'a garbage narinfo',
    async make(dir) {
      await writeFile(narinfoFile(dir, 'np-selfref'), 'this is not a narinfo\n');
      return [[`${hashOf(pathNamed('np-selfref'))}.narinfo`, 'bad-narinfo']];
    },
  },
];

for (const c of CASES) {
  test(`verify reports ${c.name} against the right path, and nothing else (file:// and s3)`, async () => {
    const { dir, infos } = await copyOfClean();
    const expected = (await c.make(dir, infos)).map(([who, kind]) => [who.endsWith('.narinfo') ? who : pathNamed(who), kind]).sort();
    const args = (c.args ?? ['--trusted-public-key', publicKey]).map((a) => (a === 'placeholder-other' ? otherPublicKey : a));
    for (const url of [`file://${dir}`, await mirrorToS3(dir)]) {
      const { r, report } = await verifyJson(url, args);
      assert.equal(r.code, 1, `${url}: ${r.stderr}`);
      assert.equal(report.ok, false);
      assert.deepEqual(report.defects.map((d) => [d.path, d.kind]).sort(), expected, `${url}: ${JSON.stringify(report.defects, null, 1)}`);
      // The same defects as lines, one each, naming the path.
      const human = await verify(url, args);
      assert.equal(human.code, 1);
      const lines = human.stdout.toString().trim().split('\n');
      assert.equal(lines.length, expected.length + 1, human.stdout.toString());
      for (const [who] of expected) assert.ok(lines.some((l) => l.startsWith(`${who}: `)), `a line for ${who}`);
      assert.match(lines.at(-1)!, new RegExp(`^checked \\d paths .*: ${expected.length} defects? in \\d paths?$`));
    }
  });
}

test('with PATHs, only those are checked, and a missing narinfo is a defect', async () => {
  const { dir } = await copyOfClean();
  await rm(narinfoFile(dir, 'np-base'));
  const { r, report } = await verifyJson(`file://${dir}`, [pathNamed('np-top'), pathNamed('np-base')]);
  assert.equal(r.code, 1);
  assert.equal(report.checked, 2);
  assert.deepEqual(
    report.defects.map((d) => [d.path, d.kind]).sort(),
    [[pathNamed('np-base'), 'missing-narinfo'], [pathNamed('np-top'), 'missing-reference']].sort(),
  );
  const ok = await verify(`file://${dir}`, [pathNamed('np-big')]);
  assert.equal(ok.code, 1, 'big references base, whose narinfo is gone');
  const inClean = await verify(`file://${clean}`, [pathNamed('np-big')]);
  assert.equal(inClean.code, 0, inClean.stdout.toString());
  assert.match(inClean.stdout.toString(), /^checked 1 path /m);
});

test('--json: the report has a stable shape', async () => {
  const { report, r } = await verifyJson(`file://${clean}`, ['--trusted-public-key', publicKey]);
  assert.equal(r.code, 0);
  assert.deepEqual(Object.keys(report).sort(), ['cache', 'checked', 'defects', 'fileBytes', 'narBytes', 'ok', 'signaturesChecked', 'unchecked']);
  const full = report as unknown as Record<string, unknown>;
  assert.equal(full.cache, `file://${clean}`);
  assert.equal(full.ok, true);
  assert.equal(full.checked, 4);
  assert.equal(full.signaturesChecked, true);
  assert.ok(typeof full.narBytes === 'number' && full.narBytes > 1 << 20);
  assert.ok(typeof full.fileBytes === 'number' && full.fileBytes > 0);
  assert.deepEqual(full.defects, []);
  assert.deepEqual(full.unchecked, []);
  assert.equal(r.stderr, '', 'nothing on stderr when not a terminal');
});

test('--cache is accepted for --store; usage errors exit 2 with one line; a missing cache exits 1 with one line', async () => {
  const alias = await narpush(['verify', '--cache', `file://${clean}`], { env: env() });
  assert.equal(alias.code, 0, alias.stderr);
  const usage: [string[], RegExp][] = [
    [['verify'], /--store/],
    [['verify', '--store', `file://${clean}`, '--cache', `file://${clean}`], /not both/],
    [['verify', '--store', 'ftp://example.org/cache'], /ftp/],
    [['verify', '--store', `file://${clean}`, '--trusted-public-key', 'not-a-key'], /key/],
    [['verify', '--store', `file://${clean}`, '--jobs', '0'], /--jobs/],
    [['verify', '--store', `file://${clean}`, tmpdir()], /is not in the Nix store/],
  ];
  for (const [args, re] of usage) {
    const r = await narpush(args, { env: env() });
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, re);
  }
  for (const [url, re] of [
    [`s3://no-such-bucket-here?endpoint=${s3.endpoint}&region=us-east-1`, /bucket 'no-such-bucket-here' does not exist/],
    [`file://${path.join(work, 'no-such-dir')}`, /does not exist/],
  ] as const) {
    const r = await verify(url);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stdout.length, 0);
  }
});
