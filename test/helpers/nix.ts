/**
 * Real Nix for the tests: the referee for NAR bytes, signatures and
 * substitution. Builds use `derivation { builder = "/bin/sh"; ... }` with no
 * nixpkgs, no sandbox and no substituters (this machine has no network).
 */
import { run, runOk, FIXTURES } from './run.js';
import * as path from 'node:path';

/**
 * Environment for Nix commands: no network substituters, no sandbox,
 * nix-command on, and no caching of narinfo lookups (tests re-read caches
 * they have just changed). `extraConfig` lines are appended to NIX_CONFIG.
 */
export function nixEnv(extra: NodeJS.ProcessEnv = {}, extraConfig: readonly string[] = []): NodeJS.ProcessEnv {
  return {
    ...process.env,
    NIX_CONFIG: [
      'substituters =',
      'sandbox = false',
      'experimental-features = nix-command',
      'warn-dirty = false',
      'narinfo-cache-negative-ttl = 0',
      'narinfo-cache-positive-ttl = 0',
      ...extraConfig,
    ].join('\n'),
    ...extra,
  };
}

let available: Promise<boolean> | undefined;

/** Whether Nix's tools are installed; tests that need Nix fail without it (CI installs nix-bin). */
export function nixAvailable(): Promise<boolean> {
  available ??= run('nix-store', ['--version'], { env: nixEnv() }).then(
    (r) => r.code === 0,
    () => false,
  );
  return available;
}

/** Throws a clear message when Nix is missing, so a test depending on it fails loudly. */
export async function requireNix(): Promise<void> {
  if (!(await nixAvailable())) {
    throw new Error('these tests need Nix (Debian: apt-get install -y nix-bin); none was found on PATH');
  }
}

/**
 * Build a Nix expression file from test/fixtures (or an absolute path) and
 * return its output paths, one per attribute built.
 */
export async function nixBuildFile(file: string, attr?: string, args: readonly string[] = []): Promise<string[]> {
  await requireNix();
  const full = path.isAbsolute(file) ? file : path.join(FIXTURES, file);
  const r = await runOk('nix-build', [full, '--no-out-link', ...(attr ? ['-A', attr] : []), ...args], {
    env: nixEnv(),
  });
  return r.stdout.toString('utf8').trim().split('\n').filter(Boolean);
}

/** Build an inline expression; `lib.nix` from the fixtures is in scope as `lib`. */
export async function nixBuildExpr(expr: string, args: readonly string[] = []): Promise<string[]> {
  await requireNix();
  const full = `let lib = import ${path.join(FIXTURES, 'lib.nix')}; in ${expr}`;
  const r = await runOk('nix-build', ['-E', full, '--no-out-link', ...args], { env: nixEnv() });
  return r.stdout.toString('utf8').trim().split('\n').filter(Boolean);
}

/** Run a Nix command with the test environment and return its stdout as bytes. */
export async function nix(cmd: string, args: readonly string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Buffer> {
  await requireNix();
  return (await runOk(cmd, args, { env: nixEnv(extraEnv) })).stdout;
}
