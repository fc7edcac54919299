// bin/narpush loads its bundles through V8's code cache (src/cli/code-cache.ts):
// a cache is used only when V8 accepts it and it is this user's own file,
// never for another source, and nothing about it can make a command fail.
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { chmod, chown, lstat, lutimes, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { codeCacheDir, commandOf } from '../../src/cli/code-cache.js';
import { NARPUSH_BIN, REPO_ROOT, run } from '../helpers/run.js';
import { mountTmpfs } from '../helpers/tmpfs.js';

/** A CommonJS module with some functions to compile; `n` changes its source, not its length. */
function moduleSource(n: number): string {
  return `'use strict';
function fib(k) { return k < 2 ? k : fib(k - 1) + fib(k - 2); }
function greet(name) { return 'hello ' + name + ' ${n}'; }
exports.value = fib(15) + ${n};
exports.greet = greet;
exports.dirname = __dirname;
exports.required = typeof require('node:path').join;
`;
}

const DAY = 24 * 3600_000;

/** Set a file's times `ms` into the past. */
async function age(file: string, ms: number): Promise<void> {
  const t = (Date.now() - ms) / 1000;
  await utimes(file, t, t);
}

async function withDir(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-code-cache-'));
  try {
    await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const LOADER = `
import { CodeCache } from ${JSON.stringify(pathToFileURL(path.join(REPO_ROOT, 'dist', 'src', 'cli', 'code-cache.js')).href)};
import { createRequire } from 'node:module';
import { basename } from 'node:path';
const [file, dir, command] = JSON.parse(process.argv[1]);
const cache = new CodeCache({ dir: dir ?? undefined, command });
const listed = () => createRequire(import.meta.url).cache[file];
let out;
try {
  const e = cache.load(file);
  out = { use: cache.uses().get(basename(file)), value: e.value, greet: e.greet('x'), dirname: e.dirname, required: e.required, listed: listed()?.exports === e };
} catch (err) {
  out = { error: err.message, listed: listed() !== undefined, uses: cache.uses().size };
}
cache.save();
process.stdout.write(JSON.stringify(out));
`;

interface Loaded {
  use?: string;
  value?: number;
  greet?: string;
  dirname?: string;
  required?: string;
  listed: boolean;
  error?: string;
  uses?: number;
}

/**
 * Load `file` through a new cache in a new process and save what it made.
 * A process of its own each time: V8 keeps what it compiled in memory, and
 * a second compile of the same source in one process would never consult
 * the cache file at all.
 */
async function loadOnce(file: string, dir: string | undefined, command = 'upload-path'): Promise<Loaded> {
  const r = await run(process.execPath, ['--input-type=module', '-e', LOADER, JSON.stringify([file, dir ?? null, command])]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as Loaded;
}

/** A bundle of moduleSource(n) in `dir` whose cache one run has saved: the files involved. */
async function cachedBundle(dir: string, n: number): Promise<{ file: string; cacheDir: string; cacheFile: string }> {
  const file = path.join(dir, 'b.cjs');
  const cacheDir = path.join(dir, 'cache');
  await writeFile(file, moduleSource(n));
  assert.equal((await loadOnce(file, cacheDir)).use, 'miss');
  const [name] = await readdir(cacheDir);
  return { file, cacheDir, cacheFile: path.join(cacheDir, name!) };
}

test('codeCacheDir follows Node\'s variables, then XDG_CACHE_HOME, then HOME', () => {
  assert.equal(codeCacheDir({ HOME: '/home/a' }), '/home/a/.cache/narpush/code-cache');
  assert.equal(codeCacheDir({ HOME: '/home/a', XDG_CACHE_HOME: '/x' }), '/x/narpush/code-cache');
  assert.equal(codeCacheDir({ HOME: '/home/a', XDG_CACHE_HOME: 'rel' }), '/home/a/.cache/narpush/code-cache', 'a relative XDG_CACHE_HOME is ignored');
  assert.equal(codeCacheDir({ HOME: '/home/a', NODE_COMPILE_CACHE: '/n' }), '/n/narpush');
  assert.equal(codeCacheDir({ HOME: '/home/a', NODE_DISABLE_COMPILE_CACHE: '1' }), undefined);
  assert.equal(codeCacheDir({ HOME: '/home/a', NODE_DISABLE_COMPILE_CACHE: '0' }), '/home/a/.cache/narpush/code-cache');
  assert.equal(codeCacheDir({}), undefined);
  assert.equal(codeCacheDir({ HOME: 'relative' }), undefined);
});

test('commandOf names the command, or none, in a file-name-safe word', () => {
  assert.equal(commandOf(['node', 'narpush', 'upload-path', '--to', 'x']), 'upload-path');
  assert.equal(commandOf(['node', 'narpush', '--debug', 'daemon']), 'daemon');
  assert.equal(commandOf(['node', 'narpush', '--version']), 'none');
  assert.equal(commandOf(['node', 'narpush', '../../etc']), 'none');
  assert.equal(commandOf(['node', 'narpush', 'upload-path', '--help']), 'none', 'help runs little of a command');
  assert.equal(commandOf(['node', 'narpush', '-h', 'daemon']), 'none');
  assert.equal(commandOf(['node', 'narpush', 'A'.repeat(5)]), 'none');
});

test('a bundle is compiled from its cache once one was saved, and behaves the same', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'b.cjs');
    await writeFile(file, moduleSource(1));
    const cacheDir = path.join(dir, 'cache', 'narpush', 'code-cache');
    const first = await loadOnce(file, cacheDir);
    assert.equal(first.use, 'miss');
    assert.equal(first.value, 611);
    assert.equal(first.greet, 'hello x 1');
    assert.equal(first.dirname, dir);
    assert.equal(first.required, 'function');
    assert.equal(first.listed, true, 'listed in require.cache');
    const files = await readdir(cacheDir);
    assert.equal(files.length, 1);
    assert.match(files[0]!, /^b\.cjs\.upload-path\.[0-9a-f]{32}\.v8$/);
    const st = await stat(path.join(cacheDir, files[0]!));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700);
    assert.equal((await stat(path.dirname(cacheDir))).mode & 0o777, 0o700);

    const second = await loadOnce(file, cacheDir);
    assert.equal(second.use, 'hit', 'V8 accepted the saved cache');
    assert.equal(second.value, 611);
    assert.equal(second.greet, 'hello x 1');
    const after = await stat(path.join(cacheDir, files[0]!));
    assert.equal(after.ino, st.ino, 'a cache that was used is not written again');

    // Another command keeps a cache of its own.
    assert.equal((await loadOnce(file, cacheDir, 'daemon')).use, 'miss');
    assert.equal((await readdir(cacheDir)).length, 2);
  });
});

