/**
 * The one place that decides how an upload uses threads: per path, how its
 * NAR is produced (nar-producers.ts), and how many worker threads are worth
 * starting ahead of the work. Decided from the work alone (NAR sizes,
 * compression, cores); nothing else in the upload chooses a thread (zstd's
 * own native thread for a NAR from 32 MiB comes with that NAR's format,
 * chosen by its size in compression.ts; see below).
 *
 *  - A NAR up to `smallNarBytes` is built in memory and batched: for the
 *    many tiny paths of a typical closure, a stream, a hash thread and a
 *    multipart upload per path cost more than the data.
 *  - One large NAR is split between this thread and the crypto thread,
 *    which finishes that one NAR sooner than either alone; but where
 *    SHA-256 is fast (SHA extensions, hash/hash-speed.ts) it is produced
 *    inline: copying the bytes to the thread would cost this thread more
 *    than hashing them, and no thread needs to start for it.
 *  - From the second large NAR on (zstd on one encoder thread only, what a
 *    NAR job runs), each goes whole to a worker thread, one per core: the
 *    NARs then run side by side as `nix copy` runs them, and this thread
 *    only moves bytes. But only once the large NARs add up to
 *    WHOLE_MIN_BYTES, unless worker threads are running already (a
 *    daemon's, kept after its last upload): a worker thread takes 40-65 ms
 *    to start here (Node's own bootstrap), in which this thread reads,
 *    hashes and compresses roughly 10-15 MiB (an estimate: zstd and SHA-256
 *    of the benchmark's 24 MiB closure took 70-86 ms here in profiles);
 *    below that the NARs are produced here as one would be.
 *  - A zstd NAR from ZSTD_ASYNC_FROM (32 MiB) is compressed on zstd's own
 *    native thread (compression.ts), beside this thread's reading and
 *    hashing, with no Node thread to start: upload-path produces it here
 *    (or split), whatever else is uploaded, and it does not count toward
 *    the worker threads above. Two 48 MiB NARs: 0.93-1.03x the time of
 *    two worker threads; one 99 MiB NAR: 0.84-0.89x the time on one
 *    thread (docs/performance.md). Where the caller keeps this thread
 *    free (the daemon: wholeFromNars 1) it still goes whole, and zstd's
 *    thread then works beside the worker's.
 *  - xz uses the cores that fewer large NARs than cores leave idle: each
 *    large NAR's blocks are encoded that many at once (see `compression`).
 *  - Threads only when they pay: a thread's start-up (booting a Node
 *    isolate) costs far more than an Ed25519 signature by OpenSSL on this
 *    thread, so up to SIGN_HERE_MAX signatures, with no large NAR to stream
 *    (which needs the crypto thread anyway), are made here and no thread
 *    is started for them.
 */
import { ZSTD_ASYNC_FROM, type CompressionOptions } from './compression.js';
import { sha256IsFast } from '../hash/hash-speed.js';
import { canProduceWhole } from './nar-producers.js';

/**
 * NARs up to this size are built in memory, compressed in one call and put in
 * one request (see above).
 */
export const SMALL_NAR_BYTES = 512 * 1024;

/**
 * Large NARs go whole to worker threads only from this many bytes in all
 * (see above). Measured on the benchmark's 24 MiB closure of 7 NARs:
 * produced here, 0.90x and 0.92x the time of two worker threads
 * (docs/performance.md); its 103 MiB closure still gains from them.
 */
export const WHOLE_MIN_BYTES = 32 * 1024 * 1024;

/** Signatures (paths x keys) made on this thread when nothing else needs a thread: a few ms of work, less than one thread's start-up. */
export const SIGN_HERE_MAX = 64;

export type NarProduction = 'memory' | 'split' | 'inline' | 'whole';

/** How a NAR above the small size streams (a small one given here streams as split would). */
export function streamed(p: NarProduction): 'split' | 'inline' | 'whole' {
  return p === 'memory' ? 'split' : p;
}

