/**
 * `narpush dump-path PATH`: write the NAR of a store path (or of a symlink to
 * one, such as ./result, or of a file or directory inside one) to stdout,
 * byte for byte what `nix-store --dump` writes.
 *
 * Writes respect backpressure, and each chunk is written before the next is
 * read (the dump lends its buffers, see DumpOptions.reuseBuffers). A reader
 * that goes away (EPIPE, as in `| head -c 10`) ends the dump quietly with a
 * non-zero exit. This command never dumps anything outside the store path
 * the argument names, whatever symlinks lie on the way.
 */
import { lstat, realpath } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import { dumpNar } from '../nar/dump.js';
import { followLinksToStorePath } from '../store/store-path.js';
import { EXIT_FAILURE, type CliContext } from './context.js';

/** The filesystem path to dump for `arg`: a store path, or a path inside one that stays inside it. */
export async function resolveDumpTarget(arg: string, storeDir: string, cwd: string = process.cwd()): Promise<string> {
  const { storePath, subpath } = await followLinksToStorePath(arg, storeDir, cwd);
  const root = storePath.path;
  const target = subpath === '' ? root : `${root}/${subpath}`;
  try {
    await lstat(target);
  } catch (e) {
    if (isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) {
      throw new NarpushError('PATH_NOT_FOUND', `path '${target}' does not exist`, { cause: e });
    }
    throw new NarpushError('PATH_UNREADABLE', `cannot read '${target}': ${(e as Error).message}`, { cause: e });
  }
  if (subpath !== '') {
    // The last component is dumped as it is (a symlink stays a symlink), but the
    // directories leading to it must really lie inside the store path, which
    // rules out going through any symlink that leads elsewhere (the store
    // path's own root included, when it is a symlink).
    let realRoot: string;
    let realParent: string;
    try {
      realRoot = nodePath.join(await realpath(storeDir), storePath.baseName);
      realParent = await realpath(nodePath.dirname(target));
    } catch (e) {
      throw new NarpushError('PATH_UNREADABLE', `cannot resolve '${target}': ${(e as Error).message}`, { cause: e });
    }
    if (realParent !== realRoot && !realParent.startsWith(realRoot + '/')) {
      throw new NarpushError('BAD_STORE_PATH', `'${arg}' leads outside the store path ${root} through a symlink`);
    }
  }
  return target;
}

function isBrokenPipe(e: unknown): boolean {
  return isErrnoException(e) && (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED');
}

/** Write every chunk, waiting for each to be accepted before the next (the buffers are lent). */
async function writeAll(out: NodeJS.WritableStream, chunks: AsyncIterable<Buffer>): Promise<void> {
  let failure: unknown;
  let wake: (() => void) | undefined;
  // Stays attached: a late EPIPE from the last write must not become an uncaught exception.
  out.on('error', (e: unknown) => {
    failure ??= e;
    wake?.();
  });
  for await (const chunk of chunks) {
    if (failure !== undefined) break;
    await new Promise<void>((resolve) => {
      wake = resolve;
      out.write(chunk, (err?: Error | null) => {
        if (err) failure ??= err;
        resolve();
      });
    });
    wake = undefined;
    if (failure !== undefined) break;
  }
  if (failure !== undefined) throw failure;
}

export async function dumpPath(ctx: CliContext, path: string): Promise<number> {
  const target = await resolveDumpTarget(path, ctx.storeDir);
  try {
    await writeAll(ctx.stdout, dumpNar(target, { reuseBuffers: true }));
  } catch (e) {
    if (isBrokenPipe(e)) return EXIT_FAILURE;
    if (e instanceof NarpushError) throw e;
    if (isErrnoException(e)) {
      throw new NarpushError('WRITE_FAILED', `cannot write the NAR to stdout: ${e.code ?? e.message}`, { cause: e });
    }
    throw e;
  }
  return 0;
}
