/**
 * Filesystem walker: yields the NAR events (events.ts) of a file, symlink or
 * directory tree, in NAR order, without following symlinks.
 *
 * Names are bytes end to end and sorted as unsigned bytes, as Nix sorts them.
 * (They are read with readdir's 'latin1' encoding, one char per byte and
 * lossless, because Node makes such strings far faster than Buffers, and
 * ordering them is ordering bytes; events carry them as Buffers.) Only the
 * owner-execute bit of a regular file counts. Sockets, FIFOs and devices throw
 * NarpushError('UNSUPPORTED_FILE_TYPE') naming the file.
 *
 * Why synchronous: the walk is a sync generator, so metadata calls and small
 * files cost one syscall each and no promise (per-file async calls dominate
 * for trees of many small files). Large files are never read whole: their
 * contents are an async iterable reading `readChunkSize` bytes at a time on
 * the libuv thread pool, so the event loop stays free during the bulk of the
 * I/O. Nothing is read until the consumer pulls, which gives backpressure.
 * The walker never writes, never follows symlinks and never reads a file
 * whose contents the consumer does not ask for (beyond small files).
 */
import * as fs from 'node:fs';
import { NarpushError, isErrnoException } from '../errors.js';
import type { BufferPool } from './buffer-pool.js';
import type { NarEvent, RegularEvent } from './events.js';

export interface WalkOptions {
  /** Files up to this size are read in one synchronous call (default 64 KiB). */
  readonly smallFileSize?: number;
  /** Bytes per read for larger files (default 2 MiB). Memory stays within four of these per file. */
  readonly readChunkSize?: number;
  /**
   * Lend buffers instead of allocating a new one per read: every contents
   * chunk is then valid only until the consumer pulls the next event or
   * chunk. Much faster (fresh buffers cost a page fault per 4 KiB); only for
   * consumers that copy or write out each chunk before pulling again.
   */
  readonly reuseBuffers?: boolean;
  /**
   * Without reuseBuffers: large files' whole chunks are read into buffers
   * taken from this pool (its size must be readChunkSize) and handed out as
   * the pool's, so that a consumer that gives a chunk back once done
   * (BufferPool.give) has it filled again instead of a fresh one.
   */
  readonly pool?: BufferPool;
}

export const DEFAULT_SMALL_FILE_SIZE = 64 * 1024;
export const DEFAULT_READ_CHUNK_SIZE = 2 * 1024 * 1024;

const END: NarEvent = Object.freeze({ type: 'end-directory' });
const NO_CONTENTS: readonly Uint8Array[] = Object.freeze([]);

function show(path: Buffer): string {
  return path.toString('utf8');
}

function readError(path: Buffer, e: unknown): NarpushError {
  if (isErrnoException(e) && e.code === 'ENOENT') {
    return new NarpushError('PATH_NOT_FOUND', `'${show(path)}' does not exist (was it deleted during the dump?)`, { cause: e });
  }
  const why = isErrnoException(e) ? e.code : (e as Error).message;
  return new NarpushError('PATH_UNREADABLE', `cannot read '${show(path)}': ${why}`, { cause: e });
}

type FileKind = Pick<fs.Stats, 'isFIFO' | 'isSocket' | 'isCharacterDevice' | 'isBlockDevice'>;

function unsupported(path: Buffer, st: FileKind): NarpushError {
  const kind = st.isFIFO()
    ? 'a FIFO'
    : st.isSocket()
      ? 'a socket'
      : st.isCharacterDevice()
        ? 'a character device'
        : st.isBlockDevice()
          ? 'a block device'
          : 'of an unknown file type';
  return new NarpushError(
    'UNSUPPORTED_FILE_TYPE',
    `'${show(path)}' is ${kind}: a NAR holds only regular files, symlinks and directories`,
  );
}

function changed(path: Buffer, size: number, got: number): NarpushError {
  return new NarpushError('FILE_CHANGED', `'${show(path)}' changed while being read: expected ${size} bytes, read ${got}`);
}

interface Walker {
  readonly small: number;
  readonly chunk: number;
  /** The lent scratch buffer (reuseBuffers only). */
  scratch: Buffer | undefined;
  /** Where large files' chunks come from without reuseBuffers (WalkOptions.pool). */
  readonly pool: BufferPool | undefined;
}

function scratchFor(w: Walker, n: number): Buffer {
  if (w.scratch === undefined || w.scratch.length < n) w.scratch = Buffer.allocUnsafe(Math.max(n, w.chunk));
  return w.scratch;
}