test('a changed source never uses the old cache; the old cache stays while it is in use (another installation), and goes once unused for a week', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'b.cjs');
    const cacheDir = path.join(dir, 'cache');
    await writeFile(file, moduleSource(1));
    await loadOnce(file, cacheDir);
    await loadOnce(file, cacheDir, 'daemon');
    const [oldDaemon, oldUpload] = (await readdir(cacheDir)).sort();
    // Same length: V8's own check (the source's length) would not see the change.
    await writeFile(file, moduleSource(2));
    assert.equal(moduleSource(1).length, moduleSource(2).length);
    const changed = await loadOnce(file, cacheDir);
    assert.equal(changed.use, 'miss');
    assert.equal(changed.value, 612, 'the new source runs');
    assert.equal(changed.greet, 'hello x 2');
    const both = await readdir(cacheDir);
    assert.equal(both.length, 3, 'the other build\'s cache, used just now, is left alone');
    const newUpload = both.find((f) => f !== oldDaemon && f !== oldUpload)!;
    // The two builds take turns (two installations): each uses its own cache, none is written again.
    await writeFile(file, moduleSource(1));
    assert.equal((await loadOnce(file, cacheDir)).use, 'hit');
    await writeFile(file, moduleSource(2));
    assert.equal((await loadOnce(file, cacheDir)).use, 'hit');

    // The first build unused for 8 days; the daemon's cache for 6. The next cache written sweeps.
    await age(path.join(cacheDir, oldUpload!), 8 * DAY);
    await age(path.join(cacheDir, oldDaemon!), 6 * DAY);
    assert.equal((await loadOnce(file, cacheDir, 'path-info')).use, 'miss');
    const now = await readdir(cacheDir);
    assert.ok(!now.includes(oldUpload!), 'unused for a week: removed');
    assert.ok(now.includes(oldDaemon!), 'unused for 6 days: kept');
    assert.ok(now.includes(newUpload));
    assert.equal(now.length, 3);
  });
});

