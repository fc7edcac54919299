// Upstream filtering end to end with real Nix: paths signed locally by a key
// named cache.nixos.org-1 (made here) and paths a file:// upstream serves are
// not uploaded to s3rver; the rest is, with References intact; Nix then
// substitutes the whole closure from the two caches together, signatures
// required. Also: --no-upstream, --dry-run, failing upstreams, bad flags.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildFile, nixEnv } from '../helpers/nix.js';
import { generateKeyPair, narpush, run } from '../helpers/run.js';
import { startS3rver, S3RVER_ENV, type S3rverHandle } from '../helpers/s3rver.js';
import { assertCacheHas, httpFetcher, nixClosure, nixPathInfos } from '../helpers/cache-check.js';

let work: string;
let ours: { secret: string; pub: string };
let upstreamKey: { secret: string; pub: string };
let s3: S3rverHandle;

const env = (): NodeJS.ProcessEnv => nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

async function key(name: string): Promise<{ secret: string; pub: string }> {
  const { secretKeyFile, publicKey } = await generateKeyPair(work, name);
  return { secret: secretKeyFile, pub: publicKey };
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'narpush-upstream-'));
  ours = await key('narpush-ours-1');
  // Not the real cache.nixos.org key: one with its name, so the default --upstream-key applies.
  upstreamKey = await key('cache.nixos.org-1');
  s3 = await startS3rver();
});

after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

/** top -> big, selfref, base; big -> base; selfref -> base (test/fixtures/upload-closure.nix), fresh. */
async function buildClosure(): Promise<{ top: string; byName: Map<string, string>; closure: string[] }> {
  const [top] = await nixBuildFile('upload-closure.nix', undefined, ['--argstr', 'salt', randomUUID(), '--arg', 'bigBytes', '4096']);
  const closure = await nixClosure([top!]);
  const byName = new Map(closure.map((p) => [/-np-([a-z]+)$/.exec(p)![1]!, p]));
  assert.deepEqual([...byName.keys()].sort(), ['base', 'big', 'selfref', 'top']);
  return { top: top!, byName, closure };
}

interface Report {
  uploaded: { path: string }[];
  skipped: string[];
  skippedUpstream: string[];
  wouldUpload?: string[];
  failed: unknown[];
}

