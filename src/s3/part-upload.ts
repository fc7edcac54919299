/**
 * One streamed object into S3, cut into parts: what putStream runs for a NAR.
 *
 * - The body's chunks are copied once each, as they arrive, into the part
 *   being filled; a chunk is done with when `next()` is called again, so a
 *   producer may lend its buffers. Part buffers come from a small pool of
 *   this upload's own and go back to it when their UploadPart request has
 *   settled (retries included: the SDK re-sends the same buffer), so memory
 *   is at most (queueSize + 1) x partSize: queueSize parts in flight and the
 *   one being filled. When queueSize parts are in flight, reading the body
 *   waits for one of them.
 * - A body of at most one part is sent as one PutObject, and only once it
 *   has ended: the multipart upload is created when a second part begins.
 *   A full part goes out once the next byte arrives (only then is it known
 *   not to be the whole body), at most queueSize at once;
 *   CompleteMultipartUpload names the parts in order once the body has
 *   ended without error and every part was acknowledged.
 * - On any failure (the body throws, even after its last byte; a part
 *   fails; the signal aborts) reading stops (the producer is told with
 *   `return()`), parts in flight are waited for, the multipart upload is
 *   aborted, and only then does `run` reject, with the first failure. No
 *   object becomes visible: the only requests that make one are sent after
 *   the body ended cleanly.
 * - Every request except the clean-up is sent tied to this upload's stop
 *   signal (the caller's signal, or the first failure): the client makes no
 *   new attempt of it once that fires. In-flight requests are not cut: the
 *   clean-up waits for them, so no part lands after the abort.
 * - When the final request (PutObject, CompleteMultipartUpload) fails, its
 *   answer may have been lost after it took effect: `unsettled` then says
 *   what object it would have made (see multipart.ts), for the caller to
 *   compare with the key. No byte is hashed unless that happens (the single
 *   part of a failed PutObject).
 *
 * Imports only types of the SDK: the command classes come from the caller,
 * which loads the SDK when a backend is opened.
 */
import { createHash } from 'node:crypto';
import type * as S3 from '@aws-sdk/client-s3';
import { NarpushError } from '../errors.js';
import { abortable, abortedError } from '../cache/backend.js';
import { MAX_PARTS, multipartEtag, type ExpectedObject, type UploadedPart } from './multipart.js';
import type { StorageClass } from './s3-config.js';

type Commands = Pick<
  typeof S3,
  'PutObjectCommand' | 'CreateMultipartUploadCommand' | 'UploadPartCommand' | 'CompleteMultipartUploadCommand' | 'AbortMultipartUploadCommand'
>;

/**
 * Send one command through the client (which retries it). With `signal`,
 * the client makes no new attempt once it has aborted; the clean-up
 * (AbortMultipartUpload) is sent without one.
 */
export type SendCommand = (command: object, signal: AbortSignal | undefined) => Promise<unknown>;

export interface PartUploadParams {
  readonly sdk: Commands;
  readonly send: SendCommand;
  readonly bucket: string;
  readonly key: string;
  readonly contentType: string;
  readonly storageClass?: StorageClass;
  /** Bytes per part (the last may be shorter); at least S3's 5 MiB except in tests of a server that allows less. */
  readonly partSize: number;
  /** Parts in flight at most (>= 1). */
  readonly queueSize: number;
  /**
   * `checksum=when-supported`: the multipart upload declares CRC32 (the
   * client then adds one to every part) and Complete carries each part's.
   */
  readonly checksums: boolean;
  readonly signal?: AbortSignal;
  /** For messages: `<key> to <cache>`. */
  readonly what: string;
}

/** The checksum fields an UploadPart answer may carry, passed on to Complete as they came. */
const PART_CHECKSUMS = ['ChecksumCRC32', 'ChecksumCRC32C', 'ChecksumCRC64NVME', 'ChecksumSHA1', 'ChecksumSHA256'] as const;

interface DonePart extends UploadedPart {
  readonly completed: S3.CompletedPart;
}

export class PartUpload {
  /** Bytes taken from the body so far. */
  bytes = 0;
  /** Whether the body itself threw (`bodyError`), as opposed to being stopped by this upload or the signal. */
  bodyFailed = false;
  bodyError: unknown = undefined;
  /** Set when the final request failed: the object it would have made (see the module comment). */
  unsettled: ExpectedObject | undefined = undefined;

