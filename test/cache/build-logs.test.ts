// `--build-logs`: a derivation's log, kept bzip2-compressed by Nix, goes to
// `log/<drv>` in the cache as plain text, and Nix 2.8 reads it back both
// ways: `nix log --store file://…` and, once the local log is gone,
// `nix log … --option substituters file://…`. Missing logs are counted,
// never errors; without the flag no log is written.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { brotliDecompressSync } from 'node:zlib';
import * as path from 'node:path';
import { DEFAULT_NIX_LOG_DIR, derivationsOf } from '../../src/cache/build-logs.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { nix, nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { narpush, run } from '../helpers/run.js';
import { S3RVER_ENV, type S3rverHandle, startS3rver, storedObject } from '../helpers/s3rver.js';

let work: string;
let s3: S3rverHandle | undefined;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'narpush-logs-'));
});
after(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

/** A fresh derivation whose log says `words` (stdout and stderr), built by Nix; its output and .drv. */
async function buildLogging(words: string): Promise<{ out: string; drv: string }> {
  const script = `echo ${words}; echo ${words}-on-stderr >&2; echo done > $out`;
  const [out] = await nixBuildExpr(`lib.mk { name = "narpush-log-test"; salt = "${randomUUID()}"; script = "${script}"; }`);
  const drv = (await nix('nix-store', ['-q', '--deriver', out!])).toString().trim();
  return { out: out!, drv };
}

function localLog(drv: string): string {
  const base = path.basename(drv);
  return path.join(DEFAULT_NIX_LOG_DIR, 'drvs', base.slice(0, 2), `${base.slice(2)}.bz2`);
}

test('upload-path --build-logs: nix log reads the log from the cache, by --store and as a substituter', async () => {
  const words = `narpush-distinctive-${randomUUID()}`;
  const { out, drv } = await buildLogging(words);
  const cache = path.join(work, 'cache');
  const r = await narpush(['upload-path', '--to', `file://${cache}`, '--build-logs', '--json', out], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.toString()).buildLogs, { written: 1, missing: 0, failed: [] });
  const stored = await readFile(path.join(cache, 'log', path.basename(drv)), 'utf8');
  assert.match(stored, new RegExp(`^${words}$`, 'm'), 'plain text, not bzip2');

  const byStore = await run('nix', ['log', '--store', `file://${cache}`, out], { env: nixEnv() });
  assert.equal(byStore.code, 0, byStore.stderr.toString());
  assert.match(byStore.stdout.toString(), new RegExp(`${words}-on-stderr`));

  await rm(localLog(drv));
  const local = await run('nix', ['log', out], { env: nixEnv() });
  assert.notEqual(local.code, 0, 'the local log is gone');
  const bySubstituter = await run('nix', ['log', out, '--option', 'substituters', `file://${cache}`], { env: nixEnv() });
  assert.equal(bySubstituter.code, 0, bySubstituter.stderr.toString());
  assert.match(bySubstituter.stdout.toString(), new RegExp(`^${words}$`, 'm'));
});

test('upload-path: no logs without --build-logs; a missing log is counted, not an error', async () => {
  const { out, drv } = await buildLogging(`narpush-quiet-${randomUUID()}`);
  const plain = path.join(work, 'plain');
  const r = await narpush(['upload-path', '--to', `file://${plain}`, out], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await readdir(plain).then((f) => f.filter((n) => n === 'log')), []);

  await rm(localLog(drv));
  const cache = path.join(work, 'missing');
  const m = await narpush(['upload-path', '--to', `file://${cache}`, '--build-logs', '--json', out], { env: nixEnv() });
  assert.equal(m.code, 0, m.stderr);
  assert.deepEqual(JSON.parse(m.stdout.toString()).buildLogs, { written: 0, missing: 1, failed: [] });
  assert.doesNotMatch(m.stderr.toString(), /log/, 'nothing said per path');
});

test('derivationsOf: paths built here with a known deriver, each derivation once', () => {
  const sp = (n: string): ReturnType<typeof parseStorePath> => parseStorePath(`/nix/store/${'a'.repeat(31)}${n}-x`, '/nix/store');
  const info = (out: string, deriver: string | undefined, ultimate: boolean): PathInfo => ({
    path: sp(out), deriver: deriver ? sp(deriver) : undefined, narHash: { algo: 'sha256', digest: Buffer.alloc(32) },
    references: [], registrationTime: 0, narSize: 8, ultimate, sigs: [], ca: undefined,
  });
  const drvs = derivationsOf([info('1', 'd', true), info('2', 'd', true), info('3', 'g', false), info('4', undefined, true), info('5', 'f', true)]);
  assert.deepEqual(drvs.map((d) => d.path), [sp('d').path, sp('f').path]);
});

test('upload-path --build-logs to S3: text/plain; charset=utf-8, and nix log reads it over HTTP', async () => {
  s3 = await startS3rver();
  const words = `narpush-s3-log-${randomUUID()}`;
  const { out, drv } = await buildLogging(words);
  const r = await narpush(['upload-path', '--to', s3.url, '--build-logs', out], {
    env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr.toString(), /1 build logs \(0 not kept locally\)/);
  const res = await fetch(`${s3.httpUrl}/log/${path.basename(drv)}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
  assert.match(await res.text(), new RegExp(`^${words}$`, 'm'));
  await rm(localLog(drv));
  const byHttp = await run('nix', ['log', out, '--option', 'substituters', s3.httpUrl], { env: nixEnv() });
  assert.equal(byHttp.code, 0, byHttp.stderr.toString());
  assert.match(byHttp.stdout.toString(), new RegExp(`^${words}$`, 'm'));
});

test('log-compression=br (s3): the log is stored Brotli-compressed with Content-Encoding: br, and nix log reads it', async () => {
  s3 ??= await startS3rver();
  const server = s3;
  const words = `narpush-br-log-${randomUUID()}`;
  const { out, drv } = await buildLogging(words);
  const r = await narpush(['upload-path', '--to', `${server.url}&log-compression=br`, '--build-logs', out], {
    env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }),
  });
  assert.equal(r.code, 0, r.stderr);
  // The stored bytes, not decoded (fetch would undo the encoding).
  const raw = await storedObject(`${server.httpUrl}/log/${path.basename(drv)}`);
  assert.equal(raw.encoding, 'br');
  assert.match(brotliDecompressSync(raw.body).toString(), new RegExp(`^${words}$`, 'm'));
  assert.doesNotMatch(raw.body.toString('latin1'), new RegExp(words), 'the stored bytes are compressed');
  await rm(localLog(drv));
  const byHttp = await run('nix', ['log', out, '--option', 'substituters', server.httpUrl], { env: nixEnv() });
  assert.equal(byHttp.code, 0, byHttp.stderr.toString());
  assert.match(byHttp.stdout.toString(), new RegExp(`^${words}$`, 'm'));
});
