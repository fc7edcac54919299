// narpush gc against a real S3 implementation (Ceph RGW; s3rver cannot list
// multipart uploads): multipart uploads begun more than --grace ago are
// aborted, younger ones are left alone; and the uploader's renewal (a copy
// onto itself) really renews LastModified there. Durations are seconds
// (--grace 2s): RGW's times cannot be set.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, HeadObjectCommand, ListMultipartUploadsCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { brotliCompressSync } from 'node:zlib';
import type { CacheBackend } from '../../src/cache/backend.js';
import { parseCacheUrl } from '../../src/cli/cache-url.js';
import { openS3Backend } from '../../src/s3/s3-backend.js';
import type { S3Config } from '../../src/s3/s3-config.js';
import { narpush } from '../helpers/run.js';
import { type RgwHandle, startRgw } from '../helpers/rgw.js';

const BUCKET = 'narpush-gc';
let rgw: RgwHandle | undefined;
let client: S3Client;
let backend: CacheBackend;

before(async () => {
  rgw = await startRgw({ bucket: BUCKET });
  client = rgw.client;
  backend = await openS3Backend(parseCacheUrl(rgw.url) as S3Config, { credentials: rgw.credentials });
  await backend.putBytes('nix-cache-info', Buffer.from('StoreDir: /nix/store\n'), 'text/x-nix-cache-info');
});

after(async () => {
  await backend?.close();
  await rgw?.stop();
});

async function pending(): Promise<string[]> {
  const r = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }));
  return (r.Uploads ?? []).map((u) => u.Key!).sort();
}

async function begin(key: string): Promise<string> {
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  await client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: 1, Body: Buffer.alloc(1024, 7) }));
  return UploadId!;
}

test('rgw: multipart uploads older than --grace are aborted, younger ones stay; --dry-run aborts none', async () => {
  assert.ok(rgw, 'radosgw started');
  await begin('nar/orphan.nar.xz');
  await sleep(3000);
  const young = await begin('nar/in-progress.nar.xz');
  const args = ['gc', '--cache', rgw.url, '--keep-since', '30d', '--grace', '2s', '--json'];
  const env = { ...process.env, ...rgw.env };
  const dry = await narpush([...args, '--dry-run'], { env });
  assert.equal(dry.code, 0, dry.stderr);
  assert.equal((JSON.parse(dry.stdout.toString('utf8')) as { abortedUploads: number }).abortedUploads, 1);
  assert.deepEqual(await pending(), ['nar/in-progress.nar.xz', 'nar/orphan.nar.xz'], '--dry-run aborts nothing');
  const r = await narpush(args, { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout.toString('utf8')) as { abortedUploads: number }).abortedUploads, 1);
  assert.deepEqual(await pending(), ['nar/in-progress.nar.xz']);
  await client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'nar/in-progress.nar.xz', UploadId: young }));
});

test('rgw: an upload renewing a narinfo (copy onto itself) renews its LastModified and keeps its bytes and Content-Encoding', async () => {
  assert.ok(rgw, 'radosgw started');
  const key = '00000000000000000000000000000000.narinfo';
  await backend.putBytes(key, Buffer.from('StorePath: /nix/store/00000000000000000000000000000000-x\n'), 'text/x-nix-narinfo');
  const first = (await backend.stat!(key))!;
  await sleep(1500);
  assert.equal(await backend.touch!(key, 'text/x-nix-narinfo'), true);
  const second = (await backend.stat!(key))!;
  assert.ok(second.lastModified > first.lastModified, `${second.lastModified.toISOString()} after ${first.lastModified.toISOString()}`);
  assert.equal((await backend.get(key))!.toString(), 'StorePath: /nix/store/00000000000000000000000000000000-x\n');
  assert.equal(await backend.touch!('11111111111111111111111111111111.narinfo', 'text/x-nix-narinfo'), false, 'never creates');

  // A narinfo Nix wrote with narinfo-compression=br keeps its Content-Encoding through the copy.
  const text = 'StorePath: /nix/store/00000000000000000000000000000000-x\n';
  await backend.putBytes(key, brotliCompressSync(text), 'text/x-nix-narinfo', { contentEncoding: 'br' });
  assert.equal(await backend.touch!(key, 'text/x-nix-narinfo'), true);
  const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
  assert.equal(head.ContentEncoding, 'br', 'the renewal kept Content-Encoding: br');
  assert.equal((await backend.get(key))!.toString(), text);
  assert.deepEqual(await backend.deleteMany!([key, 'nar/never-existed.nar']), [undefined, undefined]);
  assert.equal(await backend.exists(key), false);
});
