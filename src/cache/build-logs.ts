/**
 * Build logs into the cache (`--build-logs`), where `nix log` looks for
 * them: `log/<drv base name>`, plain text, `text/plain; charset=utf-8`, as
 * Nix's BinaryCacheStore::addBuildLog writes them. The log comes from Nix's
 * log directory (`<logDir>/drvs/<first 2 chars>/<rest>.bz2`, bzip2 as Nix
 * keeps it, or without `.bz2` when compress-build-log is off), decompressed
 * by the `bzip2` program (Debian's nix-bin depends on it; the NixOS module
 * puts it on the service's PATH): Node has no bzip2 of its own.
 *
 * Only for paths built on this machine (`ultimate` in the store's record)
 * with a known deriver; one log per derivation. A missing log is not an
 * error, only counted: builds with keep-build-log off, or whose log was
 * removed, have none. A log that exists but cannot be read or uploaded is
 * an error. Never prints, never reads the environment (the log directory
 * is given by the edge).
 */
import { spawn } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import type { PathInfo } from '../store/path-info.js';
import type { StorePath } from '../store/store-path.js';
import type { CacheBackend } from './backend.js';
import { type MetadataCompression, encodeContent } from './content-encoding.js';
import { createLimiter } from './limit.js';

export const LOG_CONTENT_TYPE = 'text/plain; charset=utf-8';
/** Nix's default log directory (NIX_LOG_DIR, read by the CLI, overrides it). */
export const DEFAULT_NIX_LOG_DIR = '/nix/var/log/nix';

export function buildLogKey(drv: StorePath): string {
  return `log/${drv.baseName}`;
}

export interface BuildLogReport {
  /** Derivations whose log is now in the cache. */
  readonly written: readonly StorePath[];
  /** Derivations with no local log (not an error). */
  readonly missing: readonly StorePath[];
  readonly failed: readonly { readonly drv: StorePath; readonly error: NarpushError }[];
}

/** The derivations whose logs belong with these uploaded paths: built here, deriver known, each once. */
export function derivationsOf(infos: readonly PathInfo[]): StorePath[] {
  const drvs = new Map<string, StorePath>();
  for (const i of infos) if (i.ultimate && i.deriver) drvs.set(i.deriver.baseName, i.deriver);
  return [...drvs.values()];
}

/** Where Nix keeps a derivation's log: the bzip2 file, or the plain one. */
function logFiles(logDir: string, drv: StorePath): { bz2: string; plain: string } {
  const base = drv.baseName;
  const plain = nodePath.join(logDir, 'drvs', base.slice(0, 2), base.slice(2));
  return { bz2: `${plain}.bz2`, plain };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch (e) {
    if (isErrnoException(e) && e.code === 'ENOENT') return false;
    throw e;
  }
}

/** `bzip2 -dc <file>`: the decompressed bytes, or an error naming the file. */
function bunzip2(file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('bzip2', ['-dc', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) =>
      reject(new NarpushError('BUILD_LOG_UNREADABLE', `cannot run bzip2 to read the build log '${file}': ${e.message}`, { cause: e })),
    );
    child.on('close', (code) => {
      if (code === 0) return resolve(Buffer.concat(out));
      const why = Buffer.concat(err).toString('utf8').trim().split('\n')[0] || `exit code ${code}`;
      reject(new NarpushError('BUILD_LOG_UNREADABLE', `cannot decompress the build log '${file}': ${why}`));
    });
  });
}

/** A derivation's local build log as text bytes, or undefined when Nix kept none. */
export async function readBuildLog(logDir: string, drv: StorePath): Promise<Buffer | undefined> {
  const { bz2, plain } = logFiles(logDir, drv);
  try {
    if (await exists(bz2)) return await bunzip2(bz2);
    if (await exists(plain)) return await readFile(plain);
  } catch (e) {
    if (e instanceof NarpushError) throw e;
    throw new NarpushError('BUILD_LOG_UNREADABLE', `cannot read the build log of '${drv.path}': ${(e as Error).message}`, { cause: e });
  }
  return undefined;
}

export interface BuildLogOptions {
  /** Nix's log directory (NIX_LOG_DIR, default /nix/var/log/nix). */
  readonly logDir: string;
  /** `log-compression` of an s3:// cache: the log is stored compressed, with that Content-Encoding. */
  readonly compression?: MetadataCompression;
  readonly concurrency?: number;
}

/** Upload the logs of `drvs` (a few at a time: each holds one log in memory). */
export async function uploadBuildLogs(backend: CacheBackend, drvs: readonly StorePath[], opts: BuildLogOptions): Promise<BuildLogReport> {
  const limit = createLimiter(opts.concurrency ?? 4);
  const written: StorePath[] = [];
  const missing: StorePath[] = [];
  const failed: { drv: StorePath; error: NarpushError }[] = [];
  await Promise.all(
    drvs.map((drv) =>
      limit(async () => {
        try {
          const log = await readBuildLog(opts.logDir, drv);
          if (log === undefined) return void missing.push(drv);
          if (opts.compression === 'br') {
            await backend.putBytes(buildLogKey(drv), await encodeContent(log, 'br'), LOG_CONTENT_TYPE, { contentEncoding: 'br' });
          } else {
            await backend.putBytes(buildLogKey(drv), log, LOG_CONTENT_TYPE);
          }
          written.push(drv);
        } catch (e) {
          const error =
            e instanceof NarpushError
              ? e
              : new NarpushError('UPLOAD_FAILED', `uploading the build log of '${drv.path}' failed: ${(e as Error).message}`, { cause: e });
          failed.push({ drv, error });
        }
      }),
    ),
  );
  return { written, missing, failed };
}
