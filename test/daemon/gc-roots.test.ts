// GC roots for queued work, with a fake store: the daemon's links exist
// before it acknowledges, go when a path is uploaded or given up, are put
// right at start (reconcile); the hook roots what it spools and exits 0
// when it cannot. The real collector is the referee in gc-roots.serial.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type FileHandle, lstat, lutimes, mkdir, open, readFile, readdir, readlink, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { DirSyncer } from '../../src/daemon/fs-util.js';
import { gcRootsDir, makeRootLinks, nixAutoRootsDir, registerIndirectRoots } from '../../src/daemon/gc-roots.js';
import { runHook } from '../../src/daemon/hook.js';
import type { HookRootStore } from '../../src/daemon/hook-roots.js';
import { RootKeeper, type RootStore } from '../../src/daemon/root-keeper.js';
import { spoolDir } from '../../src/daemon/spool.js';
import type { PathOutcome } from '../../src/daemon/worker.js';
import { REPO_ROOT, run } from '../helpers/run.js';
import { eventually, fakePath, startFakeDaemon, tempDir } from './fakes.js';

const HOOK = path.join(REPO_ROOT, 'bin', 'narpush-hook');

/** An upload that lasts until the daemon stops. */
const untilStopped = (_p: string, signal: AbortSignal): Promise<PathOutcome> =>
  new Promise((resolve) => signal.addEventListener('abort', () => resolve({ kind: 'failed', error: 'stopped' }), { once: true }));

/** A fake store for the daemon's roots: a .drv's outputs from `outputs`; every registration recorded. */
function fakeRoots(stateDir: string, outputs: ReadonlyMap<string, readonly string[]> = new Map()) {
  const registered: string[] = [];
  const problems: string[] = [];
  let failures = 0;
  const store: RootStore & { registered: string[]; problems: string[]; failNext(n: number): void } = {
    registered,
    problems,
    failNext: (n) => void (failures = n),
    expand: async (p) => [p, ...(outputs.get(p) ?? [])],
    register: async (links, paths) => {
      if (failures > 0) {
        failures--;
        throw new Error('nix-daemon: connection refused');
      }
      // What the collector would follow must be there when the store is told about it,
      // and the journal (the acknowledgement) must not have the path yet on first registration.
      for (const [i, l] of links.entries()) {
        if ((await readlink(l).catch(() => '')) !== paths[i]) problems.push(`${l} does not point at ${paths[i]}`);
      }
      registered.push(...links);
    },
  };
  return { store, dir: gcRootsDir(stateDir) };
}

async function links(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    // The daemon may remove one between the listing and the read.
    const target = await readlink(path.join(dir, n)).catch(() => undefined);
    if (target !== undefined) out.set(n, target);
  }
  return out;
}

