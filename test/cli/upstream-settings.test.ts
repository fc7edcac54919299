// Parsing --upstream-key, --upstream and --no-upstream: key names, URLs, and
// one-line errors for bad values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NarpushError } from '../../src/errors.js';
import { generateKeyPair } from '../../src/signing/keys.js';
import { upstreamCache, upstreamKeyName, upstreamSettings } from '../../src/cli/upstream-settings.js';

const oneLineError = (f: () => unknown, pattern: RegExp): void => {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof NarpushError, String(e));
    assert.equal(e.code, 'BAD_OPTION');
    assert.doesNotMatch(e.message, /\n/);
    assert.match(e.message, pattern);
    return true;
  });
};

test('a key name is taken as it is; a whole public key gives its name', () => {
  assert.equal(upstreamKeyName('cache.nixos.org-1'), 'cache.nixos.org-1');
  assert.equal(upstreamKeyName('cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='), 'cache.nixos.org-1');
  const { publicKey } = generateKeyPair('my-cache-7');
  assert.equal(upstreamKeyName(publicKey), 'my-cache-7');
});

test('bad key values are one-line errors', () => {
  oneLineError(() => upstreamKeyName(''), /--upstream-key '' is not a key name: the name is empty/);
  oneLineError(() => upstreamKeyName('two words'), /whitespace/);
  oneLineError(() => upstreamKeyName('bad\nname'), /--upstream-key 'bad\\x0aname'/);
  oneLineError(() => upstreamKeyName('cache.nixos.org-1:not base64!'), /not valid base64/);
  oneLineError(() => upstreamKeyName('cache.nixos.org-1:AAAA'), /has 3 bytes, expected 32/);
  oneLineError(() => upstreamKeyName(generateKeyPair('k').secretKey), /is a secret key/);
  oneLineError(() => upstreamKeyName(':6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='), /the name is empty/);
});

test('upstream URLs: http(s), file:// and s3://; anything else is a one-line error', () => {
  assert.deepEqual(upstreamCache('https://cache.nixos.org', '/'), { kind: 'http', url: 'https://cache.nixos.org/' });
  assert.deepEqual(upstreamCache('http://127.0.0.1:8080/sub/', '/'), { kind: 'http', url: 'http://127.0.0.1:8080/sub/' });
  const f = upstreamCache('file:///srv/cache', '/');
  assert.equal(f.kind === 'backend' && f.config.kind, 'file');
  const s = upstreamCache('s3://bucket?region=eu-west-1', '/');
  assert.equal(s.kind === 'backend' && s.config.kind, 's3');
  oneLineError(() => upstreamCache('cache.nixos.org', '/'), /--upstream takes an https:\/\/, http:\/\/, file:\/\/ or s3:\/\/ URL, not 'cache.nixos.org'/);
  oneLineError(() => upstreamCache('ftp://x', '/'), /not 'ftp:\/\/x'/);
  oneLineError(() => upstreamCache('http://[oops', '/'), /is not a valid URL/);
  oneLineError(() => upstreamCache('https://c.example?x=1', '/'), /takes no query/);
  oneLineError(() => upstreamCache('s3://', '/'), /^--upstream: invalid cache URL/);
});

test('defaults, replacement of the default list, and --no-upstream', () => {
  assert.deepEqual(upstreamSettings({}, '/'), { keyNames: ['cache.nixos.org-1'], caches: [] });
  assert.deepEqual(upstreamSettings({ upstreamKey: ['a', 'b', 'a'] }, '/').keyNames, ['a', 'b']);
  const both = upstreamSettings({ upstreamKey: ['a'], upstream: ['https://x.example'] }, '/');
  assert.deepEqual(both.keyNames, ['a']);
  assert.equal(both.caches.length, 1);
  assert.deepEqual(upstreamSettings({ noUpstream: true, upstream: ['https://x.example'] }, '/'), { keyNames: [], caches: [] });
  // A typo is reported even when filtering is off.
  oneLineError(() => upstreamSettings({ noUpstream: true, upstreamKey: ['a b'] }, '/'), /whitespace/);
});

test('--no-upstream-keys: no key, not even the default, and the caches alone; never with --upstream-key', () => {
  assert.deepEqual(upstreamSettings({ noUpstreamKeys: true }, '/'), { keyNames: [], caches: [] });
  const caches = upstreamSettings({ noUpstreamKeys: true, upstream: ['https://x.example', 'file:///srv/c'] }, '/');
  assert.deepEqual(caches.keyNames, []);
  assert.deepEqual(caches.caches.map((c) => c.kind), ['http', 'backend']);
  assert.deepEqual(upstreamSettings({ noUpstreamKeys: true, noUpstream: true, upstream: ['https://x.example'] }, '/'), { keyNames: [], caches: [] });
  oneLineError(() => upstreamSettings({ noUpstreamKeys: true, upstreamKey: ['a-1'] }, '/'), /--no-upstream-keys and --upstream-key contradict each other/);
});
