/**
 * The s3:// cache backend: AWS S3 or any S3-compatible server (MinIO,
 * Garage, s3rver …) through the AWS SDK v3, which is imported only when a
 * backend is opened so that CLI startup stays fast.
 *
 * - Credentials come from the SDK's standard chain (environment, shared
 *   config/credentials files with `profile`, SSO, container and instance
 *   metadata) unless the caller passes some: narpush itself never reads
 *   process.env, the SDK does so at the edge.
 * - Small objects go in one PutObject; NARs stream through part-upload.ts
 *   (one PutObject when they fit in one part, else a multipart upload).
 *   Memory per putStream is bounded by (queueSize + 1) x partSize:
 *   queueSize parts in flight plus the one being filled (4 x 5 MiB parts ~ 25 MiB
 *   for NARs up to 48 GiB).
 * - Every request, multipart parts included, is retried by SdkRetryStrategy
 *   (see retry.ts). Two timeouts turn a dead or frozen server into a failed
 *   attempt: connect (TCP/TLS, default 10 s) and idle (no byte sent or
 *   received on the request's socket, default 60 s), which covers the wait
 *   for the first byte of the answer, a body that stops arriving and a body
 *   the server stops reading. There is no total timeout: a large part on a
 *   slow but live link must not fail. URL parameters `connect-timeout` and
 *   `idle-timeout` override the defaults.
 * - A failed or aborted putStream waits for its in-flight parts, then aborts
 *   the multipart upload before it settles.
 *
 * - Listing is ListObjectsV2 / ListMultipartUploads, page by page; deleting
 *   (for `narpush gc` only) is DeleteObjects, up to 1,000 keys a request,
 *   keys the server reports as failed retried with the same backoff.
 *
 * Must never delete an object except by `deleteMany` (a key may hold a NAR
 * a published narinfo uses) and never put credentials into messages or
 * `description`.
 */
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { GetObjectCommandOutput as GetObjectOutput, S3Client } from '@aws-sdk/client-s3';
import { NarpushError } from '../errors.js';
import {
  MAX_DELETE_BATCH, MAX_GET_BYTES, abortable, abortedError, checkCacheKey, type CacheBackend, type IncompleteUpload,
  type ListedObject, type ObjectStat, type PutBytesOptions, type PutStreamOptions,
} from '../cache/backend.js';
import { decodeContent } from '../cache/content-encoding.js';
import type { S3Config } from './s3-config.js';
import { choosePartSize, partsMatch, unquoteEtag, type ExpectedObject } from './multipart.js';
import { PartUpload } from './part-upload.js';
import { DEFAULT_RETRY_POLICY, SdkRetryStrategy, backoffDelay, classifyFailure, isTimeout, type RetryEvent, type RetryPolicy } from './retry.js';
import { s3Error, type S3ErrorContext } from './s3-errors.js';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface S3BackendOptions {
  /** Explicit credentials (or a provider of them); default: the SDK's standard chain with the URL's `profile`. */
  readonly credentials?: S3Credentials | (() => Promise<S3Credentials>);
  /** Overrides of DEFAULT_RETRY_POLICY (tests use tiny delays). */
  readonly retry?: Partial<RetryPolicy>;
  /** Source of jitter in [0, 1); default Math.random. */
  readonly random?: () => number;
  /** Called before each retry (for logs and tests). */
  readonly onRetry?: (e: RetryEvent) => void;
  /** Time to establish a TCP/TLS connection; default the URL's connect-timeout, else 10 s. */
  readonly connectionTimeoutMs?: number;
  /** Time a socket may stay silent mid-request before it counts as dead; default the URL's idle-timeout, else 60 s. */
  readonly socketTimeoutMs?: number;
  /** Parts of one NAR uploaded in parallel, default 4. Memory: (queueSize + 1) x part size per upload. */
  readonly queueSize?: number;
  /** Sockets per client, default 50. */
  readonly maxSockets?: number;
}

type ClientS3 = typeof import('@aws-sdk/client-s3');

const SILENT = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };
// A connection that takes longer than this on a working network is not coming.
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
// S3 answers a request in well under a second; a minute of silence is a dead server, not a busy one,
// yet is long enough for a loaded S3-compatible server (MinIO on a busy disk) finishing a large part.
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
// The SDK's context key (@smithy/types SMITHY_CONTEXT_KEY), where it keeps the command being sent.
const SMITHY_CONTEXT_KEY = '__smithy_context';

