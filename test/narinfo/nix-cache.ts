/**
 * Helpers for the narinfo and signing tests: build the fixture paths of
 * test/fixtures/narinfo/paths.nix, ask Nix what it knows of them, and lay out
 * a file:// binary cache by hand (NAR from `nix-store --dump`, narinfo from
 * narpush) for Nix to read, verify and substitute from.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { nix, nixBuildFile } from '../helpers/nix.js';
import { run, type RunResult } from '../helpers/run.js';
import { nixEnv } from '../helpers/nix.js';
import { parseHash, sha256 } from '../../src/hash/hash.js';
import { nix32Encode } from '../../src/hash/nix32.js';
import { parseStorePath } from '../../src/store/store-path.js';
import type { NarInfo } from '../../src/narinfo/narinfo.js';

export const FIXTURE_ATTRS = ['leaf', 'tree', 'refs', 'deletable'] as const;
export type FixtureAttr = (typeof FIXTURE_ATTRS)[number];

/** A salt no other run or test uses. */
export function freshSalt(): string {
  return `t${Date.now()}-${randomBytes(4).toString('hex')}`;
}

export async function buildFixtures(salt: string): Promise<Record<FixtureAttr, string>> {
  const args = FIXTURE_ATTRS.flatMap((a) => ['-A', a]);
  const out = await nixBuildFile('narinfo/paths.nix', undefined, [...args, '--argstr', 'salt', salt]);
  if (out.length !== FIXTURE_ATTRS.length) throw new Error(`expected ${FIXTURE_ATTRS.length} paths, got ${out.join(' ')}`);
  return Object.fromEntries(FIXTURE_ATTRS.map((a, i) => [a, out[i]!])) as Record<FixtureAttr, string>;
}

/** What `nix path-info --json` says of a path (Nix 2.8's field names). */
export interface NixPathInfo {
  readonly path: string;
  readonly narHash: string;
  readonly narSize: number;
  readonly references: readonly string[];
  readonly deriver?: string;
  readonly signatures?: readonly string[];
  readonly ca?: string;
  readonly url?: string;
  readonly downloadHash?: string;
  readonly downloadSize?: number;
  readonly valid?: boolean;
}

/** Never cache narinfo lookups: a test may rewrite a narinfo Nix has already seen. */
export const NO_NARINFO_CACHE = ['--option', 'narinfo-cache-negative-ttl', '0', '--option', 'narinfo-cache-positive-ttl', '0'];

/** `nix path-info --json` of the paths; a `.drv` is asked about as itself, not as its outputs. */
export async function pathInfo(paths: readonly string[], store?: string): Promise<NixPathInfo[]> {
  const storeArgs = store === undefined ? [] : ['--store', store, ...NO_NARINFO_CACHE];
  const drvs = paths.filter((p) => p.endsWith('.drv'));
  const others = paths.filter((p) => !p.endsWith('.drv'));
  const ask = async (extra: string[], ps: string[]): Promise<NixPathInfo[]> =>
    ps.length === 0
      ? []
      : (JSON.parse((await nix('nix', ['path-info', '--json', '--sigs', ...extra, ...storeArgs, ...ps])).toString('utf8')) as NixPathInfo[]);
  return [...(await ask([], others)), ...(await ask(['--derivation'], drvs))];
}

/** Run a Nix command with the test environment; the result, whatever the exit code. */
export function nixRun(cmd: string, args: readonly string[]): Promise<RunResult> {
  return run(cmd, args, { env: nixEnv() });
}

const created: string[] = [];

/** A fresh temporary directory, removed when the test process exits. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), `narpush-${prefix}-`));
  if (created.length === 0) process.once('exit', () => created.forEach((d) => rmSync(d, { recursive: true, force: true })));
  created.push(dir);
  return dir;
}

/** An empty file:// cache: just `nix-cache-info`. */
export async function emptyCache(prefix = 'cache'): Promise<string> {
  const dir = await tempDir(prefix);
  await mkdir(path.join(dir, 'nar'));
  await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  return dir;
}

/**
 * Put a store path's NAR (from `nix-store --dump`, uncompressed) into `cache`
 * and return an unsigned narinfo record for it, built from Nix's path-info.
 */
export async function addNar(cache: string, storePath: string): Promise<NarInfo> {
  const nar = await nix('nix-store', ['--dump', storePath]);
  const fileHash = sha256(nar);
  const url = `nar/${nix32Encode(fileHash.digest)}.nar`;
  await writeFile(path.join(cache, url), nar);
  const [info] = await pathInfo([storePath]);
  const narHash = parseHash(info!.narHash);
  if (!narHash.digest.equals(fileHash.digest) || info!.narSize !== nar.length) {
    throw new Error(`nix-store --dump of ${storePath} does not match its NarHash/NarSize`);
  }
  return {
    storePath: parseStorePath(storePath),
    url,
    compression: 'none',
    fileHash,
    fileSize: nar.length,
    narHash,
    narSize: info!.narSize,
    references: info!.references.map((r) => parseStorePath(r)),
    ...(info!.deriver !== undefined && { deriver: parseStorePath(info!.deriver) }),
    sigs: [],
  };
}

export async function writeNarInfo(cache: string, storePath: string, text: string): Promise<void> {
  await writeFile(path.join(cache, `${parseStorePath(storePath).hashPart}.narinfo`), text);
}