test('the daemon makes and registers a root for each path before it acknowledges; the root goes once the path is uploaded or dropped', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [a, b, c, drv, drvOut] = [fakePath('a'), fakePath('b'), fakePath('c'), fakePath('x.drv'), fakePath('x')];
    const roots = fakeRoots(stateDir, new Map([[drv, [drvOut]]]));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const journalAtRegistration: string[] = [];
    const register = roots.store.register;
    const store: RootStore = {
      ...roots.store,
      register: async (l, p) => {
        journalAtRegistration.push(await readFile(path.join(stateDir, 'queue.journal'), 'utf8'));
        await register(l, p);
      },
    };
    const d = await startFakeDaemon({
      dir: t.dir,
      roots: store,
      outcome: async (p) => {
        await gate;
        if (p === b) return { kind: 'dropped', reason: 'no longer valid' };
        if (p === c) return { kind: 'failed', error: 'S3 is down' };
        return { kind: 'done' };
      },
      config: { retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } },
    });
    try {
      const h = await runHook({ OUT_PATHS: `${a} ${b} ${c}`, NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: stateDir });
      assert.equal(h.result, 'queued');
      const h2 = await runHook({ DRV_PATH: drv, NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: stateDir });
      assert.equal(h2.result, 'queued');
      // Acknowledged: every root is there, pointing at its path, and was registered while the journal lacked the path.
      const base = (p: string) => path.basename(p);
      assert.deepEqual(
        [...(await links(roots.dir)).entries()].sort(),
        [a, b, c, drv, drvOut].map((p) => [base(p), p]).sort(),
      );
      assert.deepEqual([...roots.store.registered].sort(), [a, b, c, drv, drvOut].map((p) => path.join(roots.dir, base(p))).sort());
      assert.deepEqual(roots.store.problems, []);
      // One registration per request, each before the journal (and so the acknowledgement) had its paths.
      assert.equal(journalAtRegistration.length, 2);
      assert.ok(!journalAtRegistration[0]!.includes(a), 'a registered before it was journaled');
      assert.ok(journalAtRegistration[1]!.includes(a) && !journalAtRegistration[1]!.includes(drv), 'the .drv registered before it was journaled');

      release();
      await eventually(() => d.done.has(a) && d.done.has(drv), 5000, 'uploads');
      await eventually(async () => (await links(roots.dir)).size === 1, 5000, 'roots of done and dropped paths removed');
      assert.deepEqual([...(await links(roots.dir)).keys()], [base(c)], 'the failing path keeps its root');
    } finally {
      release();
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

test('a path the daemon rejects (not valid in the store) loses the root the hook made for it', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [gone, kept] = [fakePath('gone'), fakePath('kept')];
    await makeRootLinks(gcRootsDir(stateDir), [gone, kept]);
    const roots = fakeRoots(stateDir);
    const d = await startFakeDaemon({ dir: t.dir, roots: roots.store, valid: (p) => p !== gone, outcome: untilStopped });
    try {
      const h = await runHook({ OUT_PATHS: `${gone} ${kept}`, NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: stateDir });
      assert.equal(h.result, 'rejected');
      await eventually(async () => !(await links(roots.dir)).has(path.basename(gone)), 5000, 'root of the rejected path removed');
      assert.ok((await links(roots.dir)).has(path.basename(kept)));
    } finally {
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

test('at start the daemon reconciles: roots for journaled paths that had none, none for paths neither journaled nor spooled', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [journaled, stale, spooled, spooledDrv, spooledOut] = [fakePath('journaled'), fakePath('stale'), fakePath('spooled'), fakePath('s.drv'), fakePath('s')];
    await mkdir(spoolDir(stateDir), { recursive: true });
    // A state directory from before roots: a journal without links; a link nobody needs; a spool file with its links.
    await writeFile(path.join(stateDir, 'queue.journal'), `${JSON.stringify({ op: 'queued', path: journaled, at: 1 })}\n`);
    await writeFile(path.join(spoolDir(stateDir), '00000000000001-1-aaaaaaaaaaaa.req'), `${JSON.stringify({ op: 'enqueue', paths: [spooled] })}\n`);
    await writeFile(path.join(spoolDir(stateDir), '00000000000002-1-aaaaaaaaaaab.req'), `${JSON.stringify({ op: 'enqueue', paths: [], drv: spooledDrv })}\n`);
    await makeRootLinks(gcRootsDir(stateDir), [stale, spooled, spooledDrv, spooledOut]);
    // A temporary link a killed hook left an hour ago.
    await symlink('/nix/store/whatever', path.join(gcRootsDir(stateDir), '.tmp-1-000000000000'));
    const anHourAgo = new Date(Date.now() - 3600_000);
    await lutimes(path.join(gcRootsDir(stateDir), '.tmp-1-000000000000'), anHourAgo, anHourAgo);
    const roots = fakeRoots(stateDir, new Map([[spooledDrv, [spooledOut]]]));
    const d = await startFakeDaemon({ dir: t.dir, roots: roots.store, outcome: untilStopped });
    try {
      const now = await links(roots.dir);
      assert.deepEqual([...now.keys()].sort(), [journaled, spooled, spooledDrv, spooledOut].map((p) => path.basename(p)).sort());
      assert.equal(now.get(path.basename(journaled)), journaled);
      for (const p of [journaled, spooled, spooledDrv, spooledOut]) assert.ok(roots.store.registered.includes(path.join(roots.dir, path.basename(p))), `${p} registered`);
      assert.ok(d.logs.some((l) => l.event === 'warning' && /removed 1 GC root/.test(l.detail ?? '')), JSON.stringify(d.logs));
    } finally {
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

test('the nix-daemon unreachable: the daemon still acknowledges (the link is on disk) and registers the root once it can', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const p = fakePath('p');
    const roots = fakeRoots(stateDir);
    const d = await startFakeDaemon({ dir: t.dir, roots: roots.store, outcome: untilStopped });
    try {
      roots.store.failNext(2);
      assert.equal((await runHook({ OUT_PATHS: p, NARPUSH_SOCKET: d.socket, NARPUSH_STATE_DIR: stateDir })).result, 'queued');
      assert.equal(await readlink(path.join(roots.dir, path.basename(p))), p);
      assert.ok(d.logs.some((l) => /cannot register 1 GC root/.test(l.detail ?? '')));
      await eventually(() => roots.store.registered.includes(path.join(roots.dir, path.basename(p))), 5000, 'registered later');
    } finally {
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

/** A fake nix-daemon for the hook. */
function hookStore(outputs: ReadonlyMap<string, string[]> = new Map()): HookRootStore & { registered: string[]; closed: number } {
  const s = {
    registered: [] as string[],
    closed: 0,
    outputs: async (drv: string) => outputs.get(drv) ?? [],
    register: async (l: readonly string[]) => void s.registered.push(...l),
    close: async () => void s.closed++,
  };
  return s;
}

test('the hook, spooling, makes and registers the same roots the daemon would (a .drv with its outputs), after the spool file', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [a, drv, out, dev] = [fakePath('a'), fakePath('y.drv'), fakePath('y'), fakePath('y-dev')];
    const store = hookStore(new Map([[drv, [out, dev]]]));
    let spooledFirst = true;
    const open = async (): Promise<HookRootStore> => {
      spooledFirst &&= (await readdir(spoolDir(stateDir))).length > 0;
      return store;
    };
    const sock = path.join(t.dir, 'nobody.sock');
    const h1 = await runHook({ OUT_PATHS: `${a} /etc/passwd`, NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: stateDir }, { openRootStore: open });
    const h2 = await runHook({ DRV_PATH: drv, NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: stateDir }, { openRootStore: open });
    for (const h of [h1, h2]) {
      assert.equal(h.result, 'spooled');
      assert.doesNotMatch(h.message!, /GC root/);
    }
    assert.ok(spooledFirst, 'the spool file is durable before any root is made');
    const dir = gcRootsDir(stateDir);
    assert.deepEqual([...(await links(dir)).entries()].sort(), [a, drv, out, dev].map((p) => [path.basename(p), p]).sort(), 'no link for a path outside the store');
    assert.deepEqual(store.registered.sort(), [a, drv, out, dev].map((p) => path.join(dir, path.basename(p))).sort());
    assert.equal(store.closed, 2);

    // The daemon adopts them: it holds them as its own and removes them after the upload.
    const roots = fakeRoots(stateDir, new Map([[drv, [out, dev]]]));
    const d = await startFakeDaemon({ dir: t.dir, roots: roots.store });
    try {
      await eventually(() => d.done.has(a) && d.done.has(drv), 5000, 'uploads');
      await eventually(async () => (await links(dir)).size === 0, 5000, 'roots removed after upload');
    } finally {
      await d.stop();
    }
  } finally {
    await t.remove();
  }
});

test('the hook cannot register a root: it still spools, says so in one line, and never fails the build', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const sock = path.join(t.dir, 'nobody.sock');
    const refused = await runHook(
      { OUT_PATHS: fakePath('a'), NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: stateDir },
      { openRootStore: () => Promise.reject(new Error('cannot connect to the Nix daemon')) },
    );
    assert.equal(refused.result, 'spooled');
    assert.match(refused.message!, /spooled the request .*, but the garbage collector may delete its paths first \(no GC root: cannot connect to the Nix daemon\)$/);
    const hung = await runHook(
      { OUT_PATHS: fakePath('b'), NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: stateDir },
      { openRootStore: () => new Promise(() => {}), rootTimeoutMs: 100 },
    );
    assert.equal(hung.result, 'spooled');
    assert.match(hung.message!, /no GC root: the Nix daemon did not answer within 100 ms/);
    assert.equal((await readdir(spoolDir(stateDir))).length, 2);

    // The program, as Nix runs it, with a Nix daemon socket that does not exist.
    const clean = { ...process.env };
    delete clean.OUT_PATHS;
    delete clean.DRV_PATH;
    const r = await run(HOOK, [], {
      env: { ...clean, OUT_PATHS: fakePath('c'), NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: stateDir, NIX_REMOTE: `unix://${t.dir}/no-nix-daemon` },
    });
    assert.equal(r.code, 0);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
    assert.match(r.stderr, /^narpush-hook: no narpush daemon .*; spooled the request .*no GC root: cannot connect to the Nix daemon at .*\n$/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal((await readdir(spoolDir(stateDir))).length, 3);
  } finally {
    await t.remove();
  }
});

test('RootKeeper: a root shared by two queued paths stays until both are released; a path queued again keeps its root', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [d1, d2, shared, own] = [fakePath('one.drv'), fakePath('two.drv'), fakePath('shared'), fakePath('own')];
    const roots = fakeRoots(stateDir, new Map([[d1, [shared, own]], [d2, [shared]]]));
    const requeued = new Set<string>();
    const keeper = new RootKeeper(roots.dir, roots.store, () => {}, (p) => requeued.has(p));
    assert.deepEqual(await keeper.hold([d1, d2]), [d1, d2]);
    assert.deepEqual(await keeper.hold([d1]), [], 'already held');
    await keeper.release([d1]);
    assert.deepEqual([...(await links(roots.dir)).keys()].sort(), [d2, shared].map((p) => path.basename(p)).sort());
    requeued.add(d2);
    await keeper.release([d2]);
    assert.equal((await links(roots.dir)).size, 2, 'queued again: kept');
    requeued.clear();
    await keeper.release([d2]);
    assert.equal((await links(roots.dir)).size, 0);
  } finally {
    await t.remove();
  }
});

test('a state directory whose gcroots/ is not a writable directory: the daemon refuses to start, in one line', async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    await mkdir(stateDir);
    await writeFile(path.join(stateDir, 'gcroots'), 'not a directory');
    await assert.rejects(startFakeDaemon({ dir: t.dir, roots: fakeRoots(stateDir).store }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'STATE_DIR_UNUSABLE');
      assert.match(e.message, /^cannot use the state directory .*state \(ENOTDIR\); create it writable for the daemon or choose another --state-dir$/);
      return true;
    });
  } finally {
    await t.remove();
  }
});