test('a cache in use is marked used once a day, and that run sweeps what is unused and what killed runs left half-written: only its own files, in its own directory', async () => {
  await withDir(async (dir) => {
    const { file, cacheDir, cacheFile } = await cachedBundle(dir, 4);
    const other = path.join(cacheDir, 'b.cjs.upload-path.0123456789abcdef0123456789abcdef.v8');
    const staleTemp = `${cacheFile}.12345.tmp`;
    const freshTemp = `${cacheFile}.12346.tmp`;
    const foreign = path.join(cacheDir, 'notes.txt');
    const foreignTemp = path.join(cacheDir, 'notes.txt.12347.tmp');
    const link = path.join(cacheDir, 'b.cjs.daemon.0123456789abcdef0123456789abcdef.v8');
    for (const f of [other, staleTemp, freshTemp, foreign, foreignTemp]) await writeFile(f, 'x', { mode: 0o600 });
    await symlink(foreign, link);
    for (const f of [other, foreign, foreignTemp]) await age(f, 30 * DAY);
    await age(staleTemp, 11 * 60_000);
    await lutimes(link, new Date(Date.now() - 30 * DAY), new Date(Date.now() - 30 * DAY));
    // As root: a file of a cache's name that another user owns is that user's business.
    const othersFile = path.join(cacheDir, 'b.cjs.gc.0123456789abcdef0123456789abcdef.v8');
    const asRoot = process.geteuid!() === 0;
    if (asRoot) {
      await writeFile(othersFile, 'x', { mode: 0o600 });
      await chown(othersFile, 65534, 65534);
      await age(othersFile, 30 * DAY);
    }
    const kept = [path.basename(cacheFile), path.basename(freshTemp), 'notes.txt', path.basename(foreignTemp), path.basename(link), ...(asRoot ? [path.basename(othersFile)] : [])];

    // Used within the day: nothing is written, nothing swept.
    await age(cacheFile, 23 * 3600_000);
    const before = (await stat(cacheFile)).mtimeMs;
    assert.equal((await loadOnce(file, cacheDir)).use, 'hit');
    assert.equal((await stat(cacheFile)).mtimeMs, before, 'not marked again within the day');
    assert.equal((await readdir(cacheDir)).length, kept.length + 2);

    // Last marked more than a day ago: marked now, and the directory swept.
    await age(cacheFile, 25 * 3600_000);
    const hit = await loadOnce(file, cacheDir);
    assert.equal(hit.use, 'hit');
    assert.equal(hit.value, 614);
    assert.ok(Date.now() - (await stat(cacheFile)).mtimeMs < 60_000, 'marked used now');
    assert.deepEqual((await readdir(cacheDir)).sort(), kept.sort(),
      'the week-old cache and the temporary file of a killed run are gone; a temporary file being written, files not of caches, a symlink and another user\'s file stay');

    // A cache directory reached through a symlink is used, but nothing is swept there.
    const viaLink = path.join(dir, 'via-link');
    await symlink(cacheDir, viaLink);
    const stale = path.join(cacheDir, 'b.cjs.path-info.0123456789abcdef0123456789abcdef.v8');
    await writeFile(stale, 'x', { mode: 0o600 });
    await age(stale, 30 * DAY);
    await age(cacheFile, 25 * 3600_000);
    assert.equal((await loadOnce(file, viaLink)).use, 'hit');
    assert.ok(Date.now() - (await stat(cacheFile)).mtimeMs < 60_000, 'marked used');
    assert.ok((await readdir(cacheDir)).includes(path.basename(stale)), 'not swept through a symlink');
  });
});

