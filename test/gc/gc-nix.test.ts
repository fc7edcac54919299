// `narpush gc` end to end with real Nix, on file:// and on s3rver: closure
// semantics (old closure collected; a recent path whose reference is old kept
// whole; pins kept; a NAR shared by an old and a recent narinfo kept), logs
// and listings, stale temporary files, --dry-run, then Nix substitutes every
// kept closure back with signatures required. Time is set, not waited for:
// objects are aged by setting their files' mtime (s3rver reports a file's
// mtime as LastModified).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { CacheBackend } from '../../src/cache/backend.js';
import { FileBackend } from '../../src/cache/file-backend.js';
import { openS3Backend } from '../../src/s3/s3-backend.js';
import type { S3Config } from '../../src/s3/s3-config.js';
import { parseCacheUrl } from '../../src/cli/cache-url.js';
import { nix, nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, NARPUSH_BIN, generateKeyPair, narpush, run, runOk } from '../helpers/run.js';
import { formatGcMarker } from '../../src/cache/gc-fence.js';
import { S3RVER_CREDENTIALS, S3RVER_ENV, startS3rver, type S3rverHandle } from '../helpers/s3rver.js';
import { backendInvariantViolations } from '../helpers/cache-invariant.js';
import { nixClosure } from '../helpers/cache-check.js';

let work: string;
let secretKey: string;
let publicKey: string;
let s3: S3rverHandle;
const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });
const DAY = 86_400_000;

before(async () => {
  await requireNix();
  work = await mkdtemp(path.join(tmpdir(), 'narpush-gc-'));
  ({ secretKeyFile: secretKey, publicKey } = await generateKeyPair(work, 'narpush-gc-test-1'));
  s3 = await startS3rver();
});

after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

const ATTRS = ['a', 'a0', 'b', 'x', 'p', 'p0', 'sOld', 'sYoung'] as const;
type Paths = Record<(typeof ATTRS)[number], string>;

async function buildPaths(): Promise<Paths> {
  const r = await runOk('nix-build', [path.join(FIXTURES, 'gc-closures.nix'), '--no-out-link', '--argstr', 'salt', randomUUID(), ...ATTRS.flatMap((a) => ['-A', a])], {
    env: nixEnv(),
  });
  const outs = r.stdout.toString('utf8').trim().split('\n');
  assert.equal(outs.length, ATTRS.length);
  return Object.fromEntries(ATTRS.map((a, i) => [a, outs[i]!])) as Paths;
}

const hashOf = (p: string): string => path.basename(p).slice(0, 32);

interface Target {
  readonly url: string;
  readonly substituter: string;
  readonly backend: () => Promise<CacheBackend>;
  /** The file that holds `key` (its mtime is the object's last-modified time). */
  readonly fileOf: (key: string) => string;
}

async function keys(backend: CacheBackend): Promise<string[]> {
  const out: string[] = [];
  for await (const o of backend.list('')) out.push(o.key);
  return out.sort();
}

async function upload(t: Target, ...paths: string[]): Promise<void> {
  const r = await narpush(['upload-path', '--to', t.url, '--secret-key-file', secretKey, ...paths], { env: env() });
  assert.equal(r.code, 0, r.stderr);
}

async function age(t: Target, backend: CacheBackend, days: number, match: (key: string) => boolean): Promise<void> {
  const when = new Date(Date.now() - days * DAY);
  for (const k of await keys(backend)) if (match(k)) await utimes(t.fileOf(k), when, when);
}

async function gc(t: Target, ...args: string[]): Promise<Record<string, unknown>> {
  const r = await narpush(['gc', '--cache', t.url, '--json', ...args], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString('utf8')) as Record<string, unknown>;
}