test('makeRootLinks: makes missing directories and new links; keeps a right link as it is; replaces a wrong link or a file atomically, leaving no temporary name', async () => {
  const t = await tempDir();
  try {
    const dir = gcRootsDir(path.join(t.dir, 'state'));
    const [a, b, c] = [fakePath('a'), fakePath('b'), fakePath('c')];
    // Neither the state directory nor gcroots/ exists yet.
    assert.deepEqual(await makeRootLinks(dir, [a, b]), [a, b].map((p) => path.join(dir, path.basename(p))));
    assert.deepEqual([...(await links(dir)).entries()].sort(), [a, b].map((p) => [path.basename(p), p]).sort());
    const inode = (await lstat(path.join(dir, path.basename(a)))).ino;
    // The name taken by a link to something else, and by a regular file.
    await writeFile(path.join(dir, path.basename(c)), 'not a link');
    await unlink(path.join(dir, path.basename(b)));
    await symlink(fakePath('elsewhere'), path.join(dir, path.basename(b)));
    await makeRootLinks(dir, [a, b, c]);
    assert.deepEqual([...(await links(dir)).entries()].sort(), [a, b, c].map((p) => [path.basename(p), p]).sort());
    assert.equal((await lstat(path.join(dir, path.basename(a)))).ino, inode, 'a right link is left alone');
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.')), [], 'no temporary name left');
    // gcroots/ is a file: the error, and the file left as it was.
    const blocked = path.join(t.dir, 'blocked');
    await mkdir(blocked);
    await writeFile(path.join(blocked, 'gcroots'), 'a file');
    await assert.rejects(makeRootLinks(gcRootsDir(blocked), [a]), { code: 'ENOTDIR' });
    assert.equal(await readFile(path.join(blocked, 'gcroots'), 'utf8'), 'a file');
  } finally {
    await t.remove();
  }
});