test('a cache on a read-only file system is used even when it cannot be marked as used', async (t) => {
  const fsys = await mountTmpfs(t, '8m');
  if (!fsys) return;
  const { file, cacheDir, cacheFile } = await cachedBundle(fsys.dir, 5);
  await age(cacheFile, 25 * 3600_000);
  const before = (await stat(cacheFile)).mtimeMs;
  const ro = spawnSync('mount', ['-o', 'remount,ro', fsys.dir], { encoding: 'utf8' });
  assert.equal(ro.status, 0, ro.stderr);
  try {
    const r = await loadOnce(file, cacheDir);
    assert.equal(r.use, 'hit');
    assert.equal(r.value, 615);
    assert.equal((await stat(cacheFile)).mtimeMs, before, 'not marked: read-only');
  } finally {
    spawnSync('mount', ['-o', 'remount,rw', fsys.dir]);
  }
});

test('a damaged cache is refused by V8, the bundle still runs, and the cache is written again', async () => {
  await withDir(async (dir) => {
    const { file, cacheDir, cacheFile } = await cachedBundle(dir, 3);
    for (const damage of [Buffer.alloc(0), Buffer.from('not a code cache'), (await readFile(cacheFile)).subarray(0, 200)]) {
      await rm(cacheFile);
      await writeFile(cacheFile, damage, { mode: 0o600 });
      const r = await loadOnce(file, cacheDir);
      assert.ok(r.use === 'rejected' || r.use === 'miss', `${damage.length} bytes: ${r.use}`);
      assert.equal(r.value, 613);
      assert.ok((await stat(cacheFile)).size > 200, 'written again at save');
      assert.equal((await loadOnce(file, cacheDir)).use, 'hit');
    }
  });
});

test('a cache file is used only if it is this user\'s own, not a symlink, and writable by no one else', async () => {
  await withDir(async (dir) => {
    const { file, cacheDir, cacheFile } = await cachedBundle(dir, 4);
    const good = await readFile(cacheFile);
    const put = async (mode: number, uid?: number): Promise<void> => {
      await rm(cacheFile, { force: true });
      await writeFile(cacheFile, good, { mode });
      await chmod(cacheFile, mode);
      if (uid !== undefined) await chown(cacheFile, uid, uid);
    };
    await put(0o600);
    assert.equal((await loadOnce(file, cacheDir)).use, 'hit', 'the check accepts a good file');
    await put(0o620);
    assert.equal((await loadOnce(file, cacheDir)).use, 'miss', 'group-writable');
    await put(0o602);
    assert.equal((await loadOnce(file, cacheDir)).use, 'miss', 'world-writable');
    if (process.geteuid!() === 0) {
      await put(0o600, 65534);
      assert.equal((await loadOnce(file, cacheDir)).use, 'miss', 'another user\'s file');
    }
    await rm(cacheFile);
    const elsewhere = path.join(dir, 'elsewhere.v8');
    await writeFile(elsewhere, good, { mode: 0o600 });
    await symlink(elsewhere, cacheFile);
    assert.equal((await loadOnce(file, cacheDir)).use, 'miss', 'a symlink');
    assert.ok(!(await lstat(cacheFile)).isSymbolicLink(), 'replaced by a file of its own at save');
  });
});

test('no cache directory, or one that cannot be made, changes nothing but the caching', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'b.cjs');
    await writeFile(file, moduleSource(5));
    const off = await loadOnce(file, undefined);
    assert.equal(off.use, 'off');
    assert.equal(off.value, 615);
    const blocked = path.join(dir, 'a-file');
    await writeFile(blocked, '');
    const r = await loadOnce(file, path.join(blocked, 'cache'));
    assert.equal(r.use, 'miss');
    assert.equal(r.value, 615);
  });
});

test('a bundle that throws while loading is not registered, and the error is the bundle\'s', async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, 'bad.cjs');
    await writeFile(file, "'use strict';\nthrow new Error('broken bundle');\n");
    const r = await loadOnce(file, path.join(dir, 'cache'), 'x');
    assert.equal(r.error, 'broken bundle');
    assert.equal(r.listed, false);
    assert.equal(r.uses, 0);
  });
});

