// The file:// backend's read side used by `narpush verify`: list walks the
// directory (never showing temporary files) and getStream streams a file.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ListedObject } from '../../src/cache/backend.js';
import { FileBackend, TEMP_MARKER } from '../../src/cache/file-backend.js';
import { stallingBody } from '../helpers/bodies.js';

const made: string[] = [];
after(() => Promise.all(made.map((d) => rm(d, { recursive: true, force: true }))));

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-file-read-'));
  made.push(dir);
  return dir;
}

async function all(it: AsyncIterable<ListedObject>): Promise<ListedObject[]> {
  const out: ListedObject[] = [];
  for await (const o of it) out.push(o);
  return out.sort((a, b) => (a.key < b.key ? -1 : 1));
}

test('list: every object with its size, by prefix, never a temporary file', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  await b.putBytes('nix-cache-info', Buffer.from('StoreDir: /nix/store\n'), 'text/x-nix-cache-info');
  await b.putBytes('aaaa.narinfo', Buffer.alloc(5), 'text/x-nix-narinfo');
  await b.putBytes('nar/x.nar.xz', Buffer.alloc(7), 'application/x-nix-nar');
  await b.putBytes('log/y.drv', Buffer.alloc(2), 'text/plain');
  // An upload in flight: its temporary file is on disk while the stream waits.
  const body = stallingBody(Buffer.alloc(100));
  const abort = new AbortController();
  const inFlight = b.putStream('nar/pending.nar', body, 'application/x-nix-nar', { signal: abort.signal });
  while (!(await readdir(path.join(dir, 'nar')).catch(() => [])).some((f) => f.includes(TEMP_MARKER))) await setImmediate();
  await writeFile(path.join(dir, 'nar', `.other.nar${TEMP_MARKER}abc-1.tmp`), 'x'); // another writer's
  await mkdir(path.join(dir, 'empty'));
  const listed = await all(b.list(''));
  abort.abort();
  await assert.rejects(inFlight);
  assert.deepEqual(
    listed.map((o) => [o.key, o.size]),
    [['aaaa.narinfo', 5], ['log/y.drv', 2], ['nar/x.nar.xz', 7], ['nix-cache-info', 21]],
  );
  assert.ok(listed.every((o) => o.lastModified.getTime() > 0));
  assert.deepEqual((await all(b.list('nar/'))).map((o) => o.key), ['nar/x.nar.xz']);
  assert.deepEqual((await all(b.list('n'))).map((o) => o.key), ['nar/x.nar.xz', 'nix-cache-info']);
  assert.deepEqual((await all(b.list('nar/x'))).map((o) => o.key), ['nar/x.nar.xz']);
  assert.deepEqual(await all(b.list('narpush-gc/')), [], 'a prefix naming a directory that is not there: nothing');
  await b.close();
});

test('list of a directory that does not exist is an error, as a missing bucket is', async () => {
  const b = new FileBackend(path.join(await freshDir(), 'nope'));
  await assert.rejects(all(b.list('')), { code: 'CACHE_NOT_FOUND' });
});

test('getStream: the bytes in pieces, undefined when missing, stops on abort', async () => {
  const dir = await freshDir();
  const b = new FileBackend(dir);
  const data = randomBytes(1024 * 1024 + 3);
  await b.putBytes('nar/a.nar', data, 'application/x-nix-nar');
  const chunks: Buffer[] = [];
  for await (const c of (await b.getStream('nar/a.nar'))!) chunks.push(Buffer.from(c));
  assert.ok(chunks.length > 1);
  assert.deepEqual(Buffer.concat(chunks), data);
  assert.equal(await b.getStream('nar/missing.nar'), undefined);
  const abort = new AbortController();
  const it = (await b.getStream('nar/a.nar', { signal: abort.signal }))![Symbol.asyncIterator]();
  await it.next();
  abort.abort();
  await assert.rejects(it.next(), { code: 'UPLOAD_ABORTED' });
});
