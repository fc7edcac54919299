/**
 * Where a binary cache lives: the small interface the upload pipeline writes
 * through (cli/open-backend.ts opens a file:// or s3:// one from a parsed
 * `--to` URL). Keys are relative paths in Nix's cache layout (`nix-cache-info`,
 * `<hash>.narinfo`, `nar/<…>.nar.xz`).
 *
 * Backends never hold a whole NAR in memory, never make a partial object
 * visible, and never delete an object they did not just create (a key may
 * already hold the same content-addressed NAR that a published narinfo uses)
 * unless `deleteMany` names it.
 * The S3 SDK is imported only when an s3:// backend is opened. Deleting is
 * the garbage collector's alone (`deleteMany`, see src/gc/): the upload
 * pipeline never calls it.
 *
 * Every put resolves only once its object is both visible and durable. A
 * backend where those are separate steps (file://: rename, then directory
 * fsync) may also offer `stageBatch`, so that a caller publishing objects in
 * a dependency order (narinfos after their references') pays for durability
 * once per group instead of once per link of the chain, and a batch of small
 * objects costs one round of waiting for the disk instead of one each.
 */
import { NarpushError } from '../errors.js';

/** The largest object `get` will read into memory (narinfo and nix-cache-info are a few KiB). */
export const MAX_GET_BYTES = 16 * 1024 * 1024;

export interface PutStreamOptions {
  /**
   * Expected size in bytes (for a NAR, its NarSize). S3 picks its part size
   * from it so that the object fits in 10,000 parts; without it the part size
   * is the S3 backend's default and objects are limited to 10,000 of those.
   */
  readonly sizeHint?: number;
  /** Aborting stops reading `body` at once and cleans up; the promise rejects with UPLOAD_ABORTED. */
  readonly signal?: AbortSignal;
  /**
   * Called when the backend no longer needs a chunk of `body` (written out,
   * or copied), so that its producer may fill the memory again. Optional for
   * backends: one that never calls it only costs the producer fresh buffers.
   */
  readonly chunkDone?: (chunk: Uint8Array) => void;
}

/**
 * A small object whose bytes are written and durable but not yet visible:
 * the caller decides when it appears. Use `publish` or `discard`, once.
 */
export interface StagedObject {
  /**
   * Make the object visible, atomically (whole or not at all). Once this
   * resolves readers see it, but it may not yet survive a crash.
   */
  publish(): Promise<void>;
  /** After `publish`: resolves once the published object survives a crash. */
  durable(): Promise<void>;
  /** Instead of `publish`: remove the staged bytes; nothing becomes visible. Never rejects. */
  discard(): Promise<void>;
}

/** A small object to write whole (see `stageBatch`). */
export interface SmallObject {
  readonly key: string;
  readonly body: Uint8Array;
  readonly contentType: string;
  /** The Content-Encoding `body` is in (S3 only, as PutBytesOptions.contentEncoding). */
  readonly contentEncoding?: string;
}

export interface PutBytesOptions {
  readonly contentEncoding?: string;
}

/** One object of a listing (see `list`). */

export interface ListedObject {
  readonly key: string;
  readonly size: number;
  readonly lastModified: Date;
}
/** What `stat` knows of one object. */
export interface ObjectStat {
  readonly size: number;
  readonly lastModified: Date;
  /** S3: the object's Content-Encoding, which a renewal (`touch`) must keep. */
  readonly contentEncoding?: string;
  /** S3: the object's ETag, so that a renewal copies the object this describes and no other. */
  readonly etag?: string;
}

/**
 * An upload that never completed and is invisible to `list`: an S3 multipart
 * upload (its parts cost storage), or a file:// temporary file. `id` is what
 * `abortIncomplete` needs; `key` is the object it would have become.
 */
export interface IncompleteUpload { readonly key: string; readonly id: string; readonly initiated: Date }

/** The most keys one `deleteMany` request carries (S3 DeleteObjects' limit). */
export const MAX_DELETE_BATCH = 1000;

