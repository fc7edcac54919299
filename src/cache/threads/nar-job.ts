/**
 * One large NAR's CPU work done whole on one thread: read and encode the
 * NAR, hash it (NarHash), compress it with zstd, hash the compressed bytes
 * (FileHash). The crypto threads run it (crypto-thread.ts, asked through
 * thread-pool.ts) when an upload has several large NARs: each thread then
 * takes whole NARs, as `nix copy` would on one core, and the main thread
 * only moves the compressed pieces to the cache. With one large NAR the
 * work is instead split between the main thread and a crypto thread
 * (../nar-producers.ts; ../plan.ts decides), which finishes one NAR sooner.
 *
 * The compressed pieces are fresh buffers (never lent), so they can be
 * handed to another thread without a copy. Whether the NAR is what the store
 * recorded is for the caller to check with the digests returned.
 */
import { createHash } from 'node:crypto';
import { dumpNar } from '../../nar/dump.js';
import { NarLister } from '../../nar/listing.js';
import { createChunkCompressor } from '../compression.js';

/** Compressed bytes a NAR job may have handed over and the consumer not yet taken. */
export const NAR_JOB_AHEAD = 8 << 20;

export interface NarJobRequest {
  readonly path: string;
  /** zstd level. */
  readonly level: number;
  /** What the store recorded: sizes the compressor's window, as for a NAR compressed on the main thread. */
  readonly narSize: number;
  /** When set, the NAR is also listed (nar/listing.ts), given up past this many bytes of listing. */
  readonly listingMaxBytes?: number;
}

export interface NarJobResult {
  readonly narDigest: Uint8Array;
  readonly narSize: number;
  readonly fileDigest: Uint8Array;
  readonly fileSize: number;
  /** With `listingMaxBytes`: the listing's JSON, or null when it was over that. */
  readonly listing?: Uint8Array | null;
}

/**
 * Run the job, giving each compressed piece to `emit` in order; when `emit`
 * returns a promise, the next piece waits for it. Stops, throwing
 * `cancelled()`'s error, once that returns one.
 */
export async function runNarJob(
  req: NarJobRequest,
  emit: (piece: Buffer, narBytes: number) => Promise<void> | undefined,
  cancelled: () => Error | undefined,
): Promise<NarJobResult> {
  const compressor = (await createChunkCompressor({ method: 'zstd', level: req.level }, req.narSize))!;
  const narHash = createHash('sha256');
  const fileHash = createHash('sha256');
  const lister = req.listingMaxBytes !== undefined ? new NarLister(req.listingMaxBytes) : undefined;
  let narSize = 0;
  let fileSize = 0;
  const out = async (pieces: Buffer[]): Promise<void> => {
    for (const piece of pieces) {
      fileHash.update(piece);
      fileSize += piece.length;
      const wait = emit(piece, narSize);
      if (wait) await wait;
    }
  };
  for await (const chunk of dumpNar(req.path, { reuseBuffers: true })) {
    const stop = cancelled();
    if (stop) throw stop;
    // All are done with the lent chunk when they return.
    narHash.update(chunk);
    lister?.update(chunk);
    narSize += chunk.length;
    await out(compressor.update(chunk));
  }
  await out(compressor.end());
  const listing = lister === undefined ? {} : { listing: lister.finish() ?? null };
  return { narDigest: narHash.digest(), narSize, fileDigest: fileHash.digest(), fileSize, ...listing };
}
