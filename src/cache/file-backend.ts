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
 * fsyncs instead costs one journal commit per link of the longest chain
 * (120 links, ~0.5 s, for 1,000 small paths).
 *
 * Must never leave a temporary file behind on failure, abort or discard,
 * never write outside the cache directory (keys are checked), and never
 * delete a published object. Content types are S3 metadata and have no file
 * equivalent.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import {
  MAX_GET_BYTES, abortable, abortedError, checkCacheKey, type CacheBackend, type PutStreamOptions, type SmallObject, type StagedObject,
} from './backend.js';
import { MetadataCalls, WriteAhead, call, closeNow, writeAll, writeAllNow } from './file-ops.js';
import { type Limiter, createLimiter } from './limit.js';

/** Temporary files are named `.<name>.narpush-<random>-<n>.tmp`: hidden, and never a key Nix asks for. */
export const TEMP_MARKER = '.narpush-';

// O_EXCL ('wx'): always a new file, never one another writer is using.
const CREATE_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;
/** A stream's bytes in flight to the page cache at once (see WriteAhead). */
const WRITE_AHEAD_BYTES = 8 << 20;
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

  async putBytes(key: string, body: Uint8Array, _contentType: string): Promise<void> {
    await publishDurably(await this.stage(key, body));
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
    for (const [i, { key, body }] of objects.entries()) {
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
    const staged = await this.stage(key, abortable(body, opts.signal, `${key} to ${this.description}`));
    await publishDurably(staged);
    return { bytes: staged.bytes };
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
  private async stage(key: string, body: Uint8Array | AsyncIterable<Uint8Array>): Promise<{ object: StagedObject; bytes: number }> {
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
        const ahead = new WriteAhead(fd, WRITE_AHEAD_BYTES);
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
   * the upload needs (12% of all CPU time, measured uploading 1,000 small
   * paths on two cores).
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
