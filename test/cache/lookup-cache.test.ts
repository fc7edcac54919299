// The bounded, expiring answer cache behind the daemon's upstream lookups.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LookupCache } from '../../src/cache/lookup-cache.js';

test('bounded: past maxEntries the least recently used entry goes', () => {
  const c = new LookupCache<string>({ maxEntries: 3, ttlMs: Infinity });
  c.set('a', '1');
  c.set('b', '2');
  c.set('c', '3');
  assert.equal(c.get('a'), '1'); // a is now the most recently used
  c.set('d', '4');
  assert.equal(c.size, 3);
  assert.equal(c.get('b'), undefined, 'b was the least recently used');
  assert.deepEqual(['a', 'c', 'd'].map((k) => c.get(k)), ['1', '3', '4']);
  // Setting a present key does not grow the cache.
  c.set('d', '5');
  assert.equal(c.size, 3);
  assert.equal(c.get('d'), '5');
});

test('bounded under many distinct keys', () => {
  const c = new LookupCache<number>({ maxEntries: 100, ttlMs: Infinity });
  for (let i = 0; i < 10_000; i++) c.set(`k${i}`, i);
  assert.equal(c.size, 100);
  assert.equal(c.get('k9999'), 9999);
  assert.equal(c.get('k9899'), undefined);
  assert.equal(c.get('k9900'), 9900);
});

test('expiring: an entry is gone ttlMs after it was set; a per-entry TTL overrides', () => {
  let now = 1_000;
  const c = new LookupCache<string>({ maxEntries: 10, ttlMs: 500, now: () => now });
  c.set('long', 'x');
  c.set('short', '', 100);
  now += 99;
  assert.equal(c.get('short'), '');
  now += 1;
  assert.equal(c.get('short'), undefined, 'expired at exactly its TTL');
  assert.equal(c.get('long'), 'x');
  now += 400;
  assert.equal(c.get('long'), undefined);
  assert.equal(c.size, 0, 'expired entries are dropped when read');
  // Reading does not extend a life; setting again does.
  c.set('k', 'v');
  now += 300;
  assert.equal(c.get('k'), 'v');
  now += 200;
  assert.equal(c.get('k'), undefined);
});

test('a cache must hold at least one entry', () => {
  assert.throws(() => new LookupCache({ maxEntries: 0, ttlMs: 1 }), RangeError);
});