const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/** Read exactly `size` bytes from the start of `fd`. */
function readFully(fd: number, buf: Buffer, size: number, path: Buffer): void {
  let got = 0;
  while (got < size) {
    const n = fs.readSync(fd, buf, got, size - got, got);
    if (n === 0) throw changed(path, size, got);
    got += n;
  }
}

/**
 * A regular file's event. The file is opened first and fstat()ed through the
 * descriptor (one path lookup instead of two, and size and mode are those of
 * the file actually read); O_NONBLOCK keeps a FIFO swapped in from blocking.
 * Small files are read right away; large ones are reopened when their
 * contents are pulled, so no descriptor stays open for an unread file.
 */
function regular(w: Walker, path: Buffer, name: Buffer | undefined, lend: boolean): NarEvent {
  let fd: number;
  try {
    fd = fs.openSync(path, OPEN_FLAGS);
  } catch (e) {
    throw readError(path, e);
  }
  let size: number;
  let executable: boolean;
  let contents: RegularEvent['contents'];
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw st.isDirectory() || st.isSymbolicLink() ? new NarpushError('FILE_CHANGED', `'${show(path)}' changed type while being read`) : unsupported(path, st);
    size = st.size;
    executable = (st.mode & 0o100) !== 0;
    if (size === 0) {
      contents = NO_CONTENTS;
    } else if (size <= w.small) {
      const buf = w.scratch !== undefined ? scratchFor(w, size) : Buffer.allocUnsafe(size);
      readFully(fd, buf, size, path);
      contents = [buf.length === size ? buf : buf.subarray(0, size)];
    } else {
      contents = readLarge(w, path, size, lend);
    }
  } catch (e) {
    throw e instanceof NarpushError ? e : readError(path, e);
  } finally {
    fs.closeSync(fd);
  }
  return name === undefined ? { type: 'regular', executable, size, contents } : { type: 'regular', name, executable, size, contents };
}

function readAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Reads of one large file in flight at once, on the thread pool. */
const READ_AHEAD = 3;

/**
 * Rings of lent read buffers whose file was read to its end, kept for the
 * next large file read on this thread (of this walk or the next NAR's). A
 * fresh buffer costs a page fault per 4 KiB the first time a read fills it:
 * 20 ms of a 24 MiB closure's upload (7 NARs, a ring each) went to
 * allocating and faulting them in (docs/performance.md). A ring is given
 * back only once its file was read whole (no read in flight, the consumer
 * done with its last chunk); one abandoned midway is dropped.
 */
const idleRings: Buffer[][] = [];
const IDLE_RINGS_MAX = 2;

function takeRing(chunk: number): Buffer[] {
  const i = idleRings.findIndex((r) => r[0]!.length === chunk);
  return i >= 0 ? idleRings.splice(i, 1)[0]! : Array.from({ length: READ_AHEAD + 1 }, () => Buffer.allocUnsafe(chunk));
}

function giveRing(ring: Buffer[]): void {
  idleRings.push(ring);
  if (idleRings.length > IDLE_RINGS_MAX) idleRings.shift();
}

interface Pending {
  readonly buf: Buffer;
  readonly len: number;
  readonly pos: number;
  readonly done: Promise<number>;
}

/**
 * A large file's contents, with up to READ_AHEAD reads of the next chunks in
 * flight: they run on the thread pool (in parallel on several cores, which
 * also hides the hand-off latency of each read) while the consumer handles
 * the current chunk. When lending, READ_AHEAD + 1 buffers go round: one is
 * with the consumer, the others are being filled.
 */
async function* readLarge(w: Walker, path: Buffer, size: number, lend: boolean): AsyncGenerator<Buffer> {
  let fd: number;
  try {
    fd = await new Promise<number>((resolve, reject) =>
      fs.open(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW, (err, fd) => (err ? reject(err) : resolve(fd))),
    );
  } catch (e) {
    throw readError(path, e);
  }
  const ring = lend ? takeRing(w.chunk) : undefined;
  let readWhole = false;
  let turn = 0;
  let issued = 0;
  const queue: Pending[] = [];
  const issue = (): void => {
    while (queue.length < READ_AHEAD && issued < size) {
      const len = Math.min(w.chunk, size - issued);
      // Only whole chunks come from the pool: a short one would hold a whole buffer for a few bytes.
      const buf = ring ? ring[turn++ % ring.length]! : w.pool !== undefined && len === w.chunk ? w.pool.take() : Buffer.allocUnsafe(len);
      queue.push({ buf, len, pos: issued, done: readAt(fd, buf, 0, len, issued) });
      issued += len;
    }
  };
  try {
    issue();
    for (let head = queue.shift(); head !== undefined; head = queue.shift()) {
      let got: number;
      try {
        got = await head.done;
        // Short reads do not happen on regular files short of the end, but are legal: finish the chunk.
        while (got < head.len) {
          const n = await readAt(fd, head.buf, got, head.len - got, head.pos + got);
          if (n === 0) break;
          got += n;
        }
      } catch (e) {
        throw readError(path, e);
      }
      if (got < head.len) throw changed(path, size, head.pos + got);
      issue();
      const chunk = head.len === head.buf.length ? head.buf : head.buf.subarray(0, head.len);
      if (ring === undefined && head.len === w.chunk) w.pool?.handOut(chunk, head.buf);
      yield chunk;
    }
    readWhole = true;
  } finally {
    // Reads still in flight must finish before their descriptor is closed.
    await Promise.all(queue.map((p) => p.done.catch(() => 0)));
    fs.close(fd, () => {});
    if (ring !== undefined && readWhole) giveRing(ring);
  }
}

