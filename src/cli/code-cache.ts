/**
 * How bin/narpush loads its bundles (scripts/bundle.mjs): through V8's code
 * cache, kept per user, so that a command does not compile the same
 * JavaScript again on every start.
 *
 * Compiling is a large part of a small job's time: the bundles are ~450 KB
 * of source, and V8 compiles each function the first time it runs. A cache
 * written after the command has run (`Script.createCachedData()` at exit)
 * holds the bytecode of every function that ran, not only of the top level
 * (which is all Node's own compile cache, `module.enableCompileCache()` of
 * Node 22+, keeps: it is written right after compiling). The next run of
 * the same command skips all of it.
 *
 * Where: `$NODE_COMPILE_CACHE/narpush` when that is set (Node's variable
 * for where compiled code goes), else `$XDG_CACHE_HOME/narpush/code-cache`,
 * else `~/.cache/narpush/code-cache`. `NODE_DISABLE_COMPILE_CACHE=1` (Node's
 * switch for its own cache) turns it off; so does running no command
 * (`--version`, `--help`): V8 reads a cache whole, which costs more than
 * compiling the little such a run needs. Without a cache a bundle is loaded
 * by Node's own require(). Nothing here is ever an error:
 * a directory that cannot be made or written, a file that cannot be read,
 * a cache V8 refuses: the bundle is compiled from source as without it.
 *
 * Trust: bytecode is code. A cache file is used only if it is a regular
 * file (not followed through a symlink) owned by this process's user and
 * writable by nobody else, so no other user can plant code in a command
 * run as root (as under `sudo` with another user's HOME). Files are written
 * under a temporary name with mode 0600, synced, then renamed, so a crash
 * leaves no half-written cache.
 *
 * Validity: the file's name carries a digest of the bundle's source, the
 * Node version, the architecture and the node flags (V8 refuses a cache
 * made by another V8 or with other flags, and checks only the source's
 * length itself). It also carries the command (`upload-path`, `daemon`...):
 * the entry bundle runs different functions for each, and the first
 * command's cache would otherwise stay the only one. A cache is written (or
 * a refused one replaced) at exit, and only when the command worked: one
 * that failed early ran little of its code.
 *
 * Clean-up: a file's modification time says when it was last used (a run
 * that uses a cache older than a day sets it to now). A cache no run has
 * used for a week (an older build's) and a temporary file of a run killed
 * while writing are removed by the next run that writes a cache or sets a
 * time (files of these names and this user's only, in a directory of this
 * user's that is not a symlink). Not at once: two installations of
 * different builds may share the directory (a system's narpush and a
 * checkout's), and each removing the other's cache would have both compile
 * every time. A cache that cannot be marked (a read-only file system) is
 * still used.
 *
 * The module is its own small bundle, loaded with require() (it cannot load
 * itself through its cache); the bundles it loads appear in require.cache
 * like any CommonJS module.
 */
import Module, { createRequire } from 'node:module';
import { Script } from 'node:vm';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** What became of a bundle's cache in this process. */
export type CacheUse = 'off' | 'hit' | 'miss' | 'rejected';

interface Loaded {
  /** Undefined: loaded by require(), without a cache. */
  readonly script: Script | undefined;
  readonly exports: unknown;
  readonly file: string | undefined;
  use: CacheUse;
}

export interface CodeCacheOptions {
  /** Directory of the cache files; undefined: no cache. */
  readonly dir: string | undefined;
  /** Part of each file's name: the command run (see above). */
  readonly command: string;
}

/** The cache directory `env` asks for (see above), or undefined for none. */
export function codeCacheDir(env: NodeJS.ProcessEnv): string | undefined {
  const off = env.NODE_DISABLE_COMPILE_CACHE;
  if (off !== undefined && off !== '' && off !== '0') return undefined;
  const abs = (p: string | undefined): string | undefined => (p !== undefined && path.isAbsolute(p) ? p : undefined);
  const node = abs(env.NODE_COMPILE_CACHE);
  if (node) return path.join(node, 'narpush');
  const base = abs(env.XDG_CACHE_HOME) ?? (abs(env.HOME) && path.join(env.HOME!, '.cache'));
  return base && path.join(base, 'narpush', 'code-cache');
}

/** The command word of a narpush command line (argv as node's), as a safe file-name part; `none` for none, or for its --help. */
export function commandOf(argv: readonly string[]): string {
  const args = argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) return 'none';
  const word = args.find((a) => !a.startsWith('-'));
  return word !== undefined && /^[a-z][a-z-]{0,31}$/.test(word) ? word : 'none';
}

const RUNTIME_KEY = `${process.version}\0${process.arch}\0${process.execArgv.join('\0')}`;

const nodeRequire = createRequire(import.meta.url);
/** Node's require.cache (one object, whichever require it is read from). */
const requireCache = nodeRequire.cache;

export class CodeCache {
  private readonly loaded = new Map<string, Loaded>();
  private savedOnExit = false;

  constructor(private readonly options: CodeCacheOptions) {}

