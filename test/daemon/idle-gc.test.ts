// The daemon's collection after going idle (src/daemon/idle-gc.ts): V8's
// full GC is really had and gives the garbage back; it runs once, the delay
// after the latest time the queue ran dry; cancel stops it; the timer never
// holds the process alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fullGc, idleCollector } from '../../src/daemon/idle-gc.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('fullGc: a real full collection, which frees what is no longer reachable', () => {
  const gc = fullGc();
  assert.equal(typeof gc, 'function');
  gc!();
  let junk: { s: string }[] | undefined = Array.from({ length: 300_000 }, (_, i) => ({ s: `narpush ${i}`.repeat(4) }));
  const withJunk = process.memoryUsage().heapUsed;
  assert.ok(junk.length > 0);
  junk = undefined;
  gc!();
  const after = process.memoryUsage().heapUsed;
  assert.ok(after < withJunk - (10 << 20), `heap ${withJunk} -> ${after} bytes`);
});

test('idleCollector: one collection, the delay after the latest schedule; cancel stops it', async () => {
  const DELAY = 80;
  const calls: number[] = [];
  const c = idleCollector(DELAY, () => calls.push(performance.now()));
  c.schedule();
  await sleep(DELAY / 2);
  const last = performance.now();
  c.schedule();
  await sleep(DELAY * 4);
  assert.equal(calls.length, 1, 'once');
  // A few ms of slack: a timer counts from the event loop's cached time.
  assert.ok(calls[0]! - last >= DELAY - 5, `ran ${calls[0]! - last} ms after the latest schedule`);

  c.schedule();
  c.cancel();
  await sleep(DELAY * 3);
  assert.equal(calls.length, 1, 'cancelled');
  assert.doesNotThrow(() => idleCollector(DELAY, undefined).schedule(), 'without a gc, nothing to do');
});

test('idleCollector: a scheduled collection does not keep the process alive', () => {
  const mod = fileURLToPath(new URL('../../src/daemon/idle-gc.js', import.meta.url));
  const script = `import(${JSON.stringify(mod)}).then(({ idleCollector }) => { idleCollector(60_000).schedule(); console.log('done'); })`;
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 30_000 });
  assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ''} ${r.stderr}`);
  assert.equal(r.stdout.toString().trim(), 'done');
});
