/**
 * narpush's xz encoder: a Transform stream that writes one .xz stream whose
 * blocks are either compressed by liblzma (LZMA2 at the chosen preset) or,
 * for data no preset can shrink, stored as LZMA2 uncompressed chunks.
 *
 * Why: store paths are full of already-compressed bytes (tarballs, images,
 * .gz man pages, compressed firmware). liblzma spends as long on those as on
 * text, about 2 MB/s per core at preset 6, to emit them uncompressed anyway.
 * Here each 1 MiB segment is first tried with zstd's fastest level (about
 * 1 ms, see Probe); a segment that it cannot shrink by STORE_BELOW_SAVING is
 * stored, the rest goes through liblzma. Consecutive segments of the same kind share
 * a block, so compressible data keeps one liblzma stream (and its whole
 * dictionary) until stored data interrupts it. The output differs from
 * `xz -6` only in block boundaries and the check type (CRC32); its size is
 * within a fraction of a percent of liblzma's on such data.
 *
 * Memory: one liblzma encoder (about 94 MiB at preset 6) exists only while a
 * compressed block is open, and at most `encoderSlots` of them exist in the
 * process at once (default: one per core), whatever the number of parallel
 * uploads. Input is held one segment at a time.
 *
 * Must never emit a block whose check does not match its data, and must tear
 * down its liblzma encoder on destroy.
 */
import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import type lzmaTypes from 'lzma-native';
import { lzmaNative, zstdNapi } from './addons.js';
import { Slots } from './limit.js';
import {
  type BlockRecord,
  blockHeader,
  blockRecord,
  blockTrailer,
  crc32,
  lzma2DictProperty,
  lzma2End,
  storedChunks,
  streamEnd,
  streamHeader,
} from './xz-format.js';

/** Bytes judged at a time. */
export const SEGMENT_BYTES = 1 << 20;
/** A segment that zstd's fastest level shrinks by less than this fraction is stored. */
export const STORE_BELOW_SAVING = 0.01;

/** liblzma's dictionary size for presets 0-9. */
const PRESET_DICT: readonly number[] = [18, 20, 21, 22, 22, 23, 23, 24, 25, 26].map((log) => 2 ** log);

/** The smallest dictionary liblzma accepts. */
const MIN_DICT = 4096;

/**
 * LZMA2 options of liblzma's preset `level` (liblzma's lzma_lzma_preset),
 * with the dictionary no larger than the input needs, as the xz tool does
 * when it knows the size: a NAR of 300 bytes does not need the 94 MiB that
 * preset 6's match finder allocates for an 8 MiB dictionary, and the output
 * is the same.
 */
export function lzma2Options(level: number, sizeHint?: number): Record<string, number> {
  let dictSize = PRESET_DICT[level]!;
  if (sizeHint !== undefined) dictSize = Math.min(dictSize, Math.max(MIN_DICT, 2 ** Math.ceil(Math.log2(Math.max(1, sizeHint)))));
  const fast = level <= 3;
  return {
    dictSize,
    lc: 3,
    lp: 0,
    pb: 2,
    mode: fast ? 1 /* LZMA_MODE_FAST */ : 2 /* LZMA_MODE_NORMAL */,
    mf: level === 0 ? 0x03 /* HC3 */ : fast ? 0x04 /* HC4 */ : 0x14 /* BT4 */,
    niceLen: fast ? (level <= 1 ? 128 : 273) : level === 4 ? 16 : level === 5 ? 32 : 64,
    depth: fast ? [4, 8, 24, 48][level]! : 0,
  };
}

/** liblzma encoders in this process: one per core. */
export const defaultEncoderSlots = new Slots(availableParallelism());

export interface XzEncoderOptions {
  /** liblzma preset, 0-9. */
  readonly preset: number;
  /** The input's size when known (a NAR's NarSize): a smaller input gets a smaller dictionary. */
  readonly sizeHint?: number;
  /** Limit on simultaneous liblzma encoders; default defaultEncoderSlots. */
  readonly encoderSlots?: Slots;
  /**
   * A compressed block ends once it holds this many uncompressed bytes
   * (default: only where the data changes kind). Blocks are independent, so
   * they can be encoded at once; each costs the ratio a dictionary's warm-up.
   */
  readonly blockBytes?: number;
  /** Compressed blocks of this stream encoded at once (default 1); a block's input waits in memory meanwhile. */
  readonly maxBlocks?: number;
  /** Tests: segment size (default SEGMENT_BYTES). */
  readonly segmentBytes?: number;
  /** Force every segment one way instead of probing (tests; xzCompressBuffer probes once itself). */
  readonly decide?: (segment: Buffer) => 'lzma' | 'stored';
}

type Lzma = typeof lzmaTypes;
type Zstd = typeof import('zstd-napi');

