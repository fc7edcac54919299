// The http(s) upstream's reads against a local server: narinfos served with
// a Content-Encoding fetch undoes itself (br, gzip), one it leaves (xz, as
// Nix's narinfo-compression=xz behind a server that passes the encoding on),
// plain ones, missing ones, and encoded garbage.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { HttpNarInfoSource } from '../../src/cache/http-source.js';
import { compressBuffer } from '../../src/cache/compression.js';

const TEXT = Buffer.from(`StorePath: /nix/store/${'a'.repeat(32)}-x\nURL: nar/x.nar.xz\nCompression: xz\n`);
const objects = new Map<string, { body: Buffer; encoding?: string }>();
let server: Server;
let source: HttpNarInfoSource;

before(async () => {
  objects.set('/plain.narinfo', { body: TEXT });
  objects.set('/br.narinfo', { body: brotliCompressSync(TEXT), encoding: 'br' });
  objects.set('/gzip.narinfo', { body: gzipSync(TEXT), encoding: 'gzip' });
  objects.set('/xz.narinfo', { body: await compressBuffer({ method: 'xz' }, TEXT), encoding: 'xz' });
  // Says xz, is not: left as it is (and found not to be a narinfo by its reader).
  objects.set('/not-xz.narinfo', { body: TEXT, encoding: 'xz' });
  // Says xz, starts like xz, is not.
  objects.set('/bad-xz.narinfo', { body: Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.from('garbage')]), encoding: 'xz' });
  server = createServer((req, res) => {
    const o = objects.get(req.url ?? '');
    if (!o) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': o.body.length, ...(o.encoding ? { 'content-encoding': o.encoding } : {}) }).end(o.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  source = new HttpNarInfoSource(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});

after(async () => {
  await source?.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test('narinfos come back as text whatever their Content-Encoding: br and gzip (fetch), xz (here), none', async () => {
  for (const name of ['plain', 'br', 'gzip', 'xz']) {
    const got = await source.get(`${name}.narinfo`);
    assert.ok(got?.equals(TEXT), `${name}: ${got?.subarray(0, 20).toString('hex')}`);
  }
  assert.equal(await source.get('missing.narinfo'), undefined);
  assert.ok((await source.get('not-xz.narinfo'))?.equals(TEXT), 'a body that is not xz is left as it is');
  await assert.rejects(source.get('bad-xz.narinfo'), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'UPSTREAM_FAILED');
    assert.match(e.message, /bad-xz\.narinfo from http:\/\/127\.0\.0\.1:\d+ is not valid xz/);
    assert.equal(e.message.split('\n').length, 1);
    return true;
  });
});
