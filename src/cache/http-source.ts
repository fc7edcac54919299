/**
 * Reading narinfos from an http(s):// binary cache (an upstream such as
 * https://cache.nixos.org), with Node's built-in fetch. Read-only: it never
 * writes. Every request has a timeout, so an upstream that hangs costs at
 * most that long. 404, 403 and 410 mean "not there", as Nix reads them (S3
 * answers 403 for a missing key of a bucket that may not be listed);
 * anything else that is not 200 is a failure of the cache.
 */
import { NarpushError } from '../errors.js';
import { MAX_GET_BYTES } from './backend.js';
import type { NarInfoSource } from './upstream.js';

/** Default time one request may take, headers and body. */
export const HTTP_TIMEOUT_MS = 10_000;

export class HttpNarInfoSource implements NarInfoSource {
  readonly description: string;
  private readonly base: string;
  private readonly closing = new AbortController();

  constructor(url: string, private readonly timeoutMs: number = HTTP_TIMEOUT_MS) {
    this.base = url.replace(/\/+$/, '');
    this.description = this.base.replace(/(:\/\/)[^/?#@]*@/, '$1***@');
  }

  async get(key: string): Promise<Buffer | undefined> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.closing.signal]);
    let res: Response;
    try {
      res = await fetch(`${this.base}/${key}`, { signal, redirect: 'follow' });
    } catch (e) {
      const why = signal.aborted ? `no answer within ${this.timeoutMs / 1000} s` : describe(e);
      throw new NarpushError('UPSTREAM_FAILED', `${this.description}: ${why}`, { cause: e });
    }
    if (res.status === 404 || res.status === 403 || res.status === 410) {
      await res.body?.cancel();
      return undefined;
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new NarpushError('UPSTREAM_FAILED', `${this.description}: HTTP ${res.status} for ${key}`);
    }
    const length = Number(res.headers.get('content-length') ?? 0);
    if (length > MAX_GET_BYTES) {
      await res.body?.cancel();
      throw new NarpushError('UPSTREAM_FAILED', `${this.description}: ${key} is ${length} bytes, too large for a narinfo`);
    }
    let body: Buffer;
    try {
      body = Buffer.from(await res.arrayBuffer());
      if (body.length > MAX_GET_BYTES) throw new Error(`${key} is too large for a narinfo`);
    } catch (e) {
      throw new NarpushError('UPSTREAM_FAILED', `${this.description}: ${describe(e)}`, { cause: e });
    }
    return undoLeftEncoding(body, res.headers.get('content-encoding'), `${key} from ${this.description}`);
  }

  async close(): Promise<void> {
    this.closing.abort();
  }
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/**
 * fetch undoes gzip, deflate and br (and, depending on the Node version,
 * zstd) itself, but keeps the Content-Encoding header. A narinfo Nix wrote
 * with `narinfo-compression=xz` (or zstd, where fetch leaves it) and a
 * server that passes the encoding on still arrives encoded: undone here
 * when the header says so and the bytes start as that format does.
 */
async function undoLeftEncoding(body: Buffer, encoding: string | null, what: string): Promise<Buffer> {
  const e = (encoding ?? '').trim().toLowerCase();
  const left = (e === 'xz' && body.subarray(0, 6).equals(XZ_MAGIC)) || (e === 'zstd' && body.subarray(0, 4).equals(ZSTD_MAGIC));
  if (!left) return body;
  const { decodeContent } = await import('./content-encoding.js');
  try {
    return await decodeContent(body, e, what);
  } catch (err) {
    throw new NarpushError('UPSTREAM_FAILED', (err as Error).message, { cause: err });
  }
}

/** fetch's "fetch failed" hides the reason in `cause` (ECONNREFUSED, ENOTFOUND…). */
function describe(e: unknown): string {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const base = e instanceof Error ? e.message : String(e);
  return (cause?.code ?? cause?.message ?? base).split('\n')[0]!;
}