export interface UploadWork {
  readonly compression: CompressionOptions;
  /** Large NARs uploaded at once. */
  readonly jobs: number;
  /** Cores the threads may use. */
  readonly cores: number;
  /** Keys each narinfo is signed with. */
  readonly signingKeys: number;
  /** NARs up to this size are built in memory (SMALL_NAR_BYTES unless set; tests set 0 to force streaming). */
  readonly smallNarBytes?: number;
  /** Large NARs go whole to worker threads only from this many bytes in all (WHOLE_MIN_BYTES unless set)... */
  readonly wholeMinBytes?: number;
  /** ...unless worker threads are running already (their start-up is paid). */
  readonly threadsRunning?: number;
  /** Large NARs go whole to worker threads from this many (2 unless set: one alone is produced here or split; the daemon sets 1). */
  readonly wholeFromNars?: number;
  /** Whether a NAR's hash runs here rather than on the crypto thread; measured (sha256IsFast) unless set. */
  readonly hashHere?: boolean;
}

/** Paths are added as they become known; the plan for them follows. */
export class UploadPlanner {
  /** Large NARs that may go whole to worker threads, and their bytes. */
  private large = 0;
  private largeBytes = 0;
  /** Large NARs produced here whatever else is uploaded (zstd's own thread compresses them). */
  private largeHere = 0;
  private paths = 0;
  private readonly small: number;

  constructor(private readonly work: UploadWork) {
    this.small = work.smallNarBytes ?? SMALL_NAR_BYTES;
  }

  /** Count a path to upload. */
  add(narSize: number): void {
    this.paths++;
    if (narSize <= this.small) return;
    if (this.zstdThreadAlone(narSize)) {
      this.largeHere++;
      return;
    }
    this.large++;
    this.largeBytes += narSize;
  }

  /** How a NAR of `narSize` bytes is produced, given the paths added so far. */
  production(narSize: number): NarProduction {
    if (narSize <= this.small) return 'memory';
    if (!this.zstdThreadAlone(narSize) && this.wholeNars()) return 'whole';
    return this.hashHere() ? 'inline' : 'split';
  }

  /**
   * The compression for a NAR of `narSize` bytes: as configured, but a large
   * xz NAR with no thread count set gets the cores the other large NARs
   * leave idle, as blocks encoded at once (compression.ts xzBlockSize; the
   * bytes are the same whatever the count).
   */
  compression(narSize: number): CompressionOptions {
    const c = this.work.compression;
    if (c.method !== 'xz' || c.threads !== undefined || narSize <= this.small) return c;
    const atOnce = Math.max(1, Math.min(this.large, this.work.jobs));
    const threads = Math.max(1, Math.floor(this.work.cores / atOnce));
    return threads > 1 ? { ...c, threads } : c;
  }

  /** Whether narinfo signatures are made on the crypto thread (else on this one; see SIGN_HERE_MAX). */
  signOnThread(): boolean {
    return this.needsThread() || this.paths * this.work.signingKeys > SIGN_HERE_MAX;
  }

  private wholeNars(): boolean {
    const minBytes = (this.work.threadsRunning ?? 0) > 0 ? 0 : (this.work.wholeMinBytes ?? WHOLE_MIN_BYTES);
    return this.large >= (this.work.wholeFromNars ?? 2) && this.largeBytes >= minBytes && canProduceWhole(this.work.compression);
  }

  /** Whether a NAR of `narSize` is produced here, zstd compressing it on its own thread (see above). */
  private zstdThreadAlone(narSize: number): boolean {
    return this.work.compression.method === 'zstd' && narSize >= ZSTD_ASYNC_FROM && (this.work.wholeFromNars ?? 2) >= 2;
  }

  private hashHere(): boolean {
    return this.work.hashHere ?? sha256IsFast();
  }

  /** Whether a large NAR needs a thread anyway (whole, or split). */
  private needsThread(): boolean {
    return (this.large > 0 && this.wholeNars()) || (this.large + this.largeHere > 0 && !this.hashHere());
  }

  /**
   * Threads worth starting now, for the paths added so far (started early,
   * their start-up overlaps reading the closure): one per core up to `jobs`
   * for whole NARs, else the crypto thread for a split NAR or many
   * signatures, else none.
   */
  threads(): number {
    if (this.wholeNars()) return Math.max(1, Math.min(this.work.jobs, this.work.cores, this.large));
    return this.needsThread() || (this.work.signingKeys > 0 && this.signOnThread()) ? 1 : 0;
  }
}