  private readonly stop = new AbortController();
  private failure: { readonly error: unknown } | undefined;
  private readonly free: Buffer[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly parts: DonePart[] = [];
  private uploadId: Promise<string> | undefined;
  private wake: (() => void) | undefined;
  private partsSent = 0;

  constructor(private readonly p: PartUploadParams) {
    if (!(p.queueSize >= 1) || !(p.partSize >= 1)) throw new NarpushError('BAD_OPTION', 'queueSize and partSize must be at least 1');
  }

  /** Upload `body`; resolves once the object is complete, rejects after the clean-up (see the module comment). */
  async run(body: AsyncIterable<Uint8Array>): Promise<void> {
    const { signal } = this.p;
    const onAbort = (): void => this.fail(abortedError(this.p.what, signal!.reason));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const last = await this.read(body);
      if (!this.failure) {
        if (this.uploadId === undefined) return await this.putWhole(last);
        if (last.buffer !== undefined && last.length > 0) await this.dispatch(last.buffer, last.length);
        else this.release(last.buffer);
        await this.settleParts();
        if (!this.failure) return await this.complete();
      } else {
        this.release(last.buffer);
      }
      await this.settleParts();
      await this.abortMultipart();
      throw this.failure!.error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Read the body into parts, sending each full one once the next byte
   * arrives; returns the part being filled when the body ended or the upload
   * failed (possibly empty).
   */
  private async read(body: AsyncIterable<Uint8Array>): Promise<{ buffer: Buffer | undefined; length: number }> {
    const { partSize } = this.p;
    const it = abortable(body, this.stop.signal, this.p.what)[Symbol.asyncIterator]();
    let cur: Buffer | undefined;
    let fill = 0;
    for (;;) {
      let r: IteratorResult<Uint8Array>;
      try {
        r = await it.next();
      } catch (e) {
        // abortable throws once `stop` fires: that failure is already recorded.
        if (!this.stop.signal.aborted) {
          this.bodyFailed = true;
          this.bodyError = e;
          this.fail(e);
        }
        break;
      }
      if (r.done) break;
      const chunk = r.value;
      let off = 0;
      while (off < chunk.byteLength && !this.failure) {
        if (cur !== undefined && fill === partSize) {
          // A full part with more to come: not the last one, so the object is multipart.
          await this.dispatch(cur, fill);
          cur = undefined;
          if (this.failure) break;
        }
        if (cur === undefined) {
          cur = this.take();
          fill = 0;
        }
        const n = Math.min(chunk.byteLength - off, partSize - fill);
        cur.set(off === 0 && n === chunk.byteLength ? chunk : chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        this.bytes += n;
      }
      if (this.failure) {
        await it.return?.(undefined);
        break;
      }
    }
    return { buffer: cur, length: cur === undefined ? 0 : fill };
  }

  /** A part buffer: a free one, or a new one (at most queueSize + 1 exist, see dispatch). */
  private take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.p.partSize);
  }

  private release(buffer: Buffer | undefined): void {
    if (buffer !== undefined) this.free.push(buffer);
  }

  /** Record the first failure and stop: reading, waiting for a slot, and new attempts of requests. */
  private fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    this.stop.abort(error);
    this.wakeReader();
  }

