/**
 * Reading key files from disk. The one place in src/signing that does I/O.
 * Errors name the file and what to do, and never include the file's content:
 * a secret key must not end up in a log because it was malformed.
 */
import { open } from 'node:fs/promises';
import { NarpushError, isErrnoException } from '../errors.js';
import { type PublicKey, type SecretKey, parsePublicKey, parseSecretKey } from './keys.js';

/** A key file is under 200 bytes; refuse to slurp something that obviously is not one. */
const MAX_KEY_FILE_BYTES = 64 * 1024;

async function readKeyFile(path: string, kind: string): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw openError(path, kind, e);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new NarpushError('KEY_FILE_UNREADABLE', `${kind} file '${path}' is not a regular file`);
    if (stat.size > MAX_KEY_FILE_BYTES) {
      throw new NarpushError('BAD_KEY', `${kind} file '${path}' is ${stat.size} bytes, too large to be a Nix key file`);
    }
    return await handle.readFile({ encoding: 'utf8' });
  } catch (e) {
    if (e instanceof NarpushError) throw e;
    throw openError(path, kind, e);
  } finally {
    await handle.close();
  }
}

function openError(path: string, kind: string, e: unknown): NarpushError {
  if (isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) {
    return new NarpushError('KEY_FILE_NOT_FOUND', `${kind} file '${path}' does not exist`, { cause: e });
  }
  if (isErrnoException(e) && (e.code === 'EACCES' || e.code === 'EPERM')) {
    return new NarpushError('KEY_FILE_UNREADABLE', `${kind} file '${path}' is not readable (permission denied)`, {
      cause: e,
    });
  }
  if (isErrnoException(e) && e.code === 'EISDIR') {
    return new NarpushError('KEY_FILE_UNREADABLE', `${kind} file '${path}' is a directory`, { cause: e });
  }
  const reason = isErrnoException(e) ? e.code : 'unknown error';
  return new NarpushError('KEY_FILE_UNREADABLE', `cannot read ${kind} file '${path}' (${reason})`, { cause: e });
}

export async function readSecretKeyFile(path: string): Promise<SecretKey> {
  return parseSecretKey(await readKeyFile(path, 'secret key'), `secret key file '${path}'`);
}

export async function readPublicKeyFile(path: string): Promise<PublicKey> {
  return parsePublicKey(await readKeyFile(path, 'public key'), `public key file '${path}'`);
}
