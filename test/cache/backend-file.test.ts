// The file:// backend: atomic writes, no leftovers on failure or abort, keys
// confined to the cache, and a directory real Nix substitutes from.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, stat, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { FileBackend, TEMP_MARKER } from '../../src/cache/file-backend.js';
import { openCacheBackend, MAX_GET_BYTES } from '../../src/cache/backend.js';
import { parseCacheUrl } from '../../src/cache/cache-url.js';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { runOk } from '../helpers/run.js';
import { chunked, stallingBody } from '../helpers/bodies.js';
import { publishByHand } from '../helpers/cache-check.js';

const MiB = 1024 * 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function freshDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'narpush-file-backend-'));
}

/** Every file under `dir`, relative, sorted. */
async function listAll(dir: string): Promise<string[]> {
  const out = (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => path.relative(dir, path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name)));
  return out.sort();
}



test('round trip: small and streamed objects, missing keys, parent directories created', async () => {
  const dir = await freshDir();
  const b = new FileBackend(path.join(dir, 'cache')); // the cache directory itself does not exist yet
  assert.equal(b.description, `file://${dir}/cache`);
  assert.equal(await b.get('nix-cache-info'), undefined);
  assert.equal(await b.exists('nix-cache-info'), false);
  const info = Buffer.from('StoreDir: /nix/store\n');
  await b.putBytes('nix-cache-info', info, 'text/x-nix-cache-info');
  assert.deepEqual(await b.get('nix-cache-info'), info);
  assert.equal(await b.exists('nix-cache-info'), true);
  const nar = randomBytes(3 * MiB + 17);
  const r = await b.putStream('nar/abc.nar.xz', chunked(nar), 'application/x-nix-nar', { sizeHint: nar.length });
  assert.equal(r.bytes, nar.length);
  assert.equal(sha(await readFile(path.join(dir, 'cache/nar/abc.nar.xz'))), sha(nar));
  assert.equal(await b.exists('nar'), false, 'a directory is not an object');
  assert.equal(await b.get('nar/missing.nar'), undefined);
  assert.equal(await b.get('missing-dir/x'), undefined);
  const mode = (await stat(path.join(dir, 'cache/nar/abc.nar.xz'))).mode & 0o777;
  assert.equal(mode, 0o644 & ~process.umask(), 'readable by the nix-daemon and web servers');
  assert.deepEqual(await listAll(dir), ['cache/nar/abc.nar.xz', 'cache/nix-cache-info']);
});

test('a stream that throws after its last byte leaves nothing behind, and keeps the old object', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  await b.putBytes('nar/x.nar', Buffer.from('old'), 'application/x-nix-nar');
  const boom = new Error('hash mismatch');
  async function* body(): AsyncGenerator<Uint8Array> {
    yield* chunked(randomBytes(MiB));
    throw boom;
  }
  await assert.rejects(b.putStream('nar/x.nar', body(), 'application/x-nix-nar'), (e) => e === boom);
  await assert.rejects(b.putStream('nar/y.nar', body(), 'application/x-nix-nar'), (e) => e === boom);
  assert.equal((await b.get('nar/x.nar'))?.toString(), 'old');
  assert.deepEqual(await listAll(dir), ['nar/x.nar']);
});

test('an abort stops a stalled producer and removes the temporary file', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const ac = new AbortController();
  const body = stallingBody(randomBytes(MiB));
  const p = b.putStream('nar/a.nar', body, 'application/x-nix-nar', { signal: ac.signal });
  while ((await listAll(dir)).length === 0) await sleep(5); // the temp file exists: writing has begun
  assert.ok((await listAll(dir))[0]!.includes(TEMP_MARKER));
  ac.abort();
  await assert.rejects(p, { code: 'UPLOAD_ABORTED', message: /upload of nar\/a\.nar to file:\/\/.* was aborted/ });
  assert.deepEqual(await listAll(dir), []);
  assert.ok(body.returned, 'the producer was told to stop');
  await assert.rejects(b.putStream('nar/b.nar', stallingBody(Buffer.alloc(1)), 'x', { signal: AbortSignal.abort() }), { code: 'UPLOAD_ABORTED' });
  assert.deepEqual(await listAll(dir), []);
});

test('a reader never sees a half-written object', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const oldBody = randomBytes(100_000);
  await b.putBytes('k.narinfo', oldBody, 'text/x-nix-narinfo');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const newBody = randomBytes(200_000);
  async function* body(): AsyncGenerator<Uint8Array> {
    yield newBody.subarray(0, 100_000);
    await gate;
    yield newBody.subarray(100_000);
  }
  const p = b.putStream('k.narinfo', body(), 'text/x-nix-narinfo');
  await sleep(20);
  assert.equal(sha((await b.get('k.narinfo'))!), sha(oldBody), 'old content while the new one is written');
  release();
  await p;
  assert.equal(sha((await b.get('k.narinfo'))!), sha(newBody));
});

test('concurrent puts of one key: the result is exactly one of them, no temporary files', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const bodies = Array.from({ length: 8 }, () => randomBytes(256 * 1024 + Math.floor(Math.random() * 1000)));
  await Promise.all(bodies.map((d, i) => (i % 2 ? b.putBytes('nar/same.nar', d, 'x') : b.putStream('nar/same.nar', chunked(d, 8192), 'x'))));
  const got = sha((await b.get('nar/same.nar'))!);
  assert.ok(bodies.some((d) => sha(d) === got));
  assert.deepEqual(await listAll(dir), ['nar/same.nar']);
});

