/**
 * Grouping the paths of an upload into units of work: each large path alone
 * (its NAR streamed), small ones in batches of at most `paths` paths and
 * `bytes` NAR bytes (a batch's NARs are held in memory at once). Pure: it
 * decides nothing about threads (plan.ts does, through `small`) and does no
 * I/O. Units come in the order of the paths, a batch as soon as it is full,
 * so the caller can start each one as it comes.
 */
import type { PathInfo } from '../store/path-info.js';

export type UploadUnit = { readonly kind: 'large'; readonly info: PathInfo } | { readonly kind: 'batch'; readonly infos: readonly PathInfo[] };

export interface BatchLimits {
  /** Paths per batch (at least one). */
  readonly paths: number;
  /** NAR bytes per batch; a single path above it is still a batch of one. */
  readonly bytes: number;
}

export function* uploadUnits(infos: Iterable<PathInfo>, small: (info: PathInfo) => boolean, limits: BatchLimits): Generator<UploadUnit> {
  let batch: PathInfo[] = [];
  let batchBytes = 0;
  for (const info of infos) {
    if (!small(info)) {
      yield { kind: 'large', info };
      continue;
    }
    if (batch.length > 0 && (batch.length >= limits.paths || batchBytes + info.narSize > limits.bytes)) {
      yield { kind: 'batch', infos: batch };
      batch = [];
      batchBytes = 0;
    }
    batch.push(info);
    batchBytes += info.narSize;
  }
  if (batch.length > 0) yield { kind: 'batch', infos: batch };
}
