// The file:// backend: atomic writes, no leftovers on failure or abort, keys
// confined to the cache, and a directory real Nix substitutes from.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile, mkdir } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { FileBackend, TEMP_MARKER } from '../../src/cache/file-backend.js';
import { SLOW_METADATA_CALL_MS } from '../../src/cache/file-ops.js';
import { MAX_GET_BYTES, stageBytes } from '../../src/cache/backend.js';
import { openCacheBackend } from '../../src/cli/open-backend.js';
import { parseCacheUrl } from '../../src/cli/cache-url.js';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { runOk } from '../helpers/run.js';
import { chunked, stallingBody } from '../helpers/bodies.js';
import { publishByHand } from '../helpers/cache-check.js';

const MiB = 1024 * 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

// Every cache directory made here is removed when the file's tests are done.
const made: string[] = [];
after(() => Promise.all(made.map((d) => rm(d, { recursive: true, force: true }))));

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-file-backend-'));
  made.push(dir);
  return dir;
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

/**
 * Record the file system calls the backend makes (through node:fs's callback
 * and synchronous APIs, which it uses), in the order they start and finish,
 * with every fsync slowed down. With `createMs`, the clock (process.hrtime.bigint, which src/clock.ts reads)
 * stands still except that each synchronous create takes that long: how
 * fast the real file system is does not matter. Restores node:fs and the
 * clock when `stop` is called.
 */
function recordFsCalls(opts: { createMs?: number } = {}): { events: string[]; stop: () => void } {
  const real = { open: fs.open, openSync: fs.openSync, fsync: fs.fsync, fdatasync: fs.fdatasync, rename: fs.rename, renameSync: fs.renameSync };
  const realNow = process.hrtime.bigint;
  let now = 0;
  const fdPaths = new Map<number, string>();
  const events: string[] = [];
  const patched = fs as unknown as Record<string, unknown>;
  const opened = (p: string, flags: unknown, how: string): void => {
    events.push(`open-${how} ${p}`);
    if (typeof flags === 'number' && (flags & fs.constants.O_DSYNC) !== 0) events.push(`open-dsync ${p}`);
  };
  patched.open = (p: string, flags: string | number, ...rest: unknown[]) => {
    const cb = rest.pop() as (e: Error | null, fd?: number) => void;
    opened(p, flags, 'pooled');
    (real.open as (...a: unknown[]) => void)(p, flags, ...rest, (e: Error | null, fd?: number) => {
      if (!e) fdPaths.set(fd!, p);
      cb(e, fd);
    });
  };
  patched.openSync = (p: string, flags: string | number, ...rest: unknown[]) => {
    opened(p, flags, 'inline');
    now += opts.createMs ?? 0;
    const fd = (real.openSync as (...a: unknown[]) => number)(p, flags, ...rest);
    fdPaths.set(fd, p);
    return fd;
  };
  // Slow fsyncs and fdatasyncs, as on a busy disk: renames then land while one is running.
  for (const name of ['fsync', 'fdatasync'] as const) {
    patched[name] = (fd: number, cb: (e: Error | null) => void) => {
      const p = fdPaths.get(fd) ?? `fd ${fd}`;
      events.push(`${name}-start ${p}`);
      setTimeout(() => {
        real[name](fd, (e) => {
          events.push(`${name}-done ${p}`);
          cb(e);
        });
      }, 3);
    };
  }
  patched.rename = (from: string, to: string, cb: (e: Error | null) => void) => {
    events.push(`rename-start ${to}`);
    real.rename(from, to, (e) => {
      events.push(`rename-done ${to}`);
      cb(e);
    });
  };
  patched.renameSync = (from: string, to: string) => {
    events.push(`rename-start ${to}`);
    real.renameSync(from, to);
    events.push(`rename-done ${to}`);
  };
  syncBuiltinESMExports();
  // The time file-ops.ts measures its calls with (src/clock.ts): only the creates' made-up cost advances it.
  if (opts.createMs !== undefined) process.hrtime.bigint = () => BigInt(Math.round(now * 1e6));
  return {
    events,
    stop: () => {
      Object.assign(patched, real);
      syncBuiltinESMExports();
      process.hrtime.bigint = realNow;
    },
  };
}