export interface CacheBackend {
  /** For logs and messages, e.g. `s3://bucket (in eu-west-1)`; never contains secrets. */
  readonly description: string;
  /** A small object (at most MAX_GET_BYTES), or undefined when it does not exist. */
  get(key: string): Promise<Buffer | undefined>;
  exists(key: string): Promise<boolean>;
  /**
   * A large object (a NAR) as a stream, or undefined when it does not exist.
   * Chunks arrive as read (file://: 64 KiB; S3: as the socket delivers them),
   * so memory is bounded by the consumer. Aborting `signal` ends the stream
   * with UPLOAD_ABORTED. The caller must iterate the stream, to its end or
   * until it stops early (which releases the handle): a stream never
   * iterated keeps its file handle or socket.
   */
  getStream(key: string, opts?: { signal?: AbortSignal }): Promise<AsyncIterable<Uint8Array> | undefined>;
  /** Every object whose key starts with `prefix` ('' = all), in pages; never the backend's own temporary files. */
  list(prefix: string, opts?: { signal?: AbortSignal }): AsyncIterable<ListedObject>;
  /**
   * Write a small object in one request / one atomic rename; memory: the body
   * the caller holds. `contentEncoding` (S3 only: the object's
   * Content-Encoding, which HTTP clients such as Nix undo) says how `body` is
   * compressed; the file:// backend has no such metadata and refuses it.
   */
  putBytes(key: string, body: Uint8Array, contentType: string, opts?: PutBytesOptions): Promise<void>;
  /**
   * Optional: true when `putStream` is done with each chunk of its body
   * (has copied it) before it asks for the next one. A producer may then
   * lend its buffers: reuse a chunk's memory once the next chunk is asked
   * for, instead of handing out a fresh copy of every byte.
   */
  readonly putStreamCopies?: boolean;
  /**
   * Stream a large object (a NAR). It becomes visible only when complete: if
   * `body` throws (even after its last byte) or `signal` aborts, nothing is
   * left behind (the multipart upload is aborted / the temp file removed)
   * and the promise settles only after that clean-up. Memory is bounded by
   * the backend: S3 holds at most (queueSize + 1) parts, file:// one chunk.
   */
  putStream(
    key: string,
    body: AsyncIterable<Uint8Array>,
    contentType: string,
    opts?: PutStreamOptions,
  ): Promise<{ readonly bytes: number }>;
  /**
   * Optional: `putBytes` in steps (see StagedObject), for many objects at
   * once, for backends where a visible object is not yet durable. One result
   * per object, in order: each object succeeds or fails alone, and a failed
   * one leaves nothing behind. Use the function `stageBatch`, which falls
   * back to `putBytes` for backends without it.
   */
  stageBatch?(objects: readonly SmallObject[]): Promise<PromiseSettledResult<StagedObject>[]>;
  /** Every object whose key starts with `prefix` ('' = all), in pages; never the backend's own temporary files. */
  list(prefix: string, opts?: { signal?: AbortSignal }): AsyncIterable<ListedObject>;
  /**
   * Optional: size and last-modified time of one object, undefined when it
   * does not exist (one HEAD / stat). Without it uploaders cannot refresh
   * narinfos (see refresh.ts) and only ask `exists`.
   */
  stat?(key: string): Promise<ObjectStat | undefined>;
  /**
   * Optional: renew an existing object's last-modified time without changing
   * its bytes or how they are read (S3: copy onto itself, keeping its
   * Content-Encoding; file://: utimes). `current`: what `stat` said of it,
   * else it is asked again. Never creates an object: resolves false when
   * `key` does not exist (any more). True as well when the object was
   * replaced since `current` was read: the new one is as young.
   */
  touch?(key: string, contentType: string, current?: ObjectStat): Promise<boolean>;
  /**
   * Optional (only `narpush gc` deletes): remove these keys, at most
   * MAX_DELETE_BATCH, in one request where the backend has one. A key that
   * is already gone counts as deleted. One result per key, in order: the
   * error for each key that could not be deleted.
   */
  deleteMany?(keys: readonly string[]): Promise<(Error | undefined)[]>;
  /** Optional: uploads started and never completed (see IncompleteUpload). */
  listIncomplete?(opts?: { signal?: AbortSignal }): AsyncIterable<IncompleteUpload>;
  /** Optional: give up an incomplete upload and free what it holds. A vanished one is not an error. */
  abortIncomplete?(upload: IncompleteUpload): Promise<void>;
  /** Release sockets and handles; the backend must not be used afterwards. */
  close(): Promise<void>;
}