test('bin/narpush writes its cache after a command that worked, uses it on the next run, and replaces a damaged one; --version and failed commands leave none', async () => {
  await withDir(async (dir) => {
    const env = { ...process.env, XDG_CACHE_HOME: dir, NODE_COMPILE_CACHE: '', NODE_DISABLE_COMPILE_CACHE: '' };
    const cacheDir = path.join(dir, 'narpush', 'code-cache');
    let n = 0;
    const generateKey = async (e: NodeJS.ProcessEnv): Promise<void> => {
      n++;
      const r = await run(process.execPath, [NARPUSH_BIN, 'generate-key', `k-${n}`, path.join(dir, `sk${n}`), path.join(dir, `pk${n}`)], { env: e });
      assert.equal(r.code, 0, r.stderr);
      assert.match(await readFile(path.join(dir, `pk${n}`), 'utf8'), new RegExp(`^k-${n}:`));
    };
    const version = await run(process.execPath, [NARPUSH_BIN, '--version'], { env });
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout.toString(), /^\d+\.\d+\.\d+\n$/);
    await assert.rejects(stat(cacheDir), { code: 'ENOENT' }, '--version: too little runs for a cache to pay');
    // A command that failed (here, at its arguments) ran little of its code: no cache from it.
    const failed = await run(process.execPath, [NARPUSH_BIN, 'generate-key', 'k-only'], { env });
    assert.equal(failed.code, 2, failed.stderr);
    await assert.rejects(stat(cacheDir), { code: 'ENOENT' }, 'a failed command leaves no cache');
    await generateKey(env);
    const files = (await readdir(cacheDir)).sort();
    assert.deepEqual(
      files.map((f) => f.replace(/\.[0-9a-f]{32}\./, '.#.')),
      ['commands.cjs.generate-key.#.v8', 'early-store.cjs.generate-key.#.v8', 'narpush.cjs.generate-key.#.v8'],
    );
    const inodes = async (): Promise<number[]> => Promise.all(files.map(async (f) => (await stat(path.join(cacheDir, f))).ino));
    const before = await inodes();
    await generateKey(env);
    assert.deepEqual(await inodes(), before, 'accepted by V8: not written again');
    await writeFile(path.join(cacheDir, files[0]!), 'garbage');
    await generateKey(env);
    assert.ok((await stat(path.join(cacheDir, files[0]!))).size > 1000, 'the damaged cache was replaced');
    const off = path.join(dir, 'off');
    await generateKey({ ...env, XDG_CACHE_HOME: off, NODE_DISABLE_COMPILE_CACHE: '1' });
    await assert.rejects(stat(off), { code: 'ENOENT' });
  });
});

test('bin/narpush run many times at once with no cache yet: every run works and the cache they leave is used', async () => {
  await withDir(async (dir) => {
    const env = { ...process.env, XDG_CACHE_HOME: dir, NODE_COMPILE_CACHE: '', NODE_DISABLE_COMPILE_CACHE: '' };
    const cacheDir = path.join(dir, 'narpush', 'code-cache');
    const generateKey = (n: number) =>
      run(process.execPath, [NARPUSH_BIN, 'generate-key', `k-${n}`, path.join(dir, `sk${n}`), path.join(dir, `pk${n}`)], { env });
    const runs = await Promise.all([1, 2, 3, 4, 5, 6].map(generateKey));
    for (const r of runs) assert.equal(r.code, 0, r.stderr);
    const files = (await readdir(cacheDir)).sort();
    assert.equal(files.length, 3, `one file a bundle, no temporary file left: ${files.join(', ')}`);
    const inodes = async (): Promise<number[]> => Promise.all(files.map(async (f) => (await stat(path.join(cacheDir, f))).ino));
    const before = await inodes();
    assert.equal((await generateKey(7)).code, 0);
    assert.deepEqual(await inodes(), before, 'what the racing runs left is accepted by V8');
  });
});