test('staged objects: invisible until published, durable only after a directory fsync that began after the rename', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const rec = recordFsCalls();
  try {
    const bodies = Array.from({ length: 40 }, (_, i) => randomBytes(50 + i));
    const staged = await Promise.all(bodies.map((body, i) => stageBytes(b, { key: `k${i}.narinfo`, body, contentType: 'text/x-nix-narinfo' })));
    assert.equal((await listAll(dir)).filter((f) => !f.includes(TEMP_MARKER)).length, 0, 'nothing visible before publish');
    // Bytes are durable before stageBytes resolves: written with O_DSYNC, or fdatasynced.
    const durableTemps = rec.events.filter((e) => /^(open-dsync|fdatasync-done) /.test(e) && e.includes(TEMP_MARKER)).length;
    assert.equal(durableTemps, staged.length, 'each staged file is written durably');
    // Publish in a chain (each after the previous is visible) while durability is awaited beside it.
    const durable: Promise<void>[] = [];
    const durableAt = new Map<number, number>();
    for (const [i, s] of staged.entries()) {
      await s.publish();
      assert.ok((await b.get(`k${i}.narinfo`))!.equals(bodies[i]!), `k${i} visible once published`);
      durable.push(s.durable().then(() => void durableAt.set(i, rec.events.length)));
    }
    await Promise.all(durable);
    for (const i of staged.keys()) {
      const renamed = rec.events.indexOf(`rename-done ${path.join(dir, `k${i}.narinfo`)}`);
      const syncStart = rec.events.findIndex((e, at) => at > renamed && e === `fsync-start ${dir}`);
      const syncDone = rec.events.findIndex((e, at) => at > syncStart && e === `fsync-done ${dir}`);
      assert.ok(renamed >= 0 && syncStart > renamed, `a directory fsync started after k${i} was renamed`);
      assert.ok(syncDone >= 0 && syncDone < durableAt.get(i)!, `k${i} was durable only after that fsync finished`);
    }
    // Objects published together share directory fsyncs (group commit).
    const before = rec.events.filter((e) => e === `fsync-start ${dir}`).length;
    const more = await Promise.all(bodies.map((body, i) => stageBytes(b, { key: `m${i}.narinfo`, body, contentType: 'text/x-nix-narinfo' })));
    await Promise.all(more.map((s) => s.publish()));
    await Promise.all(more.map((s) => s.durable()));
    const shared = rec.events.filter((e) => e === `fsync-start ${dir}`).length - before;
    assert.ok(shared >= 1 && shared <= 2, `${shared} directory fsyncs for ${more.length} renames`);
  } finally {
    rec.stop();
  }
  assert.deepEqual((await listAll(dir)).filter((f) => f.includes(TEMP_MARKER)), []);
});

test('a discarded staged object leaves nothing behind; misuse is refused', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const s = await stageBytes(b, { key: 'gone.narinfo', body: Buffer.from('x'), contentType: 'text/x-nix-narinfo' });
  assert.equal((await listAll(dir)).length, 1, 'the staged temporary file');
  await s.discard();
  await s.discard();
  assert.deepEqual(await listAll(dir), []);
  await assert.rejects(s.publish(), /publish called when gone/);
  const t = await stageBytes(b, { key: 'k.narinfo', body: Buffer.from('y'), contentType: 'text/x-nix-narinfo' });
  await assert.rejects(t.durable(), /durable called when staged/);
  await t.publish();
  await t.discard(); // after publish: a no-op, the object stays
  await t.durable();
  assert.equal((await b.get('k.narinfo'))?.toString(), 'y');
  // Publishing into a directory that vanished fails, and leaves no temporary file.
  const u = await stageBytes(b, { key: 'nar/u.nar', body: Buffer.from('z'), contentType: 'application/x-nix-nar' });
  await rm(path.join(dir, 'nar', (await readdir(path.join(dir, 'nar')))[0]!));
  await assert.rejects(u.publish(), { code: 'CACHE_IO', message: /cannot write nar\/u\.nar/ });
  assert.deepEqual(await listAll(dir), ['k.narinfo']);
});