async function substituteBack(t: Target, top: string): Promise<void> {
  const closure = await nixClosure([top]);
  await nix('nix-store', ['--delete', ...closure]);
  const r = await run(
    'nix-store',
    ['-r', top, '--option', 'substituters', t.substituter, '--option', 'trusted-public-keys', publicKey, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution of ${top} failed: ${r.stderr}`);
}

async function closureSemantics(t: Target): Promise<void> {
  const P = await buildPaths();
  const backend = await t.backend();
  try {
    const derivers = new Map<string, string>();
    for (const [k, v] of Object.entries(P)) {
      const d = (await nix('nix-store', ['-qd', v])).toString().trim();
      derivers.set(k, path.basename(d));
    }
    // Months ago: a, x, p, sOld (and logs and listings of a and b).
    await upload(t, P.a, P.x, P.p, P.sOld);
    await backend.putBytes(`log/${derivers.get('a')}`, Buffer.from('a log'), 'text/plain');
    await backend.putBytes(`log/${derivers.get('b')}`, Buffer.from('b log'), 'text/plain');
    // Listings by hand (verify below reads them: a valid, if empty, one).
    const ls = Buffer.from('{"version":1,"root":{"type":"directory","entries":{}}}');
    await backend.putBytes(`${hashOf(P.a)}.ls`, ls, 'application/json');
    await backend.putBytes(`${hashOf(P.b)}.ls`, ls, 'application/json');
    await age(t, backend, 90, () => true);
    // Now: b, whose reference x is skipped (the cache has it) and stays old; sYoung, sharing sOld's NAR.
    await upload(t, P.b, P.sYoung);
    await age(t, backend, 90, (k) => k === `${hashOf(P.x)}.narinfo`);
    await age(t, backend, 90, (k) => k.startsWith('log/') || k.endsWith('.ls'));
    const before = await keys(backend);
    const sharedNar = (await backend.get(`${hashOf(P.sOld)}.narinfo`))!.toString().match(/^URL: (.*)$/m)![1]!;
    assert.equal((await backend.get(`${hashOf(P.sYoung)}.narinfo`))!.toString().match(/^URL: (.*)$/m)![1], sharedNar, 'one NAR for both');

    const dry = await gc(t, '--keep-since', '30d', '--keep', P.p, '--dry-run');
    assert.deepEqual(await keys(backend), before, '--dry-run deletes nothing');
    assert.equal(dry.dryRun, true);
    assert.equal(dry.narinfos, 3, 'would delete a, a0, sOld');

    // The pin again, from a file this time (comments and blank lines allowed).
    const pins = path.join(work, `pins-${randomUUID()}`);
    await writeFile(pins, `# release\n\n${P.p}\n`);
    const report = await gc(t, '--keep-since', '30d', '--keep-file', pins);
    const after = await keys(backend);
    const has = (k: string): boolean => after.includes(k);
    for (const gone of [P.a, P.a0, P.sOld]) assert.ok(!has(`${hashOf(gone)}.narinfo`), `${gone} collected`);
    for (const kept of [P.b, P.x, P.p, P.p0, P.sYoung]) assert.ok(has(`${hashOf(kept)}.narinfo`), `${kept} kept`);
    assert.ok(has(sharedNar), 'the NAR sYoung shares with sOld stays');
    assert.ok(!has(`log/${derivers.get('a')}`) && has(`log/${derivers.get('b')}`), 'the log of a goes, that of b stays');
    assert.ok(!has(`${hashOf(P.a)}.ls`) && has(`${hashOf(P.b)}.ls`), 'the listing of a goes, that of b stays');
    assert.equal(report.narinfos, 3);
    assert.equal(report.nars, 2, "a's and a0's NARs");
    assert.equal((report.freed as { objects: number }).objects, 3 + 2 + 1 + 1);
    assert.ok(after.includes('nix-cache-info'));
    assert.deepEqual(await backendInvariantViolations(backend), []);
    // What is left is a sound cache by narpush verify's own reading: signatures, NARs, references.
    const verified = await narpush(['verify', '--store', t.url, '--trusted-public-key', publicKey, '--json'], { env: env() });
    assert.equal(verified.code, 0, `${verified.stdout.toString()}${verified.stderr}`);
    const v = JSON.parse(verified.stdout.toString('utf8')) as { ok: boolean; checked: number; defects: unknown[] };
    assert.equal(v.ok, true);
    assert.equal(v.checked, 5, 'b, x, p, p0, sYoung');
    for (const top of [P.b, P.p, P.sYoung]) await substituteBack(t, top);
  } finally {
    await backend.close();
  }
}

test('file://: closure semantics, pins, shared NARs, logs, listings and --dry-run; Nix substitutes what was kept', async () => {
  const dir = path.join(work, 'file-cache');
  await closureSemantics({
    url: `file://${dir}`,
    substituter: `file://${dir}`,
    backend: async () => new FileBackend(dir),
    fileOf: (k) => path.join(dir, k),
  });
});

test('s3: closure semantics, pins, shared NARs, logs, listings and --dry-run; Nix substitutes what was kept', async () => {
  await closureSemantics({
    url: s3.url,
    substituter: s3.httpUrl,
    backend: () => openS3Backend(parseCacheUrl(s3.url) as S3Config, { credentials: S3RVER_CREDENTIALS }),
    fileOf: (k) => path.join(s3.dir, s3.bucket, path.dirname(k), `${path.basename(k)}._S3rver_object`),
  });
});

test('file://: temporary files older than --grace are removed, younger ones stay', async () => {
  const dir = path.join(work, 'file-temps');
  const P = await buildPaths();
  const t = { url: `file://${dir}` };
  const r = await narpush(['upload-path', '--to', t.url, P.x], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  const old = path.join(dir, 'nar', '.abc.nar.xz.narpush-0123456789ab-0.tmp');
  const young = path.join(dir, 'nar', '.def.nar.xz.narpush-0123456789ab-1.tmp');
  await writeFile(old, 'partial');
  await writeFile(young, 'partial');
  const when = new Date(Date.now() - 2 * 3600_000);
  await utimes(old, when, when);
  const g = await narpush(['gc', '--cache', t.url, '--keep-since', '30d', '--json'], { env: env() });
  assert.equal(g.code, 0, g.stderr);
  assert.equal((JSON.parse(g.stdout.toString('utf8')) as { abortedUploads: number }).abortedUploads, 1);
  assert.equal(await readFile(old).then(() => true, () => false), false, 'the old one is gone');
  assert.equal(await readFile(young).then(() => true, () => false), true, 'the young one stays');
});

test('upload-path held back by a running collection waits for it to end, then uploads; the cache stays sound', async () => {
  const dir = path.join(work, 'held-back');
  const P = await buildPaths();
  const marker = path.join(dir, 'narpush-gc', 'running.json');
  await mkdir(path.dirname(marker), { recursive: true });
  await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 1\n');
  await writeFile(marker, formatGcMarker({ started: new Date(), deadline: new Date(Date.now() + DAY) }));
  const child = spawn(process.execPath, [NARPUSH_BIN, 'upload-path', '--to', `file://${dir}`, '--secret-key-file', secretKey, P.a], {
    env: env(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const waiting = new Promise<void>((resolve) =>
    child.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
      if (/waiting for it to finish/.test(stderr)) resolve();
    }),
  );
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await Promise.race([waiting, exited]);
  assert.match(stderr, /narpush gc is running on file:\/\/.*; waiting for it to finish/);
  const backend = new FileBackend(dir);
  assert.equal(await backend.exists(`${hashOf(P.a)}.narinfo`), false, 'held back while the collection runs');
  await writeFile(marker, formatGcMarker({ started: new Date(), deadline: new Date(Date.now() + DAY), ended: new Date() }));
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /uploaded 2 paths/);
  for (const q of [P.a, P.a0]) assert.ok(await backend.exists(`${hashOf(q)}.narinfo`), q);
  assert.deepEqual(await backendInvariantViolations(backend), []);
  await backend.close();
});

test('bad input: one line, non-zero exit, nothing deleted', async () => {
  const dir = path.join(work, 'bad-input');
  const P = await buildPaths();
  const up = await narpush(['upload-path', '--to', `file://${dir}`, P.a], { env: env() });
  assert.equal(up.code, 0, up.stderr);
  const backend = new FileBackend(dir);
  const t: Target = { url: `file://${dir}`, substituter: '', backend: async () => backend, fileOf: (k) => path.join(dir, k) };
  await age(t, backend, 90, () => true);
  const before = await keys(backend);
  const notACache = await mkdtemp(path.join(work, 'not-a-cache-'));
  await writeFile(path.join(notACache, 'old.narinfo'), 'x');
  const cases: [string[], RegExp][] = [
    [['--cache', `file://${dir}`, '--keep-since', '30 days'], /--keep-since takes a duration/],
    [['--cache', `file://${dir}`, '--keep-since', '30d', '--grace', 'soon'], /--grace takes a duration/],
    [['--cache', `file://${dir}`, '--keep-since', '30d', '--keep', '/tmp/not-a-store-path'], /is not a store path/],
    [['--cache', `file://${dir}`, '--keep-since', '30d', '--keep-file', path.join(work, 'missing')], /--keep-file .*ENOENT/],
    [['--cache', `file://${notACache}`, '--keep-since', '30d'], /is not a binary cache/],
    [['--cache', 'http://example.org/cache', '--keep-since', '30d'], /./],
    [['--cache', `s3://no-such-bucket?endpoint=${s3.endpoint}&region=us-east-1`, '--keep-since', '30d'], /no-such-bucket/],
  ];
  for (const [args, why] of cases) {
    const r = await narpush(['gc', ...args], { env: env() });
    const err = r.stderr;
    assert.notEqual(r.code, 0, `${args.join(' ')} fails`);
    assert.match(err, why);
    assert.equal(err.trim().split('\n').length, 1, `one line: ${err}`);
    assert.doesNotMatch(err, /\n\s+at /);
  }
  assert.deepEqual(await keys(backend), before, 'nothing deleted');
  assert.deepEqual(await readFile(path.join(notACache, 'old.narinfo'), 'utf8'), 'x');
});