test("registerIndirectRoots: registers every link, then syncs Nix's gcroots/auto; a sync that fails is reported, not thrown; a registration that fails throws before any sync", async () => {
  const t = await tempDir();
  try {
    const events: string[] = [];
    const client = {
      addIndirectRoot: async (l: string): Promise<void> => {
        await new Promise((r) => setTimeout(r, 5));
        events.push(`register ${l}`);
      },
    };
    const sync = async (dir: string): Promise<void> => void events.push(`sync ${dir}`);
    assert.equal(await registerIndirectRoots(client, ['/a', '/b'], '/auto', sync), undefined);
    assert.deepEqual(events, ['register /a', 'register /b', 'sync /auto'], 'synced once, after every registration');
    events.length = 0;
    assert.equal(await registerIndirectRoots(client, [], '/auto', sync), undefined);
    assert.deepEqual(events, [], 'nothing registered, nothing synced');
    // The real sync: a directory that exists, and one that does not.
    const auto = path.join(t.dir, 'gcroots', 'auto');
    await mkdir(auto, { recursive: true });
    assert.equal(await registerIndirectRoots(client, ['/c'], auto), undefined);
    assert.equal(await registerIndirectRoots(client, ['/c'], path.join(t.dir, 'missing')), `cannot sync ${path.join(t.dir, 'missing')} (ENOENT)`);
    const failing = { addIndirectRoot: async (): Promise<void> => Promise.reject(new Error('nix-daemon: connection refused')) };
    events.length = 0;
    await assert.rejects(registerIndirectRoots(failing, ['/d'], '/auto', sync), /connection refused/);
    assert.deepEqual(events, [], 'no sync after a failed registration');
    assert.equal(nixAutoRootsDir({}), '/nix/var/nix/gcroots/auto');
    assert.equal(nixAutoRootsDir({ NIX_STATE_DIR: '/srv/nix/var' }), '/srv/nix/var/gcroots/auto');
  } finally {
    await t.remove();
  }
});