let modules: Promise<{ lzma: Lzma; zstd: Zstd }> | undefined;
function loadModules(): Promise<{ lzma: Lzma; zstd: Zstd }> {
  modules ??= (async () => ({
    lzma: lzmaNative(),
    zstd: zstdNapi(),
  }))();
  return modules;
}

/**
 * What zstd's fastest level needs for each segment, given the segments
 * before it: long-distance matching over a window as large as xz's
 * dictionary finds what liblzma would find far back (a file repeated a few
 * MiB later, say), which one segment alone would hide. About 1 ms per MiB.
 */
export class Probe {
  private bytes = 0;
  private readonly stream: Transform & { flush(cb: (e?: Error | null) => void): void };

  constructor(zstd: Zstd, dictSize: number) {
    const windowLog = Math.min(27, Math.max(19, Math.ceil(Math.log2(dictSize))));
    this.stream = new zstd.CompressStream({ compressionLevel: 1, windowLog, enableLongDistanceMatching: true });
    // Only the sizes matter: count the output instead of queueing it.
    this.stream.push = (chunk: Buffer | null): boolean => {
      if (chunk) this.bytes += chunk.length;
      return true;
    };
  }

  /** Compressed bytes for `segment`, flushed so that they are all counted. */
  async cost(segment: Buffer): Promise<number> {
    const before = this.bytes;
    this.stream.write(segment);
    await new Promise<void>((resolve, reject) => this.stream.flush((e) => (e ? reject(e) : resolve())));
    return this.bytes - before;
  }

  destroy(): void {
    this.stream.destroy();
  }
}

/** Whether liblzma is worth running on a segment that the probe packed into `cost` bytes. */
export function worthCompressing(segmentBytes: number, cost: number): boolean {
  return cost < segmentBytes * (1 - STORE_BELOW_SAVING);
}

interface OpenBlock {
  readonly kind: 'lzma' | 'stored';
  uncompressed: number;
  compressed: number;
  crc: number;
  encoder?: Transform;
  finished?: Promise<unknown>;
  release?: () => void;
  /** Output made while an earlier block was still being written out. */
  readonly held: Buffer[];
  /** Its index record, once its trailer is out (or held). */
  record?: BlockRecord;
}

export class XzEncoder extends Transform {
  private readonly segmentBytes: number;
  private readonly blockBytes: number;
  private readonly maxBlocks: number;
  private readonly slots: Slots;
  private readonly dictProperty: number;
  private readonly lzmaOptions: Record<string, number>;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private block: OpenBlock | undefined;
  /** Blocks not yet written out whole, in stream order: the first one's output goes out as it comes, the others' is held. */
  private readonly unwritten: OpenBlock[] = [];
  /** liblzma blocks closed but still encoding, and when each is done. */
  private readonly encoding = new Map<OpenBlock, Promise<void>>();
  private readonly records: BlockRecord[] = [];
  private started = false;
  private probe: Probe | undefined;

