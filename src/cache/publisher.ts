/**
 * The publisher: the one place that decides when an uploaded path's narinfo
 * is shown and how each path of an upload ends. It never shows a narinfo
 *  - before the path's NAR is complete and durable and its narinfo staged
 *    (it is handed the staged narinfo only then: `staged`);
 *  - before the narinfos of all its references are shown, a reference
 *    outside the upload counting only when `available` says so (in the
 *    cache already, or served by an upstream: nothing waits for it);
 *  - after a collector ran since the upload's checks began (the fence,
 *    gc-fence.ts, is asked just before showing);
 * so a path whose reference failed fails too, and its narinfo is discarded.
 * A path is reported uploaded only once its shown narinfo is durable, and
 * every path ends exactly once, as `onUploaded` or `onFailed`.
 * It writes nothing itself: the staged objects do (backend.ts).
 */
import { NarpushError, isNarpushError } from '../errors.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import type { StagedObject } from './backend.js';
import type { UploadedNar } from './nar-upload.js';
import { monotonicMs } from '../clock.js';

export interface UploadedPath {
  readonly info: PathInfo;
  /** `nar.listing`, when a listing was asked for, is 'written' or 'too-large' (none written). */
  readonly nar: UploadedNar;
  readonly seconds: number;
}

/** Step 1 of a path, done: its NAR is complete and durable, its narinfo written but not shown. */
export interface StagedPath {
  readonly nar: UploadedNar;
  readonly staged: StagedObject;
}

/** The error a path fails with, for anything thrown while uploading it. */
export function asNarpushError(e: unknown, info: PathInfo): NarpushError {
  if (isNarpushError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new NarpushError('UPLOAD_FAILED', `uploading '${info.path.path}' failed: ${message}`, { cause: e });
}

export interface PublisherDeps {
  /** Whether a reference that is not being uploaded is there for clients: in the cache, or served upstream. */
  readonly available: (ref: StorePath) => boolean;
  /** GC_CONFLICT when a collector ran since the upload's checks began (GcFence); throws when that cannot be known. */
  readonly fence: { check(): Promise<NarpushError | undefined> };
  readonly onUploaded: (path: UploadedPath) => void;
  readonly onFailed: (info: PathInfo, error: NarpushError) => void;
}

type PathState = 'uploading' | 'staged' | 'shown' | 'uploaded' | 'failed';

/** One path being uploaded: its info, how far it got, and (once known) whether its narinfo is shown. */
interface PathRecord {
  readonly info: PathInfo;
  state: PathState;
  /** true once its narinfo is shown, false once it never will be. */
  readonly visible: Promise<boolean>;
  readonly settle: (shown: boolean) => void;
}

export class Publisher {
  private readonly records = new Map<string, PathRecord>();

  /** `paths`: every path this upload uploads (the others are judged by `available`). */
  constructor(
    paths: readonly PathInfo[],
    private readonly deps: PublisherDeps,
  ) {
    for (const info of paths) {
      let settle!: (shown: boolean) => void;
      const visible = new Promise<boolean>((resolve) => (settle = resolve));
      this.records.set(info.path.baseName, { info, state: 'uploading', visible, settle });
    }
  }

  /** Step 1 failed for `info`: it ends failed, and nothing that refers to it is shown. */
  failed(info: PathInfo, error: NarpushError): void {
    const r = this.record(info);
    r.settle(false);
    this.end(r, error);
  }

  /**
   * Step 1 done for `info` (`t0`: when it began, for the seconds reported).
   * Shows its narinfo once its references are shown, then waits until it is
   * durable; resolves when the path has ended.
   */
  async staged(info: PathInfo, { nar, staged }: StagedPath, t0: number): Promise<void> {
    const r = this.record(info);
    r.state = 'staged';
    const missing = (await this.referencesMissing(info)) ?? (await this.collectorRan(info));
    if (missing) {
      r.settle(false);
      await staged.discard();
      return this.end(r, missing);
    }
    try {
      await staged.publish();
    } catch (e) {
      r.settle(false);
      return this.end(r, asNarpushError(e, info));
    }
    r.state = 'shown';
    r.settle(true);
    // Reported uploaded only once it survives a crash (the daemon's journal relies on it).
    try {
      await staged.durable();
    } catch (e) {
      return this.end(r, asNarpushError(e, info));
    }
    r.state = 'uploaded';
    this.deps.onUploaded({ info, nar, seconds: (monotonicMs() - t0) / 1000 });
  }

  private record(info: PathInfo): PathRecord {
    const r = this.records.get(info.path.baseName);
    if (!r) throw new Error(`publisher: '${info.path.path}' is not part of this upload`);
    return r;
  }

  private end(r: PathRecord, error: NarpushError): void {
    r.state = 'failed';
    this.deps.onFailed(r.info, error);
  }

  /** Undefined once every reference's narinfo is shown (waiting for those being uploaded), else the error why not. */
  private async referencesMissing(info: PathInfo): Promise<NarpushError | undefined> {
    for (const ref of info.references) {
      if (ref.baseName === info.path.baseName) continue;
      const pending = this.records.get(ref.baseName)?.visible;
      if (pending ? await pending : this.deps.available(ref)) continue;
      const why = pending ? 'failed to upload' : 'is not in the cache (upload it, or leave out --no-closure)';
      return new NarpushError('REFERENCE_MISSING', `not publishing '${info.path.path}': its reference '${ref.path}' ${why}`);
    }
    return undefined;
  }

  /** GC_CONFLICT if a collector ran since the checks began (see gc-fence.ts), or the error listing its markers. */
  private async collectorRan(info: PathInfo): Promise<NarpushError | undefined> {
    try {
      return await this.deps.fence.check();
    } catch (e) {
      return asNarpushError(e, info);
    }
  }
}