/** A DirSyncer whose directory handles are counted: opens, syncs (and which inode each synced), closes; `failSyncs` makes the next syncs fail. */
function countingSyncer() {
  const seen = { opens: 0, syncs: [] as number[], closes: 0, failSyncs: 0, gate: Promise.resolve() };
  const syncer = new DirSyncer(async (dir) => {
    seen.opens++;
    const h = await open(dir, 'r');
    const ino = (await h.stat()).ino;
    return {
      sync: async () => {
        await seen.gate;
        if (seen.failSyncs > 0) {
          seen.failSyncs--;
          throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
        }
        await h.sync();
        seen.syncs.push(ino);
      },
      close: async () => {
        seen.closes++;
        await h.close();
      },
    } as unknown as FileHandle;
  });
  return { syncer, seen };
}

test('DirSyncer: one open per directory for any number of syncs; a forgotten directory, or one whose sync failed, is opened again; close gives the handles back', async () => {
  const t = await tempDir();
  try {
    const [a, b] = [path.join(t.dir, 'a'), path.join(t.dir, 'b')];
    await mkdir(a);
    await mkdir(b);
    const { syncer, seen } = countingSyncer();
    await Promise.all([syncer.sync(a), syncer.sync(a), syncer.sync(b)]);
    await syncer.sync(a);
    assert.equal(seen.opens, 2, 'each directory opened once');
    assert.equal(seen.syncs.length, 4);
    // Made again: the kept handle would sync the old directory until it is forgotten.
    await rm(a, { recursive: true });
    await mkdir(a);
    const inoA = (await lstat(a)).ino;
    syncer.forget(a);
    await syncer.sync(a);
    assert.equal(seen.opens, 3);
    assert.equal(seen.syncs.at(-1), inoA, 'the new directory is synced');
    // A sync that fails is an error, and the next one opens the directory again.
    seen.failSyncs = 1;
    await assert.rejects(syncer.sync(b), { code: 'EIO' });
    await syncer.sync(b);
    assert.equal(seen.opens, 4);
    await assert.rejects(syncer.sync(path.join(t.dir, 'missing')), { code: 'ENOENT' });
    await syncer.sync(path.join(t.dir, 'b'));
    assert.equal(seen.opens, 5, 'a directory that could not be opened is not kept');
    await syncer.close();
    assert.equal(seen.closes, 4, 'every handle opened (four: the missing one never was) closed once, the forgotten and failed ones included');
    await syncer.sync(a);
    assert.equal(seen.opens, 5, 'after close: synced without keeping a handle');
  } finally {
    await t.remove();
  }
});

