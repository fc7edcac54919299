/**
 * One pass over a NAR object as a cache holds it: the compressed bytes are
 * counted and hashed (FileSize, FileHash), decompressed, counted and hashed
 * again (NarSize, NarHash) and fed to the strict NAR decoder, all as the
 * bytes stream past. Nothing is compared here: the caller holds the narinfo.
 *
 * Memory: the chunks in flight (the source's chunk, the decompressor's
 * buffers, the decoder's current token), plus the decompressor's window:
 * xz up to its dictionary (8 MiB at Nix's default preset 6, 64 MiB at 9),
 * zstd up to its window (at most 128 MiB, zstd's default decoding limit),
 * brotli up to 16 MiB, gzip 32 KiB. Never the NAR itself.
 *
 * Compressions a Nix cache may hold (Nix 2.8 writes any libarchive filter:
 * xz, bzip2, zstd, br, gzip, lzip, lz4 …; none). Decompressed here: none, xz,
 * zstd, br and gzip. The others (bzip2 above all, Nix's old default) are
 * still counted and hashed, and the result says the contents went unchecked.
 * Must never buffer a whole NAR, nor write anything anywhere.
 */
import { createHash, type Hash as Hasher } from 'node:crypto';
import { once } from 'node:events';
import type { Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { isNarpushError } from '../errors.js';
import type { Hash, HashAlgo } from '../hash/hash.js';
import { decodeNar } from '../nar/decode.js';
import { createDecompressor } from './compression.js';

export const CHECKED_COMPRESSIONS: readonly string[] = ['none', 'xz', 'zstd', 'br', 'gzip'];

export interface NarScan {
  /** The object's bytes as stored. */
  readonly fileSize: number;
  readonly fileHash: Hash;
  /** Set when the object decompressed and decoded as one valid NAR. */
  readonly nar?: { readonly size: number; readonly hash: Hash };
  /** Why the contents are not a valid NAR: the decompressor or the NAR decoder refused them. */
  readonly problem?: { readonly kind: 'decompress' | 'nar' | 'too-large'; readonly message: string };
  /** Set when the compression is one this module cannot decompress (the contents went unchecked). */
  readonly unsupported?: string;
}

export interface ScanOptions {
  readonly compression: string;
  readonly fileHashAlgo: HashAlgo;
  readonly narHashAlgo: HashAlgo;
  /**
   * Stop decompressing once the NAR is larger than this (the NarSize the
   * narinfo states): a small object that inflates without end (a
   * decompression bomb) then costs no more work than the NAR it claims to be.
   */
  readonly narSizeLimit?: number;
}

/** A decompressor for `compression`, or undefined when it is not one of CHECKED_COMPRESSIONS. */
export async function narDecompressor(compression: string): Promise<Transform | undefined> {
  switch (compression) {
    case 'none':
    case 'xz':
    case 'zstd':
      return createDecompressor(compression);
    case 'br':
      return zlib.createBrotliDecompress();
    case 'gzip':
      return zlib.createGunzip();
    default:
      return undefined;
  }
}

/**
 * Read `body` to its end. Errors of `body` itself (the cache could not be
 * read) are thrown; everything wrong with the bytes is in the result.
 */
export async function scanNar(body: AsyncIterable<Uint8Array>, opts: ScanOptions): Promise<NarScan> {
  const fileHasher = createHash(opts.fileHashAlgo);
  let fileSize = 0;
  const decompressor = await narDecompressor(opts.compression);
  if (!decompressor) {
    for await (const chunk of body) {
      fileHasher.update(chunk);
      fileSize += chunk.length;
    }
    return { fileSize, fileHash: digest(opts.fileHashAlgo, fileHasher), unsupported: opts.compression };
  }

  // Its errors reach the decoder through the iterator; lzma-native may emit
  // another after the first, which with no listener would crash the process.
  decompressor.on('error', () => {});
  const narHasher = createHash(opts.narHashAlgo);
  let narSize = 0;
  async function* decompressed(): AsyncGenerator<Uint8Array> {
    for await (const chunk of decompressor as AsyncIterable<Buffer>) {
      narHasher.update(chunk);
      narSize += chunk.length;
      if (opts.narSizeLimit !== undefined && narSize > opts.narSizeLimit) throw new TooLarge(opts.narSizeLimit);
      yield chunk;
    }
  }
  let problem: NarScan['problem'];
  const decoding: Promise<void> = (async () => {
    try {
      for await (const _event of decodeNar(decompressed())) {
        // the decoder checks every node, and skips (and checks) contents left unread
      }
    } catch (e) {
      problem = {
        kind: e instanceof TooLarge ? 'too-large' : isNarpushError(e) && e.code === 'BAD_NAR' ? 'nar' : 'decompress',
        message: e instanceof Error ? e.message : String(e),
      };
      decompressor.destroy();
    }
  })();

  try {
    for await (const chunk of body) {
      fileHasher.update(chunk);
      fileSize += chunk.length;
      // Once the contents are known bad, the rest is still read for FileSize and FileHash.
      if (problem !== undefined || decompressor.destroyed) continue;
      if (!decompressor.write(chunk)) {
        // An error (instead of 'drain') reaches the decoder through the stream.
        await Promise.race([once(decompressor, 'drain').catch(() => {}), decoding]);
      }
    }
    if (problem === undefined && !decompressor.destroyed) decompressor.end();
    await decoding;
  } catch (e) {
    decompressor.destroy();
    await decoding;
    throw e;
  }
  return {
    fileSize,
    fileHash: digest(opts.fileHashAlgo, fileHasher),
    ...(problem === undefined ? { nar: { size: narSize, hash: digest(opts.narHashAlgo, narHasher) } } : { problem }),
  };
}

class TooLarge extends Error {
  constructor(limit: number) {
    super(`decompresses to more than ${limit} bytes`);
  }
}

function digest(algo: HashAlgo, h: Hasher): Hash {
  return { algo, digest: h.digest() };
}