async function upload(args: readonly string[]): Promise<{ report: Report; stderr: string }> {
  const r = await narpush(['upload-path', '--json', '--compression', 'none', ...args], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  return { report: JSON.parse(r.stdout.toString()) as Report, stderr: r.stderr };
}

/** The same without --json: the human summary on stderr. */
async function uploadHuman(args: readonly string[]): Promise<string> {
  const r = await narpush(['upload-path', '--compression', 'none', ...args], { env: env() });
  assert.equal(r.code, 0, r.stderr);
  return r.stderr;
}

const names = (paths: readonly string[]): string[] => paths.map((p) => /-np-([a-z]+)$/.exec(p)![1]!).sort();

test('signed by cache.nixos.org-1 or served by a file:// upstream: not uploaded; the rest is, and Nix substitutes the closure from both caches', async () => {
  const { top, byName, closure } = await buildClosure();
  // base: signed locally by the upstream key. big: in the upstream cache (with base, its reference).
  await nix('nix', ['store', 'sign', '--key-file', upstreamKey.secret, byName.get('base')!]);
  assert.ok((await nixPathInfos([byName.get('base')!])).get(byName.get('base')!)!.signatures?.some((s) => s.startsWith('cache.nixos.org-1:')));
  const up = path.join(work, `up-${randomUUID()}`);
  const seeded = await upload(['--to', `file://${up}`, '--secret-key-file', upstreamKey.secret, '--no-upstream', byName.get('big')!]);
  assert.deepEqual(names(seeded.report.uploaded.map((u) => u.path)), ['base', 'big'], '--no-upstream uploads the signed path too');

  const dry = await upload(['--to', s3.url, '--dry-run', '--upstream', `file://${up}`, top]);
  assert.deepEqual(names(dry.report.skippedUpstream), ['base', 'big']);
  assert.deepEqual(names(dry.report.wouldUpload!), ['selfref', 'top']);
  assert.match(await uploadHuman(['--to', s3.url, '--dry-run', '--upstream', `file://${up}`, top]), /would upload 2 paths .*, 0 already in the cache, 2 skipped: upstream/);

  const { report, stderr } = await upload(['--to', s3.url, '--secret-key-file', ours.secret, '--upstream', `file://${up}`, top]);
  assert.deepEqual(names(report.uploaded.map((u) => u.path)), ['selfref', 'top']);
  assert.deepEqual(names(report.skippedUpstream), ['base', 'big']);
  assert.deepEqual(report.skipped, []);
  assert.doesNotMatch(stderr, /warning/);
  for (const p of [byName.get('base')!, byName.get('big')!]) {
    const hashPart = path.basename(p).slice(0, 32);
    assert.equal((await fetch(`${s3.httpUrl}/${hashPart}.narinfo`)).status, 404, `${p} was not uploaded`);
  }
  // References intact: top's narinfo still names big and base, which only the upstream holds.
  await assertCacheHas(httpFetcher(s3.httpUrl), [top, byName.get('selfref')!], ours.pub);

  // A second run: ours has two, the upstream the other two; nothing to do.
  const again = await upload(['--to', s3.url, '--upstream', `file://${up}`, top]);
  assert.deepEqual(again.report.uploaded, []);
  assert.deepEqual(names(again.report.skipped), ['selfref', 'top']);
  assert.deepEqual(names(again.report.skippedUpstream), ['base', 'big']);

  // Nix, with both caches and both keys, signatures required, gets the whole closure back.
  await nix('nix-store', ['--delete', ...closure]);
  for (const p of closure) assert.notEqual((await run('test', ['-e', p])).code, 0, `${p} was deleted`);
  const r = await run(
    'nix-store',
    ['-r', top, '--option', 'substituters', `${s3.httpUrl} file://${up}`, '--option', 'trusted-public-keys', `${ours.pub} ${upstreamKey.pub}`, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
  assert.equal((await run('nix-store', ['--verify-path', ...closure], { env: nixEnv() })).code, 0);
});

test('--no-upstream uploads the signed paths; --upstream-key replaces the default list; --no-upstream-keys leaves the caches alone to decide', async () => {
  const { top, byName } = await buildClosure();
  await nix('nix', ['store', 'sign', '--key-file', upstreamKey.secret, byName.get('base')!, byName.get('big')!]);
  const aDir = `file://${path.join(work, `a-${randomUUID()}`)}`;
  assert.match(await uploadHuman(['--to', aDir, top]), /uploaded 2 paths .*, 0 already in the cache, 2 skipped: upstream/);
  const a = await upload(['--to', aDir, top]);
  assert.deepEqual(names(a.report.skippedUpstream), ['base', 'big'], 'skipped by default');
  assert.deepEqual(names(a.report.skipped), ['selfref', 'top'], 'the others were uploaded by the first run');

  const b = await upload(['--to', `file://${path.join(work, `b-${randomUUID()}`)}`, '--no-upstream', top]);
  assert.deepEqual(b.report.skippedUpstream, []);
  assert.equal(b.report.uploaded.length, 4);

  // Another key name replaces cache.nixos.org-1; a whole public key names its key.
  const c = await upload(['--to', `file://${path.join(work, `c-${randomUUID()}`)}`, '--upstream-key', 'someone-else-1', top]);
  assert.equal(c.report.uploaded.length, 4);
  const d = await upload(['--to', `file://${path.join(work, `d-${randomUUID()}`)}`, '--upstream-key', 'someone-else-1', '--upstream-key', upstreamKey.pub, top]);
  assert.deepEqual(names(d.report.skippedUpstream), ['base', 'big']);

  // --no-upstream-keys trusts no key, not even the default: the signed paths are uploaded...
  const e = await upload(['--to', `file://${path.join(work, `e-${randomUUID()}`)}`, '--no-upstream-keys', top]);
  assert.deepEqual(e.report.skippedUpstream, []);
  assert.equal(e.report.uploaded.length, 4);
  // ...unless an --upstream cache serves them: there only the caches decide (base is there, big is not).
  const upDir = `file://${path.join(work, `up-${randomUUID()}`)}`;
  await upload(['--to', upDir, '--no-upstream', byName.get('base')!]);
  const f = await upload(['--to', `file://${path.join(work, `f-${randomUUID()}`)}`, '--no-upstream-keys', '--upstream', upDir, top]);
  assert.deepEqual(names(f.report.skippedUpstream), ['base']);
  assert.deepEqual(names(f.report.uploaded.map((u) => u.path)), ['big', 'selfref', 'top']);
});

test('--no-closure: a reference signed by an upstream key or served by an --upstream cache counts as there; one in neither holds its referrer back', async () => {
  const { top, byName, closure } = await buildClosure();
  // base: signed locally by the upstream key. big (and base): in a file:// upstream.
  await nix('nix', ['store', 'sign', '--key-file', upstreamKey.secret, byName.get('base')!]);
  const up = path.join(work, `nc-up-${randomUUID()}`);
  await upload(['--to', `file://${up}`, '--secret-key-file', upstreamKey.secret, '--no-upstream', byName.get('big')!]);
  const oursDir = path.join(work, `nc-ours-${randomUUID()}`);
  const to = `file://${oursDir}`;

  // selfref's one reference besides itself is base, which the upstream key signed.
  const a = await upload(['--to', to, '--secret-key-file', ours.secret, '--no-closure', byName.get('selfref')!]);
  assert.deepEqual(names(a.report.uploaded.map((u) => u.path)), ['selfref']);

  // Without upstream filtering, base is a reference nobody serves: big is held back, nothing of it published.
  const held = await narpush(['upload-path', '--compression', 'none', '--to', to, '--no-upstream', '--no-closure', byName.get('big')!], { env: env() });
  assert.equal(held.code, 1, held.stderr);
  assert.match(held.stderr, /its reference '[^']*-np-base' is not in the cache/);
  assert.doesNotMatch(held.stderr, /\n\s+at /, 'no stack trace');
  const bigHash = path.basename(byName.get('big')!).slice(0, 32);
  assert.equal(await readFile(path.join(oursDir, `${bigHash}.narinfo`)).catch(() => 'absent'), 'absent');

  // top: big is served by the --upstream cache (same NarHash), base signed upstream, selfref in ours.
  const b = await upload(['--to', to, '--secret-key-file', ours.secret, '--upstream', `file://${up}`, '--no-closure', top]);
  assert.deepEqual(names(b.report.uploaded.map((u) => u.path)), ['top']);

  // Nix gets the whole closure back from the two caches, signatures required.
  await nix('nix-store', ['--delete', ...closure]);
  const r = await run(
    'nix-store',
    ['-r', top, '--option', 'substituters', `${to} file://${up}`, '--option', 'trusted-public-keys', `${ours.pub} ${upstreamKey.pub}`, '--option', 'require-sigs', 'true'],
    { env: nixEnv() },
  );
  assert.equal(r.code, 0, `substitution failed: ${r.stderr}`);
});

test('an http:// upstream (s3rver over plain HTTP, as Nix reads it): what it serves is skipped, what it lacks is uploaded', async () => {
  const { top, byName } = await buildClosure();
  const seed = await upload(['--to', s3.url, '--no-upstream', byName.get('big')!]);
  assert.deepEqual(names(seed.report.uploaded.map((u) => u.path)), ['base', 'big']);
  const { report, stderr } = await upload(['--to', `file://${path.join(work, `h-${randomUUID()}`)}`, '--upstream-key', 'nobody-1', '--upstream', s3.httpUrl, top]);
  assert.deepEqual(names(report.skippedUpstream), ['base', 'big']);
  assert.deepEqual(names(report.uploaded.map((u) => u.path)), ['selfref', 'top']);
  assert.doesNotMatch(stderr, /warning/, 'a missing narinfo is an answer, not a failure');
});

/** An HTTP server answering 500 to everything, counting requests. */
async function serve500(): Promise<{ url: string; requests: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server: Server = createServer((_req, res) => {
    n++;
    res.writeHead(500).end('boom');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => n,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('failing upstreams (a closed port, one that answers 500) never fail the upload: everything is uploaded, each said once', async () => {
  const { top, closure } = await buildClosure();
  const broken = await serve500();
  try {
    const dir = path.join(work, `f-${randomUUID()}`);
    const port = await closedPort();
    const { report, stderr } = await upload(['--to', `file://${dir}`, '--secret-key-file', ours.secret, '--upstream', `http://127.0.0.1:${port}`, '--upstream', broken.url, top]);
    assert.equal(report.uploaded.length, closure.length);
    assert.deepEqual(report.skippedUpstream, []);
    const warnings = stderr.split('\n').filter((l) => /warning: upstream/.test(l));
    assert.equal(warnings.length, 2, stderr);
    assert.match(warnings.find((w) => w.includes(String(port)))!, /ECONNREFUSED/);
    assert.match(warnings.find((w) => w.includes(broken.url))!, /HTTP 500/);
    assert.equal(broken.requests(), 1, 'a failing upstream gets one request, not one per path');
    await assertCacheHas(async (k) => readFile(path.join(dir, k)).catch(() => undefined), closure, ours.pub);
  } finally {
    await broken.close();
  }
});

test('bad upstream flags: one line, exit 2 (bad usage), nothing uploaded', async () => {
  const { top } = await buildClosure();
  const dir = path.join(work, `bad-${randomUUID()}`);
  for (const [args, message] of [
    [['--upstream', 'cache.nixos.org'], /--upstream takes an https:\/\/, http:\/\/, file:\/\/ or s3:\/\/ URL, not 'cache.nixos.org'/],
    [['--upstream-key', 'two words'], /--upstream-key 'two words' is not a key name/],
    [['--upstream-key', 'k:AAAA'], /has 3 bytes, expected 32/],
    [['--no-upstream-keys', '--upstream-key', 'a-1'], /--no-upstream-keys and --upstream-key contradict each other/],
  ] as const) {
    const r = await narpush(['upload-path', '--to', `file://${dir}`, ...args, top], { env: env() });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.equal((await run('test', ['-e', dir])).code, 1, 'nothing was written');
  }
});
