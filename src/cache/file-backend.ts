/**
 * A binary cache in a local directory (`file:///dir`), in the layout Nix reads
 * directly as a substituter. Every write goes to a temporary file in the
 * target's own directory, is fsynced, renamed over the target (atomic on
 * POSIX) and the directory fsynced (one fsync serves every rename made while
 * the previous one ran), so a reader or a crash sees either the old
 * object or the whole new one, and a NAR is durable before its narinfo is
 * written.
 *
 * Must never leave a temporary file behind on failure or abort, never write
 * outside the cache directory (keys are checked), and never delete a
 * published object. Content types are S3 metadata and have no file equivalent.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import { MAX_GET_BYTES, abortable, abortedError, checkCacheKey, type CacheBackend, type PutStreamOptions } from './backend.js';

/** Temporary files are named `.<name>.narpush-<random>.tmp`: hidden, and never a key Nix asks for. */
export const TEMP_MARKER = '.narpush-';

export class FileBackend implements CacheBackend {
  readonly description: string;
  // Directories known to exist, so each write does not ask again.
  private readonly madeDirs = new Set<string>();
  // Group commit of directory fsyncs: renames that land while a sync runs share the next one.
  private readonly dirSyncs = new Map<string, { running: Promise<void>; next?: Promise<void> }>();

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
      return (await stat(file)).isFile();
    } catch (e) {
      if (isMissing(e)) return false;
      throw ioError('check', key, this.description, e);
    }
  }

  async putBytes(key: string, body: Uint8Array, _contentType: string): Promise<void> {
    await this.write(key, [body]);
  }

  async putStream(
    key: string,
    body: AsyncIterable<Uint8Array>,
    _contentType: string,
    opts: PutStreamOptions = {},
  ): Promise<{ bytes: number }> {
    if (opts.signal?.aborted) throw abortedError(`${key} to ${this.description}`, opts.signal.reason);
    return this.write(key, abortable(body, opts.signal, `${key} to ${this.description}`));
  }

  async close(): Promise<void> {}

  private async write(key: string, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<{ bytes: number }> {
    const target = this.pathOf(key);
    const dir = nodePath.dirname(target);
    const tmp = nodePath.join(dir, `.${nodePath.basename(target)}${TEMP_MARKER}${randomBytes(8).toString('hex')}.tmp`);
    const fh = await io('write', key, this.description, async () => {
      if (!this.madeDirs.has(dir)) {
        await mkdir(dir, { recursive: true });
        this.madeDirs.add(dir);
      }
      return open(tmp, 'wx', 0o644);
    });
    let bytes = 0;
    try {
      // Errors from `chunks` (the caller's stream) pass through unchanged; only our own I/O is wrapped.
      for await (const chunk of chunks) {
        await io('write', key, this.description, () => writeAll(fh, chunk));
        bytes += chunk.byteLength;
      }
      await io('write', key, this.description, () => fh.sync());
      await fh.close();
      await io('write', key, this.description, () => rename(tmp, target));
    } catch (e) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    // The rename is durable only once the directory entry is on disk.
    await io('write', key, this.description, () => this.syncDir(dir));
    return { bytes };
  }

  /**
   * fsync `dir` after the caller's rename. A sync already running may have
   * started before that rename, so the caller waits for the next one; every
   * caller that arrives meanwhile shares that next sync.
   */
  private syncDir(dir: string): Promise<void> {
    const state = this.dirSyncs.get(dir);
    if (!state) {
      const running = syncDir(dir).finally(() => this.afterDirSync(dir));
      this.dirSyncs.set(dir, { running });
      return running;
    }
    state.next ??= state.running.catch(() => {}).then(() => syncDir(dir));
    return state.next;
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

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off);
    off += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
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
