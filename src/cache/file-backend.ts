/**
 * A binary cache in a local directory (`file:///dir`), in the layout Nix reads
 * directly as a substituter. Every write goes to a temporary file in the
 * target's own directory, is made durable (O_DSYNC or fsync), renamed over
 * the target (atomic on POSIX) and the directory fsynced, so a reader or a
 * crash sees either the old object or the whole new one, and a put is
 * durable when it resolves.
 * Directory fsyncs are group-committed: one serves every rename made while
 * the previous one ran.
 *
 * `stageBatch` splits puts into their steps: the temporary files are written
 * and made durable at once, `publish` renames one, `durable` waits for a
 * directory fsync that started after the rename. A batch is written on this
 * thread into the page cache and then fdatasynced all at once on the thread
 * pool: one wait for the disk per batch instead of one per file. The upload
 * pipeline stages small NARs this way, and every narinfo, which must appear
 * in reference order (a referrer after its references): the chain then
 * costs one rename per link, and the fsyncs run beside it. Between a rename and that fsync a crash may lose renames;
 * a file system that did not keep their order could then show a referrer
 * without its reference. That is accepted because (1) journaling file
 * systems (ext4, XFS) commit metadata operations in the order they were
 * made, so a later rename never survives an earlier one that was lost; (2) no path is
 * reported uploaded (and the daemon's journal keeps it pending) until the
 * fsync after its rename has completed, so a crash in the gap is retried;
 * (3) the next upload of the closure checks each path's narinfo and puts
 * back any that is missing. Ordering every rename after its references'
 * fsyncs instead costs one journal commit per link of the longest chain,
 * which dominates an upload of many small paths.
 *
 * Must never leave a temporary file behind on failure, abort or discard,
 * never write outside the cache directory (keys are checked), and never
 * delete a published object except by `deleteMany` (narpush gc). `list`
 * walks the directory and skips temporary files; `listIncomplete` offers
 * them instead (another writer's may still be in use: gc removes only those
 * older than its grace period). Content types are S3 metadata and have no file
 * equivalent.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdir, open, opendir, rm, stat, unlink, utimes, type FileHandle } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import {
  MAX_GET_BYTES, abortable, abortedError, checkCacheKey, type CacheBackend, type IncompleteUpload, type ListedObject,
  type ObjectStat, type PutBytesOptions, type PutStreamOptions, type SmallObject, type StagedObject,
} from './backend.js';
import { MetadataCalls, WriteAhead, call, closeNow, writeAll, writeAllNow } from './file-ops.js';
import { type Limiter, createLimiter } from './limit.js';

/** Temporary files are named `.<name>.narpush-<random>-<n>.tmp`: hidden, and never a key Nix asks for. */
export const TEMP_MARKER = '.narpush-';

// O_EXCL ('wx'): always a new file, never one another writer is using.
const CREATE_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;
// Chunks of a streamed read: large enough for few calls, small enough to bound a reader's memory.
const READ_CHUNK = 64 * 1024;
/** A stream's bytes in flight to the page cache at once (see WriteAhead). */
const WRITE_AHEAD_BYTES = 8 << 20;
/** A stream's bytes are flushed to the disk behind its writes every this many (see WriteAhead). */
const FLUSH_BEHIND_BYTES = 8 << 20;
// Where the platform has no O_DSYNC, whole bodies are fsynced like streams.
const DSYNC: number | undefined = fs.constants.O_DSYNC;

export class FileBackend implements CacheBackend {
  readonly description: string;
  // Directories known to exist, so each write does not ask again.
  private readonly madeDirs = new Set<string>();
  // One file creation at a time per directory, when they run on the thread pool (see createIn).
  private readonly creating = new Map<string, Limiter>();
  // Creates, renames and stats: on this thread while they are fast.
  private readonly metadata = new MetadataCalls();
  // Group commit of directory fsyncs: renames that land while a sync runs share the next one.
  private readonly dirSyncs = new Map<string, { running: Promise<void>; next?: Promise<void> }>();
  // Temporary names: random per backend (other writers), counted within it (cheaper than random per file).
  private readonly tempPrefix = `${TEMP_MARKER}${randomBytes(6).toString('hex')}-`;
  private tempCount = 0;
  // Directories are opened once for their fsyncs (a thread-pool round trip less per sync), closed by close().
  private readonly dirFds = new Map<string, Promise<number>>();

  constructor(readonly dir: string) {
    if (!nodePath.isAbsolute(dir)) throw new NarpushError('BAD_CACHE_URL', `cache directory '${dir}' is not absolute`);
    this.description = `file://${dir}`;
  }

