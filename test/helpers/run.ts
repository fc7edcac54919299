/** Running programs from tests: narpush's own bin and Nix's tools. */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const NARPUSH_BIN = path.join(REPO_ROOT, 'bin', 'narpush');
export const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures');

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: Buffer | string;
  readonly cwd?: string;
}

/** Run a program to completion, collecting its output as bytes. Never throws on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd ?? REPO_ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input);
  });
}

/** Run `bin/narpush` with the given arguments. */
export function narpush(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(process.execPath, [NARPUSH_BIN, ...args], opts);
}

/** Run and fail with the program's stderr unless it exits 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  }
  return r;
}

/** A signing key made by `narpush generate-key <name>` in `dir`: its secret key file and its public key. */
export async function generateKeyPair(dir: string, name: string): Promise<{ secretKeyFile: string; publicKey: string }> {
  const secretKeyFile = path.join(dir, `${name}.secret`);
  const publicKeyFile = path.join(dir, `${name}.public`);
  await runOk(process.execPath, [NARPUSH_BIN, 'generate-key', name, secretKeyFile, publicKeyFile]);
  return { secretKeyFile, publicKey: (await readFile(publicKeyFile, 'utf8')).trim() };
}
