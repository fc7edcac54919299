/**
 * `narpush generate-key NAME SECRET_FILE PUBLIC_FILE`: a new Ed25519 key pair
 * in the files and formats `nix-store --generate-binary-cache-key` writes (no
 * trailing newline).
 *
 * It must never overwrite a file (a lost secret key cannot be recovered, and
 * every cache entry signed with it would need re-signing), never leave the
 * secret readable by others whatever the umask, and never leave a secret key
 * behind without its public half when it fails.
 */
import { type FileHandle, lstat, open, unlink } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { NarpushError, isErrnoException } from '../errors.js';
import { generateKeyPair, keyNameError } from '../signing/keys.js';
import type { CliContext } from './context.js';

async function refuseExisting(file: string): Promise<void> {
  try {
    await lstat(file);
  } catch (e) {
    if (isErrnoException(e) && e.code === 'ENOENT') return;
    throw writeError(file, e);
  }
  throw new NarpushError('FILE_EXISTS', `'${file}' already exists; refusing to overwrite it (remove it or choose another name)`);
}

function writeError(file: string, e: unknown): NarpushError {
  const code = isErrnoException(e) ? e.code : undefined;
  if (code === 'EEXIST') return new NarpushError('FILE_EXISTS', `'${file}' already exists; refusing to overwrite it`, { cause: e });
  const why =
    code === 'ENOENT' || code === 'ENOTDIR'
      ? `its directory '${nodePath.dirname(file)}' does not exist`
      : code === 'EACCES' || code === 'EPERM'
        ? 'permission denied'
        : code === 'EISDIR'
          ? 'it is a directory'
          : (code ?? (e as Error).message);
  return new NarpushError('KEY_FILE_UNWRITABLE', `cannot create '${file}': ${why}`, { cause: e });
}

/**
 * Create `file` (it must not exist), write `content`, and remove it again if
 * writing fails. With `exactMode` the mode is forced, umask or not.
 */
async function createFile(file: string, content: string, mode: number, exactMode: boolean): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'wx', mode);
  } catch (e) {
    throw writeError(file, e);
  }
  try {
    // open()'s mode is filtered by the umask; the secret must be 0600 whatever it is.
    if (exactMode) await handle.chmod(mode);
    await handle.writeFile(content);
    await handle.sync();
    await handle.close();
  } catch (e) {
    await handle.close().catch(() => {});
    await unlink(file).catch(() => {});
    throw writeError(file, e);
  }
}

export async function generateKey(ctx: CliContext, name: string, secretFile: string, publicFile: string): Promise<number> {
  void ctx;
  const why = keyNameError(name);
  if (why !== undefined) throw new NarpushError('BAD_KEY_NAME', `invalid key name ${JSON.stringify(name)}: ${why}`);
  if (nodePath.resolve(secretFile) === nodePath.resolve(publicFile)) {
    throw new NarpushError('BAD_USAGE', 'the secret and public key files must be different files');
  }
  // Check both before writing either, so a refusal leaves nothing behind.
  await refuseExisting(secretFile);
  await refuseExisting(publicFile);

  const pair = generateKeyPair(name);
  await createFile(secretFile, pair.secretKey, 0o600, true);
  try {
    await createFile(publicFile, pair.publicKey, 0o644, false);
  } catch (e) {
    await unlink(secretFile).catch(() => {});
    throw e;
  }
  return 0;
}
