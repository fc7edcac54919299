/**
 * The file system calls of the file:// backend, and which thread makes them.
 * An upload of thousands of small paths makes thousands of tiny calls, where
 * what a call costs this thread matters more than the call itself: the
 * promise API's FileHandle objects, and thread-pool round trips for calls
 * that take microseconds. So the callback API is used, and metadata calls
 * (create, rename, stat) run on this thread while they are fast.
 *
 * Knows nothing of caches or keys (that is file-backend.ts). Never holds a
 * descriptor it opened beyond the call that opened it, except for the
 * caller's files, which the caller closes.
 */
import * as fs from 'node:fs';
import { monotonicMs } from '../clock.js';

/** A callback-API call as a promise. */
export function call<T>(fn: (cb: (e: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((e, value) => (e ? reject(e) : resolve(value as T))));
}

/**
 * Close on this thread: once the bytes are durable, close() has nothing left
 * to flush and takes microseconds, less than a thread-pool round trip.
 */
export function closeNow(fd: number): void {
  fs.closeSync(fd);
}

/** Write on this thread: for bytes going to the page cache, made durable later (see FileBackend.stageBatch). */
export function writeAllNow(fd: number, chunk: Uint8Array): void {
  let off = 0;
  while (off < chunk.byteLength) off += fs.writeSync(fd, chunk, off, chunk.byteLength - off);
}

export async function writeAll(fd: number, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.byteLength) {
    off += await call<number>((cb) => fs.write(fd, chunk, off, chunk.byteLength - off, null, cb));
  }
}

/**
 * A stream's chunks written at increasing offsets with several writes in
 * flight on the thread pool, so that the producer makes the next chunk while
 * the kernel copies this one into the page cache (one write at a time left
 * the producer idle for a third of a 100 MiB NAR's upload). The chunks must
 * stay untouched until their write completes (the producer's pieces are the
 * consumer's to keep). The first failure is kept and thrown by the next
 * `write` or by `drain`; `drain` always waits for every write in flight, so
 * the descriptor may then be closed.
 *
 * With `flushEvery`, the bytes are also flushed to the disk behind the
 * writes: each time that many more have reached the page cache, an
 * fdatasync starts on the thread pool (one at a time) while the writes go
 * on. The caller's final fsync then waits only for the last few MiB instead
 * of the whole file (~60 ms for 100 MiB on this machine's disk, once the
 * upload's last byte was written). Those flushes are not the durability
 * guarantee, the final fsync is; a failed one fails the file like a failed
 * write.
 */
export class WriteAhead {
  private offset = 0;
  private inFlight = 0;
  private readonly writes = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  /** Bytes whose write completed, and how many of them the latest flush covers. */
  private completed = 0;
  private flushedUpTo = 0;
  private flushing: Promise<void> | undefined;
  private draining = false;

  constructor(
    private readonly fd: number,
    /** Bytes written but not yet acknowledged before `write` waits. */
    private readonly maxBytes: number,
    /** Flush behind the writes every this many bytes; 0: never (the caller syncs). */
    private readonly flushEvery = 0,
    /** Called with each chunk once it is written (its memory may then be reused); not for a chunk whose write failed. */
    private readonly written?: (chunk: Uint8Array) => void,
  ) {}

  /** Bytes handed to the kernel so far. */
  get bytes(): number {
    return this.offset;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.throwIfFailed();
    const position = this.offset;
    this.offset += chunk.byteLength;
    this.inFlight += chunk.byteLength;
    const w = writeAllAt(this.fd, chunk, position).then(
      () => {
        this.inFlight -= chunk.byteLength;
        this.writes.delete(w);
        this.completed += chunk.byteLength;
        this.flushBehind();
        this.written?.(chunk);
      },
      (e: unknown) => {
        this.inFlight -= chunk.byteLength;
        this.writes.delete(w);
        this.failure ??= { error: e };
      },
    );
    this.writes.add(w);
    while (this.inFlight > this.maxBytes && !this.failure) await Promise.race(this.writes);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Start a flush when `flushEvery` more bytes are in the page cache and none runs. */
  private flushBehind(): void {
    if (this.flushEvery <= 0 || this.flushing || this.draining || this.failure) return;
    if (this.completed - this.flushedUpTo < this.flushEvery) return;
    this.flushedUpTo = this.completed;
    this.flushing = call<void>((cb) => fs.fdatasync(this.fd, cb)).then(
      () => {
        this.flushing = undefined;
        this.flushBehind();
      },
      (e: unknown) => {
        this.flushing = undefined;
        this.failure ??= { error: e };
      },
    );
  }

  /** Wait for every write and flush in flight (no flush starts after this is called); throws the first failure. */
  async drain(): Promise<void> {
    this.draining = true;
    while (this.writes.size > 0 || this.flushing) await Promise.all([...this.writes, this.flushing]);
    this.throwIfFailed();
  }
}

async function writeAllAt(fd: number, chunk: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < chunk.byteLength) {
    off += await call<number>((cb) => fs.write(fd, chunk, off, chunk.byteLength - off, position + off, cb));
  }
}

/**
 * A metadata call is slow when it takes longer than a thread-pool round trip
 * costs this thread. One that stalls this long is slow beyond doubt.
 */
export const SLOW_METADATA_CALL_MS = 0.1;
export const STALLED_METADATA_CALL_MS = 50;

/**
 * Where metadata calls run. On a local disk a create, rename or stat takes
 * microseconds, so they run on this thread. Once they prove slow (a network
 * file system; ext4 searching its inode tables after many deletions) they
 * go to the thread pool for good, so that JavaScript keeps running while
 * they wait. Creates and stats are timed (renames stay cheap where creates
 * are not): they leave when most of roughly the last 32 were slow, or one
 * stalled. A few are slow whenever this thread is descheduled; most, when
 * the file system is.
 */
export class MetadataCalls {
  private here = true;
  private timed = 0;
  private slowShare = 0;

  /** Whether calls still run on this thread. */
  get inline(): boolean {
    return this.here;
  }

  /** Run `inline` here, or `pooled` (the same call through the thread pool). */
  async run<T>(timed: boolean, inline: () => T, pooled: () => Promise<T>): Promise<T> {
    return this.here ? this.runHere(timed, inline) : pooled();
  }

  /** Run `inline` on this thread and time it; for a caller that has checked the `inline` getter itself. */
  runHere<T>(timed: boolean, inline: () => T): T {
    const t0 = monotonicMs();
    try {
      return inline();
    } finally {
      const ms = monotonicMs() - t0;
      if (timed) this.slowShare += ((ms > SLOW_METADATA_CALL_MS ? 1 : 0) - this.slowShare) / Math.min(++this.timed, 32);
      if (ms > STALLED_METADATA_CALL_MS || (this.timed >= 32 && this.slowShare > 0.5)) this.here = false;
    }
  }
}