  /** The exports of the CommonJS bundle `filename`, compiled with its cache when there is a usable one. */
  load(filename: string): unknown {
    const known = this.loaded.get(filename);
    if (known) return known.exports;
    if (!this.options.dir) {
      // No cache: Node's own loader, as if there were no such module (it costs less than compiling here).
      const exports: unknown = createRequire(filename)(filename);
      this.loaded.set(filename, { script: undefined, exports, file: undefined, use: 'off' });
      return exports;
    }
    const source = fs.readFileSync(filename, 'utf8');
    const file = path.join(this.options.dir, `${path.basename(filename)}.${this.options.command}.${digest(source)}.v8`);
    const cachedData = readOwnFile(file, Date.now());
    const script = new Script(Module.wrap(source), { filename, cachedData });
    const use: CacheUse = !cachedData ? 'miss' : script.cachedDataRejected ? 'rejected' : 'hit';
    // Registered like any CommonJS module: require.cache lists it, and a
    // second load (from another bundle) gets the same exports.
    const mod = new Module(filename);
    mod.filename = filename;
    const loaded: Loaded = { script, file, use, get exports() { return mod.exports; } };
    this.loaded.set(filename, loaded);
    requireCache[filename] = mod;
    if ((use === 'miss' || use === 'rejected') && !this.savedOnExit) {
      this.savedOnExit = true;
      // After the command: the cache then holds every function that ran.
      // Only after one that worked: a run that stopped at a bad flag or a
      // missing path ran little of the command, and its cache would stay.
      process.once('exit', (code) => {
        if (code === 0) this.save();
      });
    }
    const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
    try {
      wrapper.call(mod.exports, mod.exports, createRequire(filename), mod, filename, path.dirname(filename));
    } catch (err) {
      this.loaded.delete(filename);
      delete requireCache[filename];
      throw err;
    }
    mod.loaded = true;
    return mod.exports;
  }

  /** How each bundle loaded so far used the cache, by file name. */
  uses(): Map<string, CacheUse> {
    return new Map([...this.loaded].map(([f, l]) => [path.basename(f), l.use]));
  }

  /**
   * Write the cache of every bundle that had none (or a refused one).
   * Synchronous: it runs in the process's 'exit' event. Never throws.
   */
  save(): void {
    const dir = this.options.dir;
    if (!dir) return;
    for (const l of this.loaded.values()) {
      if (!l.file || !l.script || (l.use !== 'miss' && l.use !== 'rejected')) continue;
      try {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
        writeDurably(l.file, l.script.createCachedData());
        l.use = 'hit';
        sweep(dir, l.file, Date.now());
      } catch {
        // An unwritable cache costs only the compile it would have saved.
      }
    }
  }
}

function digest(source: string): string {
  // Required here, not imported: node:crypto takes longer to load than `narpush --version` runs,
  // which has no cache (loadBundle) and must not pay for it.
  const { hash } = nodeRequire('node:crypto') as typeof import('node:crypto');
  return hash('sha256', `${RUNTIME_KEY}\0${source}`, 'hex').slice(0, 32);
}

/** A cache file no run has used for this long is removed (see sweep). */
const UNUSED_MS = 7 * 24 * 3600 * 1000;
/** A cache in use has its modification time set to now when it is older than this. */
const TOUCH_AFTER_MS = 24 * 3600 * 1000;
/** A temporary file this old was left by a run killed while writing it (a write takes milliseconds). */
const TEMP_STALE_MS = 10 * 60 * 1000;

/**
 * The file's bytes if it is a regular file of this user's that no one else
 * can write; else undefined. One used more than a day after its last
 * modification is marked used now, and the directory swept.
 */
function readOwnFile(file: string, now: number): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    // An empty buffer is no cache to V8: it would neither use nor refuse it.
    if (!st.isFile() || st.size === 0 || st.uid !== process.geteuid!() || (st.mode & 0o022) !== 0) return undefined;
    const data = fs.readFileSync(fd);
    if (now - st.mtimeMs > TOUCH_AFTER_MS) markUsed(fd, file, now);
    return data;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Set a cache's modification time to now and sweep its directory; where it cannot be set, neither. */
function markUsed(fd: number, file: string, now: number): void {
  try {
    fs.futimesSync(fd, now / 1000, now / 1000);
  } catch {
    return;
  }
  sweep(path.dirname(file), file, now);
}

function writeDurably(file: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeFileSync(fd, data);
    fs.fdatasyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

/** This module's file names: `<bundle>.cjs.<command>.<digest>.v8`, and `<that>.<pid>.tmp` while one is written. */
const CACHE_FILE_NAME = /^[\w.-]+\.cjs\.[a-z][a-z-]{0,31}\.[0-9a-f]{32}\.v8(\.[0-9]+\.tmp)?$/;

/**
 * Remove the caches unused for a week and the temporary files of killed
 * runs, but never `keep`. Only files of this module's names that are this
 * user's own, in a directory of this user's that is not a symlink: a run as
 * root with another user's HOME must not remove files where that user
 * points it.
 */
function sweep(dir: string, keep: string, now: number): void {
  const uid = process.geteuid!();
  let names: string[];
  try {
    const st = fs.lstatSync(dir);
    if (!st.isDirectory() || st.uid !== uid) return;
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const f of names) {
    const name = CACHE_FILE_NAME.exec(f);
    const p = path.join(dir, f);
    if (!name || p === keep) continue;
    const limit = name[1] !== undefined ? TEMP_STALE_MS : UNUSED_MS;
    try {
      const st = fs.lstatSync(p);
      if (st.isFile() && st.uid === uid && now - st.mtimeMs > limit) fs.rmSync(p, { force: true });
    } catch {
      // Gone already (another run swept it).
    }
  }
}

let processCache: CodeCache | undefined;

/**
 * Load a bundle of bin/narpush through the process's cache, made on first
 * use for its command line and environment (bin/narpush, and narpush.cjs
 * for the command's bundle, share it: this file is required once).
 */
export function loadBundle(filename: string): unknown {
  // No command (--version, --help): too little runs for a cache to pay (V8 reads it whole).
  const command = commandOf(process.argv);
  processCache ??= new CodeCache({ dir: command === 'none' ? undefined : codeCacheDir(process.env), command });
  return processCache.load(filename);
}
