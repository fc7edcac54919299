// The upload orchestrator on an in-memory backend, with trees in a temporary
// "store" directory: ordering of narinfos, skips, failures and corruption.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile, rm } from 'node:fs/promises';
import * as path from 'node:path';
import fc from 'fast-check';
import { nix32Encode } from '../../src/hash/nix32.js';
import { ThreadPool } from '../../src/cache/threads/thread-pool.js';
import { narInfoKey, uploadPaths } from '../../src/cache/upload.js';
import { parseNarInfo } from '../../src/narinfo/narinfo.js';
import { newSecretKey, toPublicKey } from '../../src/signing/keys.js';
import { verifyNarInfo } from '../../src/signing/sign.js';
import { createDecompressor } from '../../src/cache/compression.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { makeStore, narOf } from './upload-fake-store.js';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

// This file's worker threads, as a command's edge owns them.
const threads = new ThreadPool();
after(() => threads.close());

const DIAMOND = { top: ['left', 'right', 'top'], left: ['base'], right: ['base'], base: [], lone: [] };

test('narinfos appear only after their NAR and the narinfos of their references', async () => {
  const { dir, infos } = await makeStore(DIAMOND);
  try {
    const key = newSecretKey('test-1');
    const backend = new MemoryBackend();
    // Any order of input must give a safe order of publication.
    await fc.assert(
      fc.asyncProperty(fc.shuffledSubarray([...infos.values()], { minLength: 5, maxLength: 5 }), fc.integer({ min: 1, max: 4 }), async (order, jobs) => {
        backend.objects.clear();
        backend.log.length = 0;
        const report = await uploadPaths(order, { backend, compression: { method: 'zstd' }, signingKeys: [key], threads, jobs });
        assert.equal(report.failed.length, 0, report.failed.map((f) => f.error.message).join('; '));
        assert.equal(report.uploaded.length, 5);
        const at = (op: string, k: string): number => backend.log.findIndex((l) => l.op === op && l.key === k);
        for (const info of infos.values()) {
          const ni = at('putBytes', narInfoKey(info.path));
          const narinfo = parseNarInfo(backend.objects.get(narInfoKey(info.path))!.body.toString(), dir);
          assert.ok(ni > at('putStream-done', narinfo.url), 'narinfo after its NAR');
          for (const r of info.references) {
            if (r.equals(info.path)) continue;
            assert.ok(ni > at('putBytes', narInfoKey(r)), `${info.path.name} after ${r.name}`);
          }
        }
      }),
      { numRuns: 15 },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

for (const [mode, smallNarBytes] of [['streamed', 0], ['in one request', undefined]] as const) {
test(`${'every narinfo describes its NAR exactly, and is signed'} (${mode})`, async () => {
  const { dir, infos } = await makeStore(DIAMOND);
  try {
    const key = newSecretKey('test-1');
    const backend = new MemoryBackend();
    for (const method of ['xz', 'zstd', 'none'] as const) {
      backend.objects.clear();
      await uploadPaths([...infos.values()], { backend, compression: { method }, signingKeys: [key], threads, jobs: 2, smallNarBytes });
      for (const info of infos.values()) {
        const ni = parseNarInfo(backend.objects.get(narInfoKey(info.path))!.body.toString(), dir);
        const file = backend.objects.get(ni.url)!;
        assert.equal(file.contentType, 'application/x-nix-nar');
        assert.equal(ni.compression, method);
        assert.equal(ni.fileSize, file.body.length);
        assert.ok(ni.fileHash!.digest.equals(createHash('sha256').update(file.body).digest()));
        assert.ok(ni.narHash.digest.equals(info.narHash.digest));
        assert.equal(ni.narSize, info.narSize);
        assert.deepEqual(ni.references.map(String), info.references.map(String));
        assert.equal(verifyNarInfo(ni, [toPublicKey(key)]), 1);
        const out: Buffer[] = [];
        await pipeline(Readable.from([file.body]), await createDecompressor(method), async (s) => {
          for await (const c of s) out.push(c as Buffer);
        });
        assert.ok(Buffer.concat(out).equals(await narOf(info.path.path)), 'the file decompresses to the NAR');
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
}

test('paths already in the cache are skipped; --force uploads them again', async () => {
  const { dir, infos } = await makeStore(DIAMOND);
  try {
    const backend = new MemoryBackend();
    const all = [...infos.values()];
    const opts = { backend, compression: { method: 'none' as const }, signingKeys: [], threads, jobs: 2 };
    assert.equal((await uploadPaths(all, opts)).uploaded.length, 5);
    const again = await uploadPaths(all, opts);
    assert.equal(again.uploaded.length, 0);
    assert.equal(again.skipped.length, 5);
    const narPuts = (): number => backend.log.filter((l) => l.key.startsWith('nar/') && (l.op === 'putBytes' || l.op === 'putStream-start')).length;
    assert.equal(narPuts(), 5, 'no second NAR upload');
    assert.equal((await uploadPaths(all, { ...opts, force: true })).uploaded.length, 5);
    const dry = await uploadPaths(all, { ...opts, dryRun: true, force: true });
    assert.equal(dry.wouldUpload.length, 5);
    assert.equal(narPuts(), 10, 'dry run uploads nothing');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

for (const [mode, smallNarBytes] of [['streamed', 0], ['in one request', undefined]] as const) {
test(`${'a failed NAR keeps every path that refers to it out of the cache'} (${mode})`, async () => {
  const { dir, infos } = await makeStore(DIAMOND);
  try {
    const backend = new MemoryBackend();
    const left = infos.get('left')!;
    const leftNar = `nar/${nix32Encode(left.narHash.digest)}.nar`;
    backend.failPut = (k) => k === leftNar;
    const report = await uploadPaths([...infos.values()], { backend, compression: { method: 'none' }, signingKeys: [], threads, jobs: 2, smallNarBytes });
    assert.deepEqual(report.failed.map((f) => f.info.path.name).sort(), ['left', 'top']);
    assert.match(report.failed.find((f) => f.info.path.name === 'top')!.error.message, /reference '.*-left' failed to upload/);
    assert.ok(!backend.objects.has(narInfoKey(left.path)));
    assert.ok(!backend.objects.has(narInfoKey(infos.get('top')!.path)));
    assert.ok(!backend.objects.has(leftNar));
    assert.ok(backend.objects.has(narInfoKey(infos.get('base')!.path)));
    assert.ok(backend.objects.has(narInfoKey(infos.get('right')!.path)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
}

for (const [mode, smallNarBytes, hashHere] of [['streamed, NAR hash on the crypto thread', 0, false], ['streamed, NAR hash here', 0, true], ['in one request', undefined, undefined]] as const) {
test(`${'a path whose contents do not match the store record is refused and nothing is published'} (${mode})`, async () => {
  const { dir, infos } = await makeStore({ a: [] });
  try {
    const backend = new MemoryBackend();
    const a = infos.get('a')!;
    await writeFile(path.join(a.path.path, 'data'), 'tampered after registration');
    const report = await uploadPaths([a], {
      backend, compression: { method: 'zstd' }, signingKeys: [], threads, jobs: 1, smallNarBytes, ...(hashHere !== undefined ? { hashHere } : {}),
    });
    assert.equal(report.failed.length, 1);
    assert.equal(report.failed[0]!.error.code, 'NAR_HASH_MISMATCH');
    assert.match(report.failed[0]!.error.message, /is corrupted/);
    assert.equal(backend.objects.size, 0, 'no NAR, no narinfo');
    if (smallNarBytes === 0) assert.ok(backend.log.some((l) => l.op === 'putStream-aborted'), 'the stream was aborted');
    else assert.ok(!backend.log.some((l) => l.op.startsWith('put')), 'nothing was sent');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
}

test('with several large NARs (each whole on a crypto thread), a corrupted one is refused and the others are uploaded', async () => {
  const { dir, infos } = await makeStore({ a: [], b: [], c: [] });
  try {
    const backend = new MemoryBackend();
    const a = infos.get('a')!;
    await writeFile(path.join(a.path.path, 'data'), 'tampered after registration');
    const report = await uploadPaths([...infos.values()], { backend, compression: { method: 'zstd' }, signingKeys: [], threads, jobs: 3, smallNarBytes: 0, wholeMinBytes: 0 });
    assert.deepEqual(report.failed.map((f) => [f.info.path.name, f.error.code]), [['a', 'NAR_HASH_MISMATCH']]);
    assert.match(report.failed[0]!.error.message, /is corrupted/);
    assert.deepEqual(report.uploaded.map((u) => u.info.path.name).sort(), ['b', 'c']);
    assert.ok(!backend.objects.has(narInfoKey(a.path)));
    assert.ok(!backend.objects.has(`nar/${nix32Encode(a.narHash.digest)}.nar.zst`), 'no NAR for the corrupted path');
    assert.ok(backend.log.some((l) => l.op === 'putStream-aborted'), 'its stream was aborted');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a small path that grew past its recorded size is refused without being read whole or sent', async () => {
  const { dir, infos } = await makeStore({ a: [] });
  try {
    const backend = new MemoryBackend();
    const a = infos.get('a')!;
    await writeFile(path.join(a.path.path, 'data'), Buffer.alloc(4 << 20, 1));
    const report = await uploadPaths([a], { backend, compression: { method: 'zstd' }, signingKeys: [], threads, jobs: 1 });
    assert.equal(report.failed[0]?.error.code, 'NAR_HASH_MISMATCH');
    assert.match(report.failed[0]!.error.message, /larger than the \d+ bytes the store recorded/);
    assert.equal(backend.objects.size, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a reference outside the set must already be in the cache', async () => {
  const { dir, infos } = await makeStore(DIAMOND);
  try {
    const backend = new MemoryBackend();
    const opts = { backend, compression: { method: 'none' as const }, signingKeys: [], threads, jobs: 1 };
    const r1 = await uploadPaths([infos.get('left')!], opts);
    assert.equal(r1.failed[0]?.error.code, 'REFERENCE_MISSING');
    assert.ok(!backend.objects.has(narInfoKey(infos.get('left')!.path)));
    await uploadPaths([infos.get('base')!], opts);
    const r2 = await uploadPaths([infos.get('left')!], opts);
    assert.equal(r2.uploaded.length, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