  constructor(private readonly opts: XzEncoderOptions) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    if (!Number.isInteger(opts.preset) || opts.preset < 0 || opts.preset > 9) throw new RangeError(`xz preset ${opts.preset}`);
    this.segmentBytes = opts.segmentBytes ?? SEGMENT_BYTES;
    this.blockBytes = opts.blockBytes ?? Infinity;
    this.maxBlocks = Math.max(1, Math.floor(opts.maxBlocks ?? 1));
    this.slots = opts.encoderSlots ?? defaultEncoderSlots;
    this.lzmaOptions = lzma2Options(opts.preset, opts.sizeHint);
    this.dictProperty = lzma2DictProperty(this.lzmaOptions.dictSize!);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.segmentBytes) return callback();
    (async () => {
      while (this.pendingBytes >= this.segmentBytes) await this.encodeSegment(this.takeSegment(this.segmentBytes));
    })().then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    (async () => {
      if (this.pendingBytes > 0) await this.encodeSegment(this.takeSegment(this.pendingBytes));
      this.closeBlock();
      while (this.encoding.size > 0) await Promise.all([...this.encoding.values()]);
      this.probe?.destroy();
      this.begin();
      this.push(streamEnd(this.records));
    })().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const blocks = [...this.encoding.keys(), ...(this.block ? [this.block] : [])];
    this.block = undefined;
    for (const block of blocks) {
      block.encoder?.destroy();
      block.release?.();
    }
    this.probe?.destroy();
    callback(error);
  }

  private begin(): void {
    if (this.started) return;
    this.started = true;
    this.push(streamHeader());
  }

  /** Output of `block`, in stream order: out now if every block before it is out, else held until they are. */
  private out(block: OpenBlock, bytes: Buffer): void {
    if (this.unwritten[0] === block) this.push(bytes);
    else block.held.push(bytes);
  }

  /** `block` has its trailer: write out every block that is now complete at the head, and the next one's held output. */
  private finishBlock(block: OpenBlock): void {
    this.out(block, blockTrailer(block.compressed, block.crc));
    block.record = blockRecord(block.compressed, block.uncompressed);
    while (this.unwritten[0]?.record) {
      this.records.push(this.unwritten.shift()!.record!);
      const next = this.unwritten[0];
      if (next) for (const b of next.held.splice(0)) this.push(b);
    }
  }

  /** The first `n` pending bytes; the rest stay pending. */
  private takeSegment(n: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const rest = all.subarray(n);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingBytes = rest.length;
    return all.subarray(0, n);
  }

  private async encodeSegment(segment: Buffer): Promise<void> {
    const { lzma, zstd } = await loadModules();
    let kind: 'lzma' | 'stored';
    if (this.opts.decide) kind = this.opts.decide(segment);
    else {
      this.probe ??= new Probe(zstd, this.lzmaOptions.dictSize!);
      kind = worthCompressing(segment.length, await this.probe.cost(segment)) ? 'lzma' : 'stored';
    }
    // A block ends where the kind changes, and a compressed one once it holds blockBytes (see XzEncoderOptions).
    if (this.block && (this.block.kind !== kind || (kind === 'lzma' && this.block.uncompressed >= this.blockBytes))) this.closeBlock();
    this.begin();
    const block = this.block ?? (await this.openBlock(kind, lzma));
    block.crc = crc32(segment, block.crc);
    if (kind === 'stored') {
      for (const part of storedChunks(segment, block.uncompressed === 0)) {
        this.out(block, part);
        block.compressed += part.length;
      }
      block.uncompressed += segment.length;
      return;
    }
    block.uncompressed += segment.length;
    // With one block at a time, its encoder paces the input. With several,
    // a block's input waits in its encoder (at most blockBytes) so that the
    // next block can start beside it.
    if (!block.encoder!.write(segment) && this.maxBlocks === 1) await Promise.race([once(block.encoder!, 'drain'), block.finished]);
  }

  private async openBlock(kind: 'lzma' | 'stored', lzma: Lzma): Promise<OpenBlock> {
    const block: OpenBlock = { kind, uncompressed: 0, compressed: 0, crc: 0, held: [] };
    if (kind === 'lzma') {
      // This stream's own limit first, then the process's (encoderSlots).
      while (this.encoding.size >= this.maxBlocks) await Promise.race([...this.encoding.values()]);
      block.release = await this.slots.acquire();
      if (this.destroyed) {
        block.release();
        throw new Error('xz encoder destroyed');
      }
      const encoder = lzma.createStream('rawEncoder', {
        filters: [{ id: lzma.FILTER_LZMA2, options: this.lzmaOptions }],
      });
      encoder.on('data', (b: Buffer) => {
        block.compressed += b.length;
        this.out(block, b);
      });
      block.encoder = encoder;
      block.finished = once(encoder, 'end');
      // A failing encoder fails this stream; _flush also sees the rejection.
      block.finished.catch((e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))));
    }
    this.block = block;
    this.unwritten.push(block);
    this.out(block, blockHeader(this.dictProperty));
    return block;
  }

  /** Close the open block; a compressed one finishes encoding on its own (tracked in `encoding`). */
  private closeBlock(): void {
    const block = this.block;
    if (!block) return;
    this.block = undefined;
    if (!block.encoder) {
      const end = lzma2End();
      this.out(block, end);
      block.compressed += end.length;
      this.finishBlock(block);
      return;
    }
    block.encoder.end();
    const done = block.finished!.then(
      () => {
        this.encoding.delete(block);
        block.release?.();
        this.finishBlock(block);
      },
      (e: unknown) => {
        this.encoding.delete(block);
        block.release?.();
        throw e;
      },
    );
    done.catch(() => {}); // reported through destroy (see openBlock) and by _flush
    this.encoding.set(block, done);
  }
}

/** A whole (small) buffer as one .xz file, by the same rules as the stream. */
export async function xzCompressBuffer(data: Buffer, preset: number, opts: Omit<XzEncoderOptions, 'preset'> = {}): Promise<Buffer> {
  let decide = opts.decide;
  if (!decide && data.length <= SEGMENT_BYTES) {
    // One segment: a one-shot probe with a reused context, not a streaming one per buffer.
    const { zstd } = await loadModules();
    oneShotProbe ??= new zstd.Compressor();
    oneShotProbe.setParameters({ compressionLevel: 1 });
    const kind = worthCompressing(data.length, oneShotProbe.compress(data).length) ? 'lzma' : 'stored';
    decide = () => kind;
  }
  const encoder = new XzEncoder({ sizeHint: data.length, ...opts, preset, ...(decide ? { decide } : {}) });
  const out: Buffer[] = [];
  encoder.on('data', (b: Buffer) => out.push(b));
  const done = once(encoder, 'end');
  encoder.end(data);
  await done;
  return Buffer.concat(out);
}

let oneShotProbe: InstanceType<Zstd['Compressor']> | undefined;
