/**
 * Metadata objects as S3 stores them: Nix's S3 store writes narinfos, `.ls`
 * listings and build logs compressed when asked to (`narinfo-compression`,
 * `ls-compression`, `log-compression`), and says so in the object's
 * Content-Encoding. HTTP clients, Nix among them, undo it; S3's own API
 * hands back the stored bytes. So `S3Backend.get` (and the http(s) upstream,
 * for what fetch leaves encoded) undoes it here, for what
 * Nix writes (br, xz, zstd, gzip), bounded like any metadata object: an
 * object that decodes to more than MAX_GET_BYTES is refused, not inflated.
 * bzip2 (which Nix can write too) and anything else are a one-line error.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NarpushError } from '../errors.js';
import { MAX_GET_BYTES } from './backend.js';
import { createDecompressor } from './compression.js';

/**
 * What narpush writes metadata with, as Nix's S3 store parameters
 * `narinfo-compression`, `ls-compression` and `log-compression` ask (s3://
 * only, as in Nix): none, or Brotli, what Hydra gives cache.nixos.org's
 * listings and logs (`ls-compression=br&log-compression=br`). Nix undoes it
 * when it reads them over HTTP or from S3.
 */
export const WRITTEN_CONTENT_ENCODINGS = ['none', 'br'] as const;
export type MetadataCompression = (typeof WRITTEN_CONTENT_ENCODINGS)[number];

/**
 * `body` Brotli-compressed, for an object stored with `Content-Encoding: br`.
 * node:zlib is loaded on first use (most uploads write no compressed
 * metadata; see xz-format.ts crc32). Not util.promisify: importing node:util
 * as an ES module makes Node 24 load node:worker_threads and a dozen more of
 * its modules at the start of every upload.
 */
export function encodeContent(body: Uint8Array, _encoding: 'br'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    process.getBuiltinModule('node:zlib').brotliCompress(body, (e, out) => (e ? reject(e) : resolve(out)));
  });
}

/** Content-Encoding values `decodeContent` undoes (lower case; none means the bytes as stored). */
export const DECODED_CONTENT_ENCODINGS = ['br', 'gzip', 'xz', 'zstd'] as const;

function tooLarge(what: string): NarpushError {
  return new NarpushError('CACHE_OBJECT_TOO_LARGE', `${what} decodes to more than ${MAX_GET_BYTES} bytes, more than a metadata file can be`);
}

async function throughStream(body: Buffer, method: 'xz' | 'zstd', what: string): Promise<Buffer> {
  const out: Buffer[] = [];
  let n = 0;
  await pipeline(Readable.from([body]), await createDecompressor(method), async (source: AsyncIterable<Buffer>) => {
    for await (const chunk of source) {
      n += chunk.length;
      if (n > MAX_GET_BYTES) throw tooLarge(what);
      out.push(chunk);
    }
  });
  return Buffer.concat(out);
}

/** `body` as its Content-Encoding `encoding` says it was encoded, decoded. `what` names the object in errors. */
export async function decodeContent(body: Buffer, encoding: string | undefined, what: string): Promise<Buffer> {
  const e = (encoding ?? '').trim().toLowerCase();
  if (e === '' || e === 'identity') return body;
  try {
    switch (e) {
      case 'br':
        return process.getBuiltinModule('node:zlib').brotliDecompressSync(body, { maxOutputLength: MAX_GET_BYTES });
      case 'gzip':
      case 'x-gzip':
        return process.getBuiltinModule('node:zlib').gunzipSync(body, { maxOutputLength: MAX_GET_BYTES });
      case 'xz':
      case 'zstd':
        return await throughStream(body, e, what);
    }
  } catch (err) {
    if (err instanceof NarpushError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(what);
    throw new NarpushError('BAD_CONTENT_ENCODING', `${what} is not valid ${e} (its Content-Encoding): ${(err as Error).message.split('\n')[0]}`, { cause: err });
  }
  throw new NarpushError(
    'BAD_CONTENT_ENCODING',
    `${what} has Content-Encoding '${e}', which narpush cannot undo (it reads ${DECODED_CONTENT_ENCODINGS.join(', ')}); rewrite the object without it`,
  );
}
