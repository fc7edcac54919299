/**
 * An in-memory CacheBackend for unit tests of the pipeline (integration tests
 * use the file:// backend and s3rver). It keeps the contract that matters: a
 * streamed object appears only when its body completed. It logs every
 * operation in order and can be told to fail chosen keys.
 */
import type { CacheBackend, ListedObject, PutStreamOptions } from '../../src/cache/backend.js';

export interface LoggedOp {
  readonly op: 'get' | 'getStream' | 'list' | 'exists' | 'putBytes' | 'putStream-start' | 'putStream-done' | 'putStream-aborted';
  readonly key: string;
}

export class MemoryBackend implements CacheBackend {
  readonly description = 'memory://test';
  readonly objects = new Map<string, { body: Buffer; contentType: string }>();
  readonly log: LoggedOp[] = [];
  /** Keys (or key predicates) whose puts fail. */
  failPut: (key: string) => boolean = () => false;

  async get(key: string): Promise<Buffer | undefined> {
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

  async *list(prefix: string): AsyncGenerator<ListedObject> {
    this.log.push({ op: 'list', key: prefix });
    for (const [key, { body }] of [...this.objects]) {
      if (key.startsWith(prefix)) yield { key, size: body.length, lastModified: new Date(0) };
    }
  }

  async exists(key: string): Promise<boolean> {
    this.log.push({ op: 'exists', key });
    return this.objects.has(key);
  }

  async putBytes(key: string, body: Uint8Array, contentType: string): Promise<void> {
    if (this.failPut(key)) throw new Error(`injected failure for ${key}`);
    this.log.push({ op: 'putBytes', key });
    this.objects.set(key, { body: Buffer.from(body), contentType });
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
      if (this.failPut(key)) throw new Error(`injected failure for ${key}`);
    } catch (e) {
      this.log.push({ op: 'putStream-aborted', key });
      throw e;
    }
    const all = Buffer.concat(chunks);
    this.objects.set(key, { body: all, contentType });
    this.log.push({ op: 'putStream-done', key });
    return { bytes: all.length };
  }

  async close(): Promise<void> {}
}