test("RootKeeper: syncs the links' directory once per change through one kept handle, and the new directory when it had to be made again", async () => {
  const t = await tempDir();
  try {
    const stateDir = path.join(t.dir, 'state');
    const [a, b, c] = [fakePath('a'), fakePath('b'), fakePath('c')];
    const roots = fakeRoots(stateDir);
    const { syncer, seen } = countingSyncer();
    const keeper = new RootKeeper(roots.dir, roots.store, () => {}, () => false, syncer);
    await keeper.hold([a]);
    await keeper.hold([b]);
    assert.deepEqual([seen.opens, seen.syncs.length], [1, 2], 'two changes, two syncs, one open');
    await keeper.hold([a]);
    assert.equal(seen.syncs.length, 2, 'nothing changed, nothing synced');
    // The state directory removed under the running daemon: made again, and the new gcroots/ synced.
    await rm(stateDir, { recursive: true });
    await keeper.hold([c]);
    assert.equal(seen.opens, 2);
    assert.equal(seen.syncs.at(-1), (await lstat(roots.dir)).ino);
    assert.deepEqual([...(await links(roots.dir)).keys()], [path.basename(c)]);
    // A sync that fails: hold throws and the path is not held; its link, which exists, is still
    // registered. The next hold of it syncs the directory again, though the link is in place.
    seen.failSyncs = 1;
    const d = fakePath('d');
    await assert.rejects(keeper.hold([d]), { code: 'EIO' });
    await eventually(() => roots.store.registered.includes(path.join(roots.dir, path.basename(d))), 5000, 'the link registered');
    const syncs = seen.syncs.length;
    assert.deepEqual(await keeper.hold([d]), [d], 'not held before: fresh again');
    assert.equal(seen.syncs.length, syncs + 1, 'synced again after the failed sync');
    await keeper.hold([d]);
    assert.equal(seen.syncs.length, syncs + 1, 'and then not again');
    // A hold that finds its link already made by another hold still being synced waits for that sync.
    let open!: () => void;
    seen.gate = new Promise<void>((r) => (open = r));
    const e = fakePath('e');
    let first = false;
    let second = false;
    const p1 = keeper.hold([e]).then(() => void (first = true));
    const p2 = keeper.hold([e]).then(() => void (second = true));
    await eventually(async () => (await links(roots.dir)).has(path.basename(e)), 5000, 'the link made');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual([first, second], [false, false], 'neither resolves before the link is synced');
    open();
    await Promise.all([p1, p2]);
    await keeper.close();
    assert.equal(seen.closes, seen.opens, 'every handle closed');
  } finally {
    await t.remove();
  }
});