  private pathOf(key: string): string {
    return nodePath.join(this.dir, checkCacheKey(key));
  }

  async get(key: string): Promise<Buffer | undefined> {
    const file = this.pathOf(key);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw ioError('read', key, this.description, e);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new NarpushError('CACHE_IO', `cannot read ${key} from ${this.description}: not a regular file`);
      if (st.size > MAX_GET_BYTES) {
        throw new NarpushError('CACHE_OBJECT_TOO_LARGE', `${key} in ${this.description} is ${st.size} bytes, more than a metadata file can be`);
      }
      return await fh.readFile();
    } catch (e) {
      throw e instanceof NarpushError ? e : ioError('read', key, this.description, e);
    } finally {
      await fh.close();
    }
  }

  async exists(key: string): Promise<boolean> {
    const file = this.pathOf(key);
    try {
      const st = await this.metadata.run(
        true,
        () => fs.statSync(file, { throwIfNoEntry: false }),
        () => call<fs.Stats>((cb) => fs.stat(file, cb)),
      );
      return st?.isFile() ?? false;
    } catch (e) {
      if (isMissing(e)) return false;
      throw ioError('check', key, this.description, e);
    }
  }

  async getStream(key: string, opts: { signal?: AbortSignal } = {}): Promise<AsyncIterable<Uint8Array> | undefined> {
    const file = this.pathOf(key);
    let fh: FileHandle;
    try {
      fh = await open(file, 'r');
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw ioError('read', key, this.description, e);
    }
    try {
      if (!(await fh.stat()).isFile()) throw new NarpushError('CACHE_IO', `cannot read ${key} from ${this.description}: not a regular file`);
    } catch (e) {
      await fh.close();
      throw e instanceof NarpushError ? e : ioError('read', key, this.description, e);
    }
    return this.readFrom(fh, key, opts.signal);
  }

  private async *readFrom(fh: FileHandle, key: string, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        if (signal?.aborted) throw abortedError(`reading ${key} from ${this.description}`, signal.reason);
        // A fresh buffer per chunk: the consumer may keep it.
        const buf = Buffer.allocUnsafe(READ_CHUNK);
        const { bytesRead } = await io('read', key, this.description, () => fh.read(buf, 0, READ_CHUNK, null));
        if (bytesRead === 0) return;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /**
   * Walk the directory tree, streaming each directory (opendir: memory does
   * not grow with the number of entries), one handle open per level; order
   * is the file system's. Temporary files and anything but regular files are
   * left out. A missing cache directory is an error, as a missing bucket is.
   */
  async *list(prefix: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<ListedObject> {
    try {
      if (!(await stat(this.dir)).isDirectory()) throw new Error('not a directory');
    } catch (e) {
      throw new NarpushError('CACHE_NOT_FOUND', `cache directory ${this.dir} does not exist or is not a directory`, { cause: e });
    }
    // From the deepest directory the prefix names: a look at `narpush-gc/` (the
    // collectors' markers, read by every upload) must not read the whole cache.
    const start = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    yield* this.walk(start, prefix, opts.signal);
  }

  private async *walk(rel: string, prefix: string, signal: AbortSignal | undefined): AsyncGenerator<ListedObject> {
    let dir: fs.Dir;
    try {
      dir = await opendir(rel === '' ? this.dir : nodePath.join(this.dir, rel));
    } catch (e) {
      if (rel !== '' && isMissing(e)) return; // removed while we walked
      throw ioError('list', rel === '' ? '.' : rel, this.description, e);
    }
    try {
      for await (const entry of dir) {
        if (signal?.aborted) throw abortedError(`listing ${this.description}`, signal.reason);
        const key = rel === '' ? entry.name : `${rel}/${entry.name}`;
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix, signal);
        } else if (entry.isFile() && key.startsWith(prefix) && !isTempName(entry.name)) {
          let st: fs.Stats;
          try {
            st = await stat(nodePath.join(this.dir, key));
          } catch (e) {
            if (isMissing(e)) continue; // replaced or removed since the directory was read
            throw ioError('list', key, this.description, e);
          }
          yield { key, size: st.size, lastModified: st.mtime };
        }
      }
    } catch (e) {
      throw e instanceof NarpushError ? e : ioError('list', rel === '' ? '.' : rel, this.description, e);
    } finally {
      try {
        await dir.close();
      } catch {
        // already closed: `for await` closes it when the iteration ends
      }
    }
  }

  async putBytes(key: string, body: Uint8Array, _contentType: string, opts: PutBytesOptions = {}): Promise<void> {
    if (opts.contentEncoding !== undefined) throw this.noEncoding(key, opts.contentEncoding);
    await publishDurably(await this.stage(key, body));
  }

  /** A file has no Content-Encoding to say how to read it: Nix's file:// store reads every object as stored. */
  private noEncoding(key: string, encoding: string): NarpushError {
    return new NarpushError('BAD_OPTION', `${this.description} cannot store ${key} with a Content-Encoding (${encoding})`);
  }

  /**
   * Stage small objects together. While creates are fast, each temporary
   * file is created and written on this thread (into the page cache: no
   * thread-pool round trip per file), then all are fdatasynced at once on
   * the thread pool. Once creates prove slow, objects are staged one by one
   * as `putBytes` stages them (O_DSYNC writes on the thread pool).
   */
  async stageBatch(objects: readonly SmallObject[]): Promise<PromiseSettledResult<StagedObject>[]> {
    const results: PromiseSettledResult<StagedObject>[] = new Array(objects.length);
    const written: { i: number; key: string; tmp: string; target: string; fd: number }[] = [];
    const pooled: number[] = [];
    for (const [i, { key, body, contentEncoding }] of objects.entries()) {
      if (contentEncoding !== undefined) {
        results[i] = { status: 'rejected', reason: this.noEncoding(key, contentEncoding) };
        continue;
      }
      if (!this.metadata.inline) {
        pooled.push(i);
        continue;
      }
      let tmp: string | undefined;
      let fd: number | undefined;
      try {
        const names = this.tempFor(key);
        tmp = names.tmp;
        await this.ensureDir(key, names.dir);
        fd = await io('write', key, this.description, async () => {
          const opened = this.metadata.runHere(true, () => fs.openSync(names.tmp, CREATE_FLAGS, 0o644));
          try {
            writeAllNow(opened, body);
          } catch (e) {
            closeNow(opened);
            throw e;
          }
          return opened;
        });
        written.push({ i, key, tmp, target: names.target, fd });
      } catch (e) {
        if (tmp !== undefined) await rm(tmp, { force: true }).catch(() => {});
        results[i] = { status: 'rejected', reason: e };
      }
    }
    await Promise.all([
      ...written.map(async ({ i, key, tmp, target, fd }) => {
        try {
          await io('write', key, this.description, async () => {
            try {
              await call<void>((cb) => fs.fdatasync(fd, cb));
            } finally {
              closeNow(fd);
            }
          });
          results[i] = { status: 'fulfilled', value: this.staged(key, tmp, target) };
        } catch (e) {
          await rm(tmp, { force: true }).catch(() => {});
          results[i] = { status: 'rejected', reason: e };
        }
      }),
      ...pooled.map(async (i) => {
        try {
          results[i] = { status: 'fulfilled', value: (await this.stage(objects[i]!.key, objects[i]!.body)).object };
        } catch (e) {
          results[i] = { status: 'rejected', reason: e };
        }
      }),
    ]);
    return results;
  }

  async putStream(
    key: string,
    body: AsyncIterable<Uint8Array>,
    _contentType: string,
    opts: PutStreamOptions = {},
  ): Promise<{ bytes: number }> {
    if (opts.signal?.aborted) throw abortedError(`${key} to ${this.description}`, opts.signal.reason);
    const staged = await this.stage(key, abortable(body, opts.signal, `${key} to ${this.description}`), opts.chunkDone);
    await publishDurably(staged);
    return { bytes: staged.bytes };
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    const file = this.pathOf(key);
    try {
      // Like exists(): on this thread while such calls are fast (an upload's presence check makes one per path).
      const st = await this.metadata.run(
        true,
        () => fs.statSync(file, { throwIfNoEntry: false }),
        () => call<fs.Stats>((cb) => fs.stat(file, cb)),
      );
      return st?.isFile() ? { size: st.size, lastModified: st.mtime } : undefined;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw ioError('check', key, this.description, e);
    }
  }

  async touch(key: string, _contentType: string): Promise<boolean> {
    const now = new Date();
    try {
      await utimes(this.pathOf(key), now, now);
      return true;
    } catch (e) {
      if (isMissing(e)) return false;
      throw ioError('refresh', key, this.description, e);
    }
  }

  async deleteMany(keys: readonly string[]): Promise<(Error | undefined)[]> {
    return Promise.all(
      keys.map(async (key) => {
        try {
          await unlink(this.pathOf(key));
          return undefined;
        } catch (e) {
          return isMissing(e) ? undefined : ioError('delete', key, this.description, e);
        }
      }),
    );
  }

  async *listIncomplete(opts: { signal?: AbortSignal } = {}): AsyncIterable<IncompleteUpload> {
    for await (const f of this.walkFiles(opts.signal)) if (f.temp) yield { key: f.key, id: f.key, initiated: f.mtime };
  }

  async abortIncomplete(upload: IncompleteUpload): Promise<void> {
    const rel = upload.id;
    if (!nodePath.basename(rel).includes(TEMP_MARKER)) throw new NarpushError('BAD_CACHE_KEY', `'${rel}' is not a temporary file of narpush`);
    await rm(this.pathOf(rel), { force: true }).catch((e) => {
      throw ioError('delete', rel, this.description, e);
    });
  }

  /** Every regular file under the cache directory, temporary ones included, depth first, with its key (relative path). */
  private async *walkFiles(signal?: AbortSignal): AsyncIterable<{ key: string; size: number; mtime: Date; temp: boolean }> {
    const dirs = [''];
    while (dirs.length > 0) {
      const rel = dirs.pop()!;
      let dir;
      try {
        dir = await opendir(nodePath.join(this.dir, rel));
      } catch (e) {
        if (isMissing(e) && rel !== '') continue;
        throw ioError('list', rel || '.', this.description, e);
      }
      for await (const e of dir) {
        signal?.throwIfAborted();
        const key = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.isDirectory()) {
          dirs.push(key);
          continue;
        }
        if (!e.isFile()) continue;
        let st;
        try {
          st = await stat(nodePath.join(this.dir, key));
        } catch (err) {
          if (isMissing(err)) continue; // deleted or renamed while we walked
          throw ioError('list', key, this.description, err);
        }
        yield { key, size: st.size, mtime: st.mtime, temp: e.name.startsWith('.') && e.name.includes(TEMP_MARKER) };
      }
    }
  }

  async close(): Promise<void> {
    const fds = [...this.dirFds.values()];
    this.dirFds.clear();
    for (const fd of await Promise.allSettled(fds)) if (fd.status === 'fulfilled') closeNow(fd.value);
  }

  /**
   * Write `body` to a temporary file next to the target and make it durable;
   * the returned object renames it. A body given whole is written with
   * O_DSYNC (the write returns once the bytes are on disk, as write + fdatasync
   * would, in one request less); a stream is fsynced after its last chunk.
   */
  private async stage(
    key: string,
    body: Uint8Array | AsyncIterable<Uint8Array>,
    chunkDone?: (chunk: Uint8Array) => void,
  ): Promise<{ object: StagedObject; bytes: number }> {
    const { target, dir, tmp } = this.tempFor(key);
    const whole = body instanceof Uint8Array && DSYNC !== undefined;
    await this.ensureDir(key, dir);
    const fd = await io('write', key, this.description, () => this.createIn(dir, tmp, whole ? CREATE_FLAGS | DSYNC! : CREATE_FLAGS));
    let bytes = 0;
    let isOpen = true;
    try {
      if (whole) {
        await io('write', key, this.description, () => writeAll(fd, body));
        bytes = body.byteLength;
      } else {
        const ahead = new WriteAhead(fd, WRITE_AHEAD_BYTES, FLUSH_BEHIND_BYTES, chunkDone);
        try {
          // Errors from `body` (the caller's stream) pass through unchanged; only our own I/O is wrapped.
          for await (const chunk of body instanceof Uint8Array ? [body] : body) {
            await io('write', key, this.description, () => ahead.write(chunk));
          }
        } finally {
          // No write may still be running when the descriptor is closed (on success or failure).
          await ahead.drain().catch(() => {});
        }
        await io('write', key, this.description, () => ahead.drain());
        bytes = ahead.bytes;
        await io('write', key, this.description, () => call<void>((cb) => fs.fsync(fd, cb)));
      }
      isOpen = false; // even a failed close releases the descriptor: never close it twice
      await io('write', key, this.description, async () => closeNow(fd));
    } catch (e) {
      if (isOpen) fs.close(fd, () => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    return { object: this.staged(key, tmp, target), bytes };
  }

  /** Where `key` goes, and a temporary name beside it. Throws BAD_CACHE_KEY for a key outside the cache. */
  private tempFor(key: string): { target: string; dir: string; tmp: string } {
    const target = this.pathOf(key);
    const dir = nodePath.dirname(target);
    return { target, dir, tmp: nodePath.join(dir, `.${nodePath.basename(target)}${this.tempPrefix}${this.tempCount++}.tmp`) };
  }

  private async ensureDir(key: string, dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await io('write', key, this.description, () => mkdir(dir, { recursive: true }));
    this.madeDirs.add(dir);
  }

  /** The steps after staging: `tmp` holds the durable bytes of `key`. */
  private staged(key: string, tmp: string, target: string): StagedObject {
    const dir = nodePath.dirname(target);
    let state: 'staged' | 'publishing' | 'published' | 'gone' = 'staged';
    return {
      publish: async () => {
        if (state !== 'staged') throw new Error(`staged ${key}: publish called when ${state}`);
        state = 'publishing';
        try {
          await io('write', key, this.description, () =>
            this.metadata.run(false, () => fs.renameSync(tmp, target), () => call<void>((cb) => fs.rename(tmp, target, cb))),
          );
        } catch (e) {
          state = 'gone';
          await rm(tmp, { force: true }).catch(() => {});
          throw e;
        }
        state = 'published';
      },
      // The rename is durable only once the directory entry is on disk.
      durable: async () => {
        if (state !== 'published') throw new Error(`staged ${key}: durable called when ${state}`);
        await io('write', key, this.description, () => this.syncDir(dir));
      },
      discard: async () => {
        if (state !== 'staged') return;
        state = 'gone';
        await rm(tmp, { force: true }).catch(() => {});
      },
    };
  }

  /**
   * Create `file` in `dir` (see MetadataCalls). On the thread pool,
   * creations in one directory are queued here: the kernel serializes them
   * anyway (the directory's lock), and threads waiting for that lock spin
   * on it while ext4 searches its inode tables, burning the CPU the rest of
   * the upload needs.
   */
  private createIn(dir: string, file: string, flags: number): Promise<number> {
    return this.metadata.run(
      true,
      () => fs.openSync(file, flags, 0o644),
      () => {
        let limit = this.creating.get(dir);
        if (!limit) this.creating.set(dir, (limit = createLimiter(1)));
        return limit(() => call<number>((cb) => fs.open(file, flags, 0o644, cb)));
      },
    );
  }

  /**
   * fsync `dir` after the caller's rename. A sync already running may have
   * started before that rename, so the caller waits for the next one; every
   * caller that arrives meanwhile shares that next sync.
   */
  private syncDir(dir: string): Promise<void> {
    const state = this.dirSyncs.get(dir);
    if (!state) {
      const running = this.fsyncDir(dir).finally(() => this.afterDirSync(dir));
      this.dirSyncs.set(dir, { running });
      return running;
    }
    state.next ??= state.running.catch(() => {}).then(() => this.fsyncDir(dir));
    return state.next;
  }

  private async fsyncDir(dir: string): Promise<void> {
    let fd = this.dirFds.get(dir);
    if (!fd) {
      fd = this.metadata.run(false, () => fs.openSync(dir, 'r'), () => call<number>((cb) => fs.open(dir, 'r', cb)));
      this.dirFds.set(dir, fd);
      fd.catch(() => this.dirFds.delete(dir));
    }
    const dirFd = await fd;
    await call<void>((cb) => fs.fsync(dirFd, cb));
  }

  private afterDirSync(dir: string): void {
    const state = this.dirSyncs.get(dir);
    if (!state?.next) {
      this.dirSyncs.delete(dir);
      return;
    }
    const running = state.next.finally(() => this.afterDirSync(dir));
    running.catch(() => {});
    this.dirSyncs.set(dir, { running });
  }
}

async function publishDurably(staged: { object: StagedObject }): Promise<void> {
  await staged.object.publish();
  await staged.object.durable();
}

/** A name this backend (any instance) gives its temporary files: `.<name>.narpush-<random>-<n>.tmp`. */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.includes(TEMP_MARKER) && name.endsWith('.tmp');
}

function isMissing(e: unknown): boolean {
  return isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR');
}

async function io<T>(op: string, key: string, where: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw ioError(op, key, where, e);
  }
}

function ioError(op: string, key: string, where: string, e: unknown): NarpushError {
  const detail = isErrnoException(e) ? `${e.code}: ${e.message.replace(/^[A-Z]+: /, '')}` : String(e);
  return new NarpushError('CACHE_IO', `cannot ${op} ${key} in ${where} (${detail})`, { cause: e });
}
