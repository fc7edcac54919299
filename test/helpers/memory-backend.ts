/**
 * An in-memory CacheBackend for unit tests of the pipeline and of gc
 * (integration tests use the file:// backend and s3rver). It keeps the
 * contract that matters: a streamed object appears only when its body
 * completed. It logs every operation in order, can be told to fail chosen
 * keys, takes its time from an injected clock (each object's lastModified),
 * and can make every operation wait at a `gate` first, so that a test
 * (fast-check's scheduler) decides the order in which concurrent operations
 * take effect.
 */
import type { CacheBackend, IncompleteUpload, ListedObject, ObjectStat, PutBytesOptions, PutStreamOptions } from '../../src/cache/backend.js';

export interface LoggedOp {
  readonly op: 'get' | 'getStream' | 'exists' | 'putBytes' | 'putStream-start' | 'putStream-done' | 'putStream-aborted' | 'stat' | 'touch' | 'delete' | 'list';
  readonly key: string;
}

export interface StoredObject {
  body: Buffer;
  contentType: string;
  lastModified: Date;
  contentEncoding?: string;
}

export class MemoryBackend implements CacheBackend {
  readonly description = 'memory://test';
  readonly objects = new Map<string, StoredObject>();
  /** Uploads started and never completed (as S3 multipart uploads are), by id. */
  readonly incomplete = new Map<string, IncompleteUpload>();
  readonly log: LoggedOp[] = [];
  /** Keys (or key predicates) whose puts fail. */
  failPut: (key: string) => boolean = () => false;
  /** The time objects get as lastModified. */
  clock: () => Date = () => new Date();
  /** Awaited before each operation takes effect (a test's scheduler). */
  gate: (op: LoggedOp['op'], key: string) => Promise<void> = async () => {};

  async get(key: string): Promise<Buffer | undefined> {
    await this.gate('get', key);
    this.log.push({ op: 'get', key });
    return this.objects.get(key)?.body;
  }

  async getStream(key: string): Promise<AsyncIterable<Uint8Array> | undefined> {
    this.log.push({ op: 'getStream', key });
    const body = this.objects.get(key)?.body;
    if (body === undefined) return undefined;
    // In pieces, as a real backend delivers them.
    return (async function* () {
      for (let i = 0; i < body.length; i += 64 * 1024) yield body.subarray(i, i + 64 * 1024);
    })();
  }

  async exists(key: string): Promise<boolean> {
    await this.gate('exists', key);
    this.log.push({ op: 'exists', key });
    return this.objects.has(key);
  }

  async putBytes(key: string, body: Uint8Array, contentType: string, opts: PutBytesOptions = {}): Promise<void> {
    await this.gate('putBytes', key);
    if (this.failPut(key)) throw new Error(`injected failure for ${key}`);
    this.log.push({ op: 'putBytes', key });
    this.objects.set(key, {
      body: Buffer.from(body), contentType, lastModified: this.clock(),
      ...(opts.contentEncoding !== undefined && { contentEncoding: opts.contentEncoding }),
    });
  }

  async putStream(
    key: string,
    body: AsyncIterable<Uint8Array>,
    contentType: string,
    opts: PutStreamOptions = {},
  ): Promise<{ bytes: number }> {
    this.log.push({ op: 'putStream-start', key });
    const chunks: Buffer[] = [];
    try {
      for await (const c of body) {
        opts.signal?.throwIfAborted();
        chunks.push(Buffer.from(c));
      }
      await this.gate('putStream-done', key);
      if (this.failPut(key)) throw new Error(`injected failure for ${key}`);
    } catch (e) {
      this.log.push({ op: 'putStream-aborted', key });
      throw e;
    }
    const all = Buffer.concat(chunks);
    this.objects.set(key, { body: all, contentType, lastModified: this.clock() });
    this.log.push({ op: 'putStream-done', key });
    return { bytes: all.length };
  }

  /**
   * In key order, in pages of `listPage` keys, each page read when it is
   * asked for (as S3 pages are): objects put or deleted meanwhile may or may
   * not be seen, as on S3.
   */
  async *list(prefix: string): AsyncIterable<ListedObject> {
    let after = '';
    for (;;) {
      await this.gate('list', prefix);
      this.log.push({ op: 'list', key: prefix });
      const page = [...this.objects.keys()].filter((k) => k.startsWith(prefix) && k > after).sort().slice(0, this.listPage);
      if (page.length === 0) return;
      const listed = page.flatMap((key) => {
        const o = this.objects.get(key)!;
        return [{ key, size: o.body.length, lastModified: o.lastModified }];
      });
      yield* listed;
      after = page[page.length - 1]!;
    }
  }

  /** Keys per page of `list`. */
  listPage = 1000;

  async stat(key: string): Promise<ObjectStat | undefined> {
    await this.gate('stat', key);
    this.log.push({ op: 'stat', key });
    const o = this.objects.get(key);
    return o && { size: o.body.length, lastModified: o.lastModified };
  }

  async touch(key: string): Promise<boolean> {
    await this.gate('touch', key);
    this.log.push({ op: 'touch', key });
    const o = this.objects.get(key);
    if (!o) return false;
    o.lastModified = this.clock();
    return true;
  }

  async deleteMany(keys: readonly string[]): Promise<(Error | undefined)[]> {
    await this.gate('delete', keys.join(' '));
    for (const key of keys) {
      this.log.push({ op: 'delete', key });
      this.objects.delete(key);
    }
    return keys.map(() => undefined);
  }

  async *listIncomplete(): AsyncIterable<IncompleteUpload> {
    yield* [...this.incomplete.values()];
  }

  async abortIncomplete(upload: IncompleteUpload): Promise<void> {
    this.incomplete.delete(upload.id);
  }

  async close(): Promise<void> {}
}