  private wakeReader(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Send the next part once fewer than queueSize are in flight; its buffer comes back when the request settles. */
  private async dispatch(buffer: Buffer, length: number): Promise<void> {
    while (this.inFlight.size >= this.p.queueSize && !this.failure) await new Promise<void>((resolve) => (this.wake = resolve));
    if (this.failure) return this.release(buffer);
    const partNumber = ++this.partsSent;
    if (partNumber > MAX_PARTS) {
      this.release(buffer);
      return this.fail(
        new NarpushError(
          'UPLOAD_FAILED',
          `cannot upload ${this.p.what}: it is larger than ${MAX_PARTS} parts of ${this.p.partSize} bytes (larger than its size hint allowed for)`,
        ),
      );
    }
    this.uploadId ??= this.createMultipart();
    const task: Promise<void> = this.uploadPart(partNumber, buffer.subarray(0, length))
      .catch((e: unknown) => this.fail(e))
      .finally(() => {
        this.release(buffer);
        this.inFlight.delete(task);
        this.wakeReader();
      });
    this.inFlight.add(task);
  }

  private createMultipart(): Promise<string> {
    const { sdk, bucket, key } = this.p;
    const created = this.p
      .send(
        new sdk.CreateMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          ContentType: this.p.contentType,
          ...(this.p.storageClass !== undefined && { StorageClass: this.p.storageClass }),
          ...(this.p.checksums && { ChecksumAlgorithm: 'CRC32' }),
        }),
        this.stop.signal,
      )
      .then((out) => {
        const id = (out as S3.CreateMultipartUploadCommandOutput).UploadId;
        if (!id) throw new NarpushError('S3_ERROR', `cannot upload ${this.p.what}: the server started a multipart upload without an upload id`);
        return id;
      });
    // Its failure reaches run() through the parts that wait for it; nothing else may be left unhandled.
    created.catch(() => {});
    return created;
  }

  private async uploadPart(partNumber: number, body: Buffer): Promise<void> {
    const { sdk, bucket, key } = this.p;
    const uploadId = await this.uploadId!;
    if (this.failure) return;
    const out = (await this.p.send(
      new sdk.UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body }),
      this.stop.signal,
    )) as S3.UploadPartCommandOutput;
    if (!out.ETag) throw new NarpushError('S3_ERROR', `cannot upload ${this.p.what}: the server answered part ${partNumber} without an ETag`);
    const completed: S3.CompletedPart = { PartNumber: partNumber, ETag: out.ETag };
    for (const k of PART_CHECKSUMS) if (out[k] !== undefined) completed[k] = out[k];
    this.parts[partNumber - 1] = { size: body.byteLength, etag: out.ETag, completed };
  }

  /** Wait until no part is in flight (they never reject: failures are recorded). */
  private async settleParts(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** The whole body in one PutObject (it fits in one part). */
  private async putWhole(last: { buffer: Buffer | undefined; length: number }): Promise<void> {
    const body = last.buffer === undefined ? Buffer.alloc(0) : last.buffer.subarray(0, last.length);
    const { sdk, bucket, key } = this.p;
    try {
      await this.p.send(
        new sdk.PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: body,
          ContentType: this.p.contentType,
          ...(this.p.storageClass !== undefined && { StorageClass: this.p.storageClass }),
        }),
        this.stop.signal,
      );
    } catch (e) {
      this.unsettled = { size: body.byteLength, etag: createHash('md5').update(body).digest('hex') };
      throw e;
    } finally {
      this.release(last.buffer);
    }
  }

  private async complete(): Promise<void> {
    const { sdk, bucket, key } = this.p;
    const parts = this.parts;
    // Every part was acknowledged (no failure was recorded), so the list has no hole.
    if (parts.length !== this.partsSent || parts.some((x) => x === undefined)) {
      throw new NarpushError('UPLOAD_FAILED', `cannot upload ${this.p.what}: a part was not acknowledged`);
    }
    try {
      await this.p.send(
        new sdk.CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId: await this.uploadId!,
          MultipartUpload: { Parts: parts.map((x) => x.completed) },
        }),
        this.stop.signal,
      );
    } catch (e) {
      // radosgw answers Complete with an empty ETag: the prediction comes from the parts' answers alone.
      this.unsettled = {
        size: this.bytes,
        etag: multipartEtag(parts.map((x) => x.etag)),
        parts: parts.map(({ size, etag }) => ({ size, etag })),
      };
      // A Complete that did not take effect leaves the parts stored; one that did makes this a NoSuchUpload.
      await this.abortMultipart();
      throw e;
    }
  }

  /**
   * Abort the multipart upload, if one was created. Sent without a signal:
   * it is the clean-up itself. Its own failure is not reported over the
   * upload's (an upload left behind is listed by `narpush gc`).
   */
  private async abortMultipart(): Promise<void> {
    if (this.uploadId === undefined) return;
    let uploadId: string;
    try {
      uploadId = await this.uploadId;
    } catch {
      return; // never created
    }
    const { sdk, bucket, key } = this.p;
    try {
      await this.p.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }), undefined);
    } catch {
      // NoSuchUpload: completed or already gone; anything else: see above.
    }
  }
}