test('keys cannot leave the cache directory', async () => {
  const dir = await freshDir();
  const b = new FileBackend(path.join(dir, 'cache'));
  for (const key of ['', '/etc/passwd', '../escape', 'nar/../../escape', 'a//b', 'a/./b', 'a/', 'back\\slash', 'nl\nkey']) {
    await assert.rejects(b.putBytes(key, Buffer.from('x'), 'x'), { code: 'BAD_CACHE_KEY' }, JSON.stringify(key));
    await assert.rejects(b.get(key), { code: 'BAD_CACHE_KEY' });
    await assert.rejects(b.exists(key), { code: 'BAD_CACHE_KEY' });
  }
  assert.deepEqual(await listAll(dir), []);
});

test('I/O failures are CACHE_IO errors naming the key; oversized metadata is refused', async () => {
  const dir = await freshDir();
  await writeFile(path.join(dir, 'not-a-dir'), 'x');
  const b = new FileBackend(path.join(dir, 'not-a-dir'));
  await assert.rejects(b.putBytes('nix-cache-info', Buffer.from('x'), 'x'), {
    code: 'CACHE_IO',
    message: /^cannot write nix-cache-info in file:\/\/.*not-a-dir \((EEXIST|ENOTDIR): /,
  });
  const ok = new FileBackend(dir);
  await mkdir(path.join(dir, 'adir.narinfo'));
  await assert.rejects(ok.get('adir.narinfo'), { code: 'CACHE_IO' });
  await writeFile(path.join(dir, 'huge.narinfo'), '');
  await truncate(path.join(dir, 'huge.narinfo'), MAX_GET_BYTES + 1);
  await assert.rejects(ok.get('huge.narinfo'), { code: 'CACHE_OBJECT_TOO_LARGE' });
});


test('Nix substitutes from a cache the file backend wrote', async () => {
  const [out] = await nixBuildExpr(
    `lib.mk { name = "narpush-file-backend"; salt = "${randomBytes(8).toString('hex')}"; script = ''
      mkdir -p $out/bin $out/share; echo hello > $out/share/greeting
      printf '#!/bin/sh\\necho hi\\n' > $out/bin/hi; chmod +x $out/bin/hi; ln -s ../share/greeting $out/link
    ''; }`,
  );
  assert.ok(out);
  const dir = await freshDir();
  const b = await openCacheBackend(parseCacheUrl(`file://${dir}/cache`));
  await publishByHand(b, out);
  await b.close();
  // Substitute into a separate (chroot) store, leaving /nix/store alone.
  const root = await freshDir();
  await runOk('nix', ['copy', '--no-check-sigs', '--from', `file://${dir}/cache`, '--to', `local?root=${root}`, out], {
    env: nixEnv(),
  });
  assert.equal((await readFile(path.join(root, out, 'share/greeting'), 'utf8')), 'hello\n');
  assert.ok(((await stat(path.join(root, out, 'bin/hi'))).mode & 0o100) !== 0);
  const verify = await runOk('nix', ['store', 'verify', '--no-trust', '--store', `local?root=${root}`, out], { env: nixEnv() });
  assert.equal(verify.code, 0);
});

test('many concurrent writes into one directory share directory fsyncs and all land whole', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const bodies = Array.from({ length: 200 }, (_, i) => randomBytes(100 + i));
  await Promise.all(
    bodies.map((body, i) =>
      i % 2 === 0 ? b.putBytes(`nar/k${i}`, body, 'application/x-nix-nar') : b.putStream(`nar/k${i}`, chunked(body, 50), 'application/x-nix-nar'),
    ),
  );
  for (const [i, body] of bodies.entries()) assert.ok((await readFile(path.join(dir, 'nar', `k${i}`))).equals(body), `k${i}`);
  assert.deepEqual((await listAll(dir)).filter((f) => f.includes(TEMP_MARKER)), []);
  // Later writes still work after the group commits have drained.
  await b.putBytes('nar/after', Buffer.from('x'), 'application/x-nix-nar');
  assert.equal(await readFile(path.join(dir, 'nar', 'after'), 'utf8'), 'x');
});

test('a long abortable upload does not keep its chunks alive', async () => {
  // Regression: racing every chunk against one long-lived abort promise kept
  // every chunk reachable until the upload ended (1.4 GiB RSS for a 1 GiB NAR).
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const dir = await freshDir();
  const b = new FileBackend(dir);
  let collected = 0;
  const registry = new FinalizationRegistry<number>(() => collected++);
  const total = 300;
  let collectedMidway = -1;
  async function* body(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < total; i++) {
      if (i === total - 1) {
        // Still uploading: the chunks already written must be garbage by now.
        for (let k = 0; k < 20 && collected < total / 2; k++) {
          gc();
          await sleep(10);
        }
        collectedMidway = collected;
      }
      const chunk = Buffer.alloc(64 * 1024, i);
      registry.register(chunk, i);
      yield chunk;
    }
  }
  const controller = new AbortController();
  await b.putStream('nar/long', body(), 'application/x-nix-nar', { signal: controller.signal });
  assert.ok(collectedMidway >= total / 2, `chunks written were collected during the upload (${collectedMidway} of ${total - 1})`);
});