function lstat(path: Buffer): fs.Stats {
  try {
    return fs.lstatSync(path);
  } catch (e) {
    throw readError(path, e);
  }
}

function readlink(path: Buffer): Buffer {
  try {
    return fs.readlinkSync(path, { encoding: 'buffer' });
  } catch (e) {
    throw readError(path, e);
  }
}

interface Entry {
  /** The name's bytes as a latin1 string: one char per byte, so JS order is unsigned byte order. */
  readonly name: string;
  readonly dirent: fs.Dirent;
}

/**
 * A directory's entries in NAR order. Names are read as latin1 strings (one
 * char per byte, lossless) because Node makes them far faster than Buffers,
 * and comparing such strings is comparing bytes unsigned.
 */
function listSorted(path: Buffer): Entry[] {
  let dirents: fs.Dirent[];
  try {
    dirents = fs.readdirSync(path, { encoding: 'latin1', withFileTypes: true });
  } catch (e) {
    throw readError(path, e);
  }
  const entries = dirents.map((dirent) => ({ name: dirent.name, dirent }));
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

interface Frame {
  /** The directory's path as a latin1 string (see Entry). */
  readonly path: string;
  readonly entries: Entry[];
  next: number;
}

/**
 * Walk `root` (a file, symlink or directory; a symlink is not followed) and
 * yield its NAR events. Throws NarpushError naming the file on anything a
 * NAR cannot hold or that cannot be read.
 */
export function* walkNar(root: string | Buffer, opts: WalkOptions = {}): Generator<NarEvent, void, undefined> {
  const lend = opts.reuseBuffers === true;
  const w: Walker = {
    small: opts.smallFileSize ?? DEFAULT_SMALL_FILE_SIZE,
    chunk: opts.readChunkSize ?? DEFAULT_READ_CHUNK_SIZE,
    scratch: lend ? Buffer.allocUnsafe(opts.smallFileSize ?? DEFAULT_SMALL_FILE_SIZE) : undefined,
    pool: lend ? undefined : opts.pool,
  };
  if (w.pool !== undefined && w.pool.size !== w.chunk) throw new Error(`walkNar: a pool of ${w.pool.size}-byte buffers for ${w.chunk}-byte reads`);
  const rootPath = typeof root === 'string' ? Buffer.from(root) : root;
  const stack: Frame[] = [];
  const st = lstat(rootPath);
  if (st.isDirectory()) {
    yield { type: 'directory' };
    stack.push({ path: rootPath.toString('latin1'), entries: listSorted(rootPath), next: 0 });
  } else if (st.isFile()) {
    yield regular(w, rootPath, undefined, lend);
  } else if (st.isSymbolicLink()) {
    yield { type: 'symlink', target: readlink(rootPath) };
  } else {
    throw unsupported(rootPath, st);
  }
  while (stack.length !== 0) {
    const top = stack[stack.length - 1]!;
    const ent = top.entries[top.next++];
    if (ent === undefined) {
      stack.pop();
      yield END;
      continue;
    }
    const pathStr = `${top.path}/${ent.name}`;
    const path = Buffer.from(pathStr, 'latin1');
    const name = Buffer.from(ent.name, 'latin1');
    const d = ent.dirent;
    // readdir's d_type saves an lstat for directories and symlinks; Node lstat()s itself when d_type is unknown.
    if (d.isDirectory()) {
      const entries = listSorted(path);
      yield { type: 'directory', name };
      stack.push({ path: pathStr, entries, next: 0 });
    } else if (d.isSymbolicLink()) {
      yield { type: 'symlink', name, target: readlink(path) };
    } else if (d.isFile()) {
      yield regular(w, path, name, lend);
    } else {
      throw unsupported(path, d);
    }
  }
}