test('a batch: every object durable before it resolves, none visible before publish, a bad one fails alone', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const rec = recordFsCalls();
  let results: Awaited<ReturnType<FileBackend['stageBatch']>>;
  const bodies = Array.from({ length: 30 }, (_, i) => randomBytes(20 + i));
  // A key that is a directory cannot be renamed over; one outside the cache is refused before any write.
  await mkdir(path.join(dir, 'nar', 'taken', 'x'), { recursive: true });
  const objects = [
    ...bodies.map((body, i) => ({ key: `nar/b${i}.nar`, body, contentType: 'application/x-nix-nar' })),
    { key: '../escape', body: Buffer.from('no'), contentType: 'application/x-nix-nar' },
    { key: 'nar/taken', body: Buffer.from('no'), contentType: 'application/x-nix-nar' },
  ];
  try {
    results = await b.stageBatch(objects);
    const temps = rec.events.filter((e) => e.startsWith('open-inline') && e.includes(TEMP_MARKER));
    const synced = rec.events.filter((e) => e.startsWith('fdatasync-done') && e.includes(TEMP_MARKER));
    assert.equal(temps.length, bodies.length + 1, 'one temporary file per object with a valid key');
    assert.deepEqual(synced.map((e) => e.split(' ')[1]).sort(), temps.map((e) => e.split(' ')[1]).sort(), 'each fdatasynced before the batch resolved');
  } finally {
    rec.stop();
  }
  assert.deepEqual((await listAll(dir)).filter((f) => !f.includes(TEMP_MARKER)), [], 'nothing visible before publish');
  assert.equal(results[bodies.length]!.status, 'rejected');
  assert.match(String((results[bodies.length] as PromiseRejectedResult).reason), /invalid cache key/);
  const taken = results[bodies.length + 1]!;
  assert.equal(taken.status, 'fulfilled', 'staged: the clash shows only when it is published');
  if (taken.status === 'fulfilled') await assert.rejects(taken.value.publish(), { code: 'CACHE_IO' });
  for (const r of results.slice(0, bodies.length)) {
    assert.equal(r.status, 'fulfilled');
    if (r.status === 'fulfilled') await r.value.publish();
  }
  for (const [i, body] of bodies.entries()) assert.ok((await readFile(path.join(dir, 'nar', `b${i}.nar`))).equals(body));
  assert.deepEqual((await listAll(dir)).filter((f) => f.includes(TEMP_MARKER)), [], 'no temporary file left');
});

test('creates and renames leave this thread for the thread pool once they prove slow', async () => {
  for (const [createMs, pooled] of [[SLOW_METADATA_CALL_MS / 2, false], [SLOW_METADATA_CALL_MS * 2, true]] as const) {
    const dir = await freshDir();
    const b = new FileBackend(dir);
    const rec = recordFsCalls({ createMs });
    try {
      const bodies = Array.from({ length: 100 }, (_, i) => randomBytes(10 + i));
      for (const [i, body] of bodies.entries()) await b.putBytes(`nar/k${i}`, body, 'application/x-nix-nar');
      for (const [i, body] of bodies.entries()) assert.ok((await readFile(path.join(dir, 'nar', `k${i}`))).equals(body));
      const opens = rec.events.filter((e) => e.startsWith('open-') && e.includes(TEMP_MARKER) && !e.startsWith('open-dsync'));
      const last = opens.slice(-50);
      if (pooled) {
        assert.ok(opens[0]!.startsWith('open-inline'), 'creates start on this thread');
        assert.ok(last.every((e) => e.startsWith('open-pooled')), 'slow creates moved to the thread pool');
      } else {
        assert.ok(opens.every((e) => e.startsWith('open-inline')), 'fast creates stay on this thread');
      }
      // A batch after that: written here and fdatasynced together while fast, else staged one by one on the pool.
      const before = rec.events.length;
      const staged = await b.stageBatch(bodies.map((body, i) => ({ key: `nar/s${i}`, body, contentType: 'application/x-nix-nar' })));
      const batchOpens = rec.events.slice(before).filter((e) => e.startsWith('open-') && !e.startsWith('open-dsync'));
      const synced = rec.events.slice(before).filter((e) => e.startsWith('fdatasync-done') || e.startsWith('open-dsync')).length;
      assert.equal(batchOpens.length, bodies.length);
      assert.ok(batchOpens.every((e) => e.startsWith(pooled ? 'open-pooled' : 'open-inline')), `batch creates ${pooled ? 'pooled' : 'inline'}`);
      assert.equal(synced, bodies.length, 'every staged file is durable');
      for (const r of staged) {
        assert.equal(r.status, 'fulfilled');
        if (r.status === 'fulfilled') await r.value.publish();
      }
      for (const [i, body] of bodies.entries()) assert.ok((await readFile(path.join(dir, 'nar', `s${i}`))).equals(body));
    } finally {
      rec.stop();
    }
    assert.deepEqual((await listAll(dir)).filter((f) => f.includes(TEMP_MARKER)), []);
  }
});