/** The operations that only read: what a checker such as `narpush verify` is given. */
export type CacheReader = Pick<CacheBackend, 'description' | 'get' | 'exists' | 'getStream' | 'list'>;

/**
 * A view of `backend` that has no write operation at all, not even one
 * reachable by a cast: read-only by construction, not by convention.
 */
export function readOnlyView(backend: CacheBackend): CacheReader {
  return Object.freeze({
    description: backend.description,
    get: (key: string) => backend.get(key),
    exists: (key: string) => backend.exists(key),
    getStream: (key: string, opts?: { signal?: AbortSignal }) => backend.getStream(key, opts),
    list: (prefix: string, opts?: { signal?: AbortSignal }) => backend.list(prefix, opts),
  });
}

/**
 * Stage small objects on any backend. Without the capability (S3: a PUT is
 * visible and durable when acknowledged) nothing is sent until `publish`,
 * which is then `putBytes`, and `durable` has nothing left to wait for.
 */
export async function stageBatch(backend: CacheBackend, objects: readonly SmallObject[]): Promise<PromiseSettledResult<StagedObject>[]> {
  if (backend.stageBatch) return backend.stageBatch(objects);
  return objects.map(({ key, body, contentType, contentEncoding }) => ({
    status: 'fulfilled',
    value: {
      publish: () => backend.putBytes(key, body, contentType, contentEncoding === undefined ? undefined : { contentEncoding }),
      durable: async () => {},
      discard: async () => {},
    },
  }));
}

/** One object through `stageBatch`: staged, or the error why not. */
export async function stageBytes(backend: CacheBackend, object: SmallObject): Promise<StagedObject> {
  const [r] = await stageBatch(backend, [object]);
  if (r!.status === 'rejected') throw r!.reason;
  return r!.value;
}

/**
 * Keys are relative, slash-separated paths with no empty, `.` or `..`
 * segments: the file backend joins them to its directory, so this is also
 * what keeps a write inside the cache.
 */
export function checkCacheKey(key: string): string {
  const ok =
    key.length > 0 &&
    key.length <= 1024 &&
    !/[\0-\x1f\x7f\\]/.test(key) &&
    key.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
  if (!ok) throw new NarpushError('BAD_CACHE_KEY', `invalid cache key '${key}': expected a relative path such as nar/<hash>.nar.xz`);
  return key;
}

export function abortedError(what: string, reason?: unknown): NarpushError {
  return new NarpushError('UPLOAD_ABORTED', `upload of ${what} was aborted`, { cause: reason });
}

/**
 * Iterate `body`, stopping as soon as `signal` aborts even while the source is
 * waiting for data (it is then asked to stop with `return()`, not awaited).
 * Chunks are passed through as they are: no copy, no buffering.
 *
 * Each wait races the source against a promise made for that wait alone. A
 * single long-lived abort promise raced against every chunk would collect one
 * reaction per chunk, each keeping that chunk alive: a leak as large as the
 * upload.
 */
export async function* abortable(
  body: AsyncIterable<Uint8Array>,
  signal: AbortSignal | undefined,
  what: string,
): AsyncGenerator<Uint8Array, void, undefined> {
  if (!signal) {
    yield* body;
    return;
  }
  const it = body[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      if (signal.aborted) throw abortedError(what, signal.reason);
      const next = it.next();
      let onAbort: (() => void) | undefined;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortedError(what, signal.reason));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      let r: IteratorResult<Uint8Array>;
      try {
        r = await Promise.race([next, aborted]);
      } catch (e) {
        next.catch(() => {}); // the source may still fail after we stopped listening
        throw e;
      } finally {
        signal.removeEventListener('abort', onAbort!);
      }
      if (r.done) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!finished) void Promise.resolve(it.return?.()).catch(() => {});
  }
}