// The SDK is CommonJS: import() would first have Node's ES module loader
// detect and parse its sources for their exports, about 30 ms more of this
// thread than require() on every command that opens an S3 cache.
const load = createRequire(import.meta.url);

/** Open an S3 backend. No request is made until the first operation. */
export async function openS3Backend(config: S3Config, opts: S3BackendOptions = {}): Promise<CacheBackend> {
  return new S3Backend(config, opts, load('@aws-sdk/client-s3') as ClientS3);
}

class S3Backend implements CacheBackend {
  readonly description: string;
  // part-upload.ts copies each chunk into a part buffer before it asks for the next.
  readonly putStreamCopies = true;
  private readonly client: S3Client;
  private readonly policy: RetryPolicy;
  private readonly random: () => number;
  private readonly queueSize: number;
  private readonly idleTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  // A putStream's requests are checked against its upload's stop signal (part-upload.ts) before each attempt.
  private readonly signals = new WeakMap<object, AbortSignal>();

  constructor(
    private readonly config: S3Config,
    private readonly opts: S3BackendOptions,
    private readonly sdk: ClientS3,
  ) {
    this.description = config.description;
    this.policy = { ...DEFAULT_RETRY_POLICY, ...opts.retry };
    if (!(this.policy.maxAttempts >= 1)) throw new NarpushError('BAD_OPTION', 'retry.maxAttempts must be at least 1');
    this.random = opts.random ?? Math.random;
    this.queueSize = Math.max(1, opts.queueSize ?? 4);
    this.connectTimeoutMs = opts.connectionTimeoutMs ?? config.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.idleTimeoutMs = opts.socketTimeoutMs ?? config.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const agent = { keepAlive: true, maxSockets: opts.maxSockets ?? 50 };
    this.client = new sdk.S3Client({
      region: config.region,
      ...(config.endpoint !== undefined && { endpoint: config.endpoint }),
      ...(config.endpoint === undefined && config.scheme === 'http' && { tls: false }),
      forcePathStyle: config.forcePathStyle,
      ...(config.profile !== undefined && { profile: config.profile }),
      ...(opts.credentials !== undefined && { credentials: credentialProvider(opts.credentials) }),
      // On AWS a wrong region is answered with a redirect the SDK can follow.
      followRegionRedirects: config.endpoint === undefined,
      maxAttempts: this.policy.maxAttempts,
      retryStrategy: new SdkRetryStrategy(this.policy, this.random, opts.onRetry),
      // Many S3-compatible servers reject the SDK's newer default CRC32 checksums; Nix sends none either (s3-config.ts).
      requestChecksumCalculation: config.checksum === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
      responseChecksumValidation: config.checksum === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
      logger: SILENT,
      requestHandler: {
        connectionTimeout: this.connectTimeoutMs,
        // An idle timeout (socket.setTimeout), not the SDK's requestTimeout, which is a total one.
        socketTimeout: this.idleTimeoutMs,
        httpAgent: agent,
        httpsAgent: agent,
        logger: SILENT,
      },
    });
    // Inside the retry loop (finalizeRequest, low priority): no new attempt once the upload is aborted.
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const cmd = (context as Record<string, { commandInstance?: object } | undefined>)[SMITHY_CONTEXT_KEY]?.commandInstance;
        const signal = cmd ? this.signals.get(cmd) : undefined;
        if (signal?.aborted) throw Object.assign(new Error('request aborted'), { name: 'AbortError' });
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'narpushAbortCheck' },
    );
  }

  private ctx(op: string): S3ErrorContext {
    const c = this.config;
    return {
      op,
      bucket: c.bucket,
      where: c.endpoint ?? `AWS region ${c.region}`,
      region: c.region,
      connectTimeoutMs: this.connectTimeoutMs,
      idleTimeoutMs: this.idleTimeoutMs,
      ...(c.profile !== undefined && { profile: c.profile }),
    };
  }

  async get(key: string): Promise<Buffer | undefined> {
    checkCacheKey(key);
    const got = await this.readObject(key, async (out) => {
      if ((out.ContentLength ?? 0) > MAX_GET_BYTES) {
        throw new NarpushError('CACHE_OBJECT_TOO_LARGE', `${key} in ${this.description} is ${out.ContentLength} bytes, more than a metadata file can be`);
      }
      return { stored: Buffer.from((await out.Body?.transformToByteArray()) ?? new Uint8Array()), encoding: out.ContentEncoding };
    });
    // What Nix wrote with narinfo-compression, ls-compression or log-compression (content-encoding.ts).
    return got && decodeContent(got.stored, got.encoding, `${key} in ${this.description}`);
  }

  /**
   * One GetObject, read whole by `read`; undefined when there is no such key.
   * The SDK retries the request; a reset while the body streams in happens
   * after it returned, so the whole read is retried here by the same policy.
   * A NarpushError from `read` is its verdict on the object, not retried.
   */
  private async readObject<T>(key: string, read: (out: GetObjectOutput) => Promise<T>): Promise<T | undefined> {
    const ctx = this.ctx(`read ${key}`);
    let timeouts = 0;
    for (let attempt = 1; ; attempt++) {
      let out: GetObjectOutput;
      try {
        out = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: key }));
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw s3Error(e, ctx);
      }
      try {
        return await read(out);
      } catch (e) {
        if (e instanceof NarpushError) throw e;
        const kind = classifyFailure(e);
        if (isTimeout(e)) timeouts++;
        if (kind === 'permanent' || attempt >= this.policy.maxAttempts || timeouts >= this.policy.maxTimeoutAttempts) throw s3Error(e, ctx);
        const delayMs = backoffDelay(attempt - 1, kind, this.policy, this.random);
        this.opts.onRetry?.({ attempt: attempt + 1, delayMs, kind, error: e });
        await sleep(delayMs);
      } finally {
        (out.Body as Readable | undefined)?.destroy?.();
      }
    }
  }

  async exists(key: string): Promise<boolean> {
    checkCacheKey(key);
    try {
      await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key: key }));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw s3Error(e, this.ctx(`check ${key}`));
    }
  }

  /**
   * One GetObject, streamed: the SDK retries until the answer's headers
   * arrive; a reset after that ends the stream with an error (a reader such
   * as verify reports it rather than silently starting over).
   */
  async getStream(key: string, opts: { signal?: AbortSignal } = {}): Promise<AsyncIterable<Uint8Array> | undefined> {
    checkCacheKey(key);
    const what = `reading ${key} from ${this.description}`;
    if (opts.signal?.aborted) throw abortedError(what, opts.signal.reason);
    let out;
    try {
      out = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: key }), {
        ...(opts.signal && { abortSignal: opts.signal }),
      });
    } catch (e) {
      if (opts.signal?.aborted) throw abortedError(what, opts.signal.reason);
      if (isNotFound(e)) return undefined;
      throw s3Error(e, this.ctx(`read ${key}`));
    }
    const body = out.Body as (Readable & AsyncIterable<Uint8Array>) | undefined;
    if (!body) return (async function* () {})();
    const ctx = this.ctx(`read ${key}`);
    return (async function* () {
      try {
        for await (const chunk of abortable(body, opts.signal, what)) yield chunk;
      } catch (e) {
        throw e instanceof NarpushError ? e : s3Error(e, ctx);
      } finally {
        body.destroy();
      }
    })();
  }

  /** ListObjectsV2, one page (up to 1,000 keys) at a time; each page request is retried by the SDK. */
  async *list(prefix: string, opts: { signal?: AbortSignal } = {}): AsyncGenerator<ListedObject> {
    let token: string | undefined;
    do {
      if (opts.signal?.aborted) throw abortedError(`listing ${this.description}`, opts.signal.reason);
      let page;
      try {
        page = await this.client.send(
          new this.sdk.ListObjectsV2Command({
            Bucket: this.config.bucket,
            ...(prefix !== '' && { Prefix: prefix }),
            ...(token !== undefined && { ContinuationToken: token }),
          }),
          { ...(opts.signal && { abortSignal: opts.signal }) },
        );
      } catch (e) {
        if (opts.signal?.aborted) throw abortedError(`listing ${this.description}`, opts.signal.reason);
        throw s3Error(e, this.ctx(prefix === '' ? 'list the bucket' : `list ${prefix}`));
      }
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async putBytes(key: string, body: Uint8Array, contentType: string, opts: PutBytesOptions = {}): Promise<void> {
    checkCacheKey(key);
    try {
      await this.client.send(
        new this.sdk.PutObjectCommand({
          Bucket: this.config.bucket,
          Key: key,
          Body: body,
          ContentType: contentType,
          ...(opts.contentEncoding !== undefined && { ContentEncoding: opts.contentEncoding }),
          ...this.storageClass(),
        }),
      );
    } catch (e) {
      throw s3Error(e, this.ctx(`upload ${key}`));
    }
  }

  async putStream(
    key: string,
    body: AsyncIterable<Uint8Array>,
    contentType: string,
    opts: PutStreamOptions = {},
  ): Promise<{ bytes: number }> {
    checkCacheKey(key);
    const what = `${key} to ${this.description}`;
    const { signal } = opts;
    if (signal?.aborted) throw abortedError(what, signal.reason);
    const upload = new PartUpload({
      sdk: this.sdk,
      send: (cmd, cmdSignal) => {
        if (cmdSignal) this.signals.set(cmd, cmdSignal);
        return this.client.send(cmd as Parameters<S3Client['send']>[0]);
      },
      bucket: this.config.bucket,
      key,
      contentType,
      ...(this.config.storageClass !== undefined && { storageClass: this.config.storageClass }),
      partSize: choosePartSize(opts.sizeHint, this.config.minPartSize),
      queueSize: this.queueSize,
      checksums: this.config.checksum === 'when-supported',
      ...(signal && { signal }),
      what,
    });
    try {
      await upload.run(body);
      return { bytes: upload.bytes };
    } catch (e) {
      if (signal?.aborted) throw abortedError(what, signal.reason);
      // The body's own error, as it threw it; a failure of ours that stopped the body is not one.
      if (upload.bodyFailed) throw upload.bodyError;
      const err = s3Error(e, this.ctx(`upload ${key}`));
      // Only a failure that may hide a success is worth a look (not a missing bucket or bad credentials).
      const unclear = err.code === 'S3_UNAVAILABLE' || err.code === 'S3_ERROR';
      if (upload.unsettled && unclear && (await this.completedDespite(key, upload.unsettled))) return { bytes: upload.bytes };
      throw err;
    }
  }

  async stat(key: string): Promise<ObjectStat | undefined> {
    checkCacheKey(key);
    try {
      const head = await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key: key }));
      return {
        size: head.ContentLength ?? 0,
        lastModified: head.LastModified ?? new Date(0),
        ...(head.ContentEncoding ? { contentEncoding: head.ContentEncoding } : {}),
        ...(head.ETag ? { etag: head.ETag } : {}),
      };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw s3Error(e, this.ctx(`check ${key}`));
    }
  }

  /**
   * A copy onto itself renews LastModified; S3 allows it only when something
   * changes, hence REPLACE. REPLACE drops every header the request does not
   * repeat: the Content-Encoding of a narinfo Nix wrote with
   * narinfo-compression=br must be given again, or the copy is Brotli bytes
   * that Nix reads as a corrupt narinfo. Only a copy of the object `current`
   * describes (its ETag): one replaced since keeps its own headers.
   */
  async touch(key: string, contentType: string, current?: ObjectStat): Promise<boolean> {
    checkCacheKey(key);
    const now = current ?? (await this.stat(key));
    if (now === undefined) return false;
    try {
      await this.client.send(
        new this.sdk.CopyObjectCommand({
          Bucket: this.config.bucket,
          Key: key,
          CopySource: `${this.config.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`,
          MetadataDirective: 'REPLACE',
          ContentType: contentType,
          ...(now.contentEncoding !== undefined && { ContentEncoding: now.contentEncoding }),
          ...(now.etag !== undefined && { CopySourceIfMatch: now.etag }),
          ...this.storageClass(),
        }),
      );
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      // Replaced between the stat and the copy: by an upload, just now.
      if (isPreconditionFailed(e)) return true;
      throw s3Error(e, this.ctx(`refresh ${key}`));
    }
  }

  async deleteMany(keys: readonly string[]): Promise<(Error | undefined)[]> {
    if (keys.length > MAX_DELETE_BATCH) throw new NarpushError('BAD_OPTION', `at most ${MAX_DELETE_BATCH} keys per delete request`);
    for (const k of keys) checkCacheKey(k);
    const result = new Map<string, Error | undefined>(keys.map((k) => [k, undefined]));
    let pending = [...keys];
    // The SDK retries the request; keys the server answers with a per-key error are retried here.
    for (let attempt = 1; pending.length > 0; attempt++) {
      let out;
      try {
        out = await this.client.send(
          new this.sdk.DeleteObjectsCommand({
            Bucket: this.config.bucket,
            Delete: { Objects: pending.map((Key) => ({ Key })), Quiet: true },
          }),
        );
      } catch (e) {
        const err = s3Error(e, this.ctx(`delete ${pending.length} objects`));
        for (const k of pending) result.set(k, err);
        break;
      }
      const failed = (out.Errors ?? []).filter((x) => x.Key !== undefined && result.has(x.Key));
      const retry: string[] = [];
      for (const f of failed) {
        const err = Object.assign(new Error(f.Message ?? f.Code ?? 'delete failed'), { name: f.Code ?? 'Error' });
        const kind = classifyFailure(err);
        if (f.Code === 'NoSuchKey') continue;
        result.set(f.Key!, new NarpushError('S3_ERROR', `cannot delete ${f.Key} from ${this.description}: ${f.Code ?? 'error'}`, { cause: err }));
        if (kind !== 'permanent' && attempt < this.policy.maxAttempts) retry.push(f.Key!);
      }
      if (retry.length > 0) await sleep(backoffDelay(attempt - 1, 'transient', this.policy, this.random));
      pending = retry;
      for (const k of retry) result.set(k, undefined);
    }
    return keys.map((k) => result.get(k));
  }

  async *listIncomplete(opts: { signal?: AbortSignal } = {}): AsyncIterable<IncompleteUpload> {
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      opts.signal?.throwIfAborted();
      let page;
      try {
        page = await this.client.send(
          new this.sdk.ListMultipartUploadsCommand({
            Bucket: this.config.bucket,
            ...(keyMarker !== undefined && { KeyMarker: keyMarker }),
            ...(idMarker !== undefined && { UploadIdMarker: idMarker }),
          }),
        );
      } catch (e) {
        // Some S3-compatible servers (s3rver) have no such listing: nothing to abort that we can see.
        const err = e as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
        if (err.name === 'NotImplemented' || err.Code === 'NotImplemented' || err.$metadata?.httpStatusCode === 501) {
          throw new NarpushError('INCOMPLETE_UNSUPPORTED', `${this.description} cannot list multipart uploads`, { cause: e });
        }
        throw s3Error(e, this.ctx('list multipart uploads'));
      }
      for (const u of page.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined) continue;
        yield { key: u.Key, id: u.UploadId, initiated: u.Initiated ?? new Date(0) };
      }
      if (!page.IsTruncated) return;
      keyMarker = page.NextKeyMarker;
      idMarker = page.NextUploadIdMarker;
    }
  }

  async abortIncomplete(upload: IncompleteUpload): Promise<void> {
    try {
      await this.client.send(new this.sdk.AbortMultipartUploadCommand({ Bucket: this.config.bucket, Key: upload.key, UploadId: upload.id }));
    } catch (e) {
      if ((e as { name?: string }).name === 'NoSuchUpload') return;
      throw s3Error(e, this.ctx(`abort the multipart upload of ${upload.key}`));
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private storageClass(): { StorageClass?: S3Config['storageClass'] } {
    return this.config.storageClass !== undefined ? { StorageClass: this.config.storageClass } : {};
  }

  /**
   * After an upload's final request (PutObject, CompleteMultipartUpload)
   * failed: did it take effect anyway? A Complete whose answer was lost and
   * whose retry was refused (NoSuchUpload, or s3rver's 500) leaves a complete
   * object. Only an object of our length and our content counts: its ETag is
   * the one predicted, or, from a server that gives multipart objects
   * md5(body) (s3rver: an ETag without the `-N` of a part count), it reads
   * back as our parts.
   */
  private async completedDespite(key: string, expected: ExpectedObject): Promise<boolean> {
    try {
      const head = await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key: key }));
      if (head.ContentLength !== expected.size) return false;
      const etag = unquoteEtag(head.ETag);
      if (expected.etag !== undefined && etag === expected.etag) return true;
      const parts = expected.parts;
      if (parts === undefined || /-\d+$/.test(etag)) return false;
      // Read back as it streams past; a reset halfway is retried (CI once saw a lost Complete answer and then a cut read).
      const matched = await this.readObject(key, async (out) => {
        const got = out.Body as (Readable & AsyncIterable<Uint8Array>) | undefined;
        return got ? partsMatch(got, parts) : expected.size === 0;
      });
      return matched === true;
    } catch {
      return false;
    }
  }
}

// The SDK annotates the credentials object it is given, so it gets a fresh copy each time.
function credentialProvider(c: S3Credentials | (() => Promise<S3Credentials>)): () => Promise<S3Credentials> {
  return async () => ({ ...(typeof c === 'function' ? await c() : c) });
}

function isPreconditionFailed(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === 'PreconditionFailed' || err.$metadata?.httpStatusCode === 412;
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  if (err.name === 'NoSuchBucket') return false;
  return err.name === 'NoSuchKey' || err.name === 'NotFound' || err.$metadata?.httpStatusCode === 404;
}
