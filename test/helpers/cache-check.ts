/**
 * Checking a binary cache from the outside, as Nix would see it: every
 * narinfo of a closure present, equal to what the store knows, signed, and
 * pointing at a NAR of exactly FileSize bytes and FileHash.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseHash, hashEquals } from '../../src/hash/hash.js';
import { parseNarInfo, type NarInfo } from '../../src/narinfo/narinfo.js';
import { parsePublicKey } from '../../src/signing/keys.js';
import { verifyNarInfo } from '../../src/signing/sign.js';
import { spawn } from 'node:child_process';
import type { CacheBackend } from '../../src/cache/backend.js';
import { nix, nixEnv } from './nix.js';

export interface NixPathInfoJson {
  path: string;
  narHash: string;
  narSize: number;
  references: string[];
  deriver?: string;
  ca?: string;
  signatures?: string[];
}

/** `nix path-info --json` of paths, by path. */
export async function nixPathInfos(paths: readonly string[]): Promise<Map<string, NixPathInfoJson>> {
  const out = JSON.parse((await nix('nix', ['path-info', '--json', ...paths])).toString()) as NixPathInfoJson[];
  return new Map(out.map((i) => [i.path, i]));
}

/** The closure of paths, per `nix-store -qR`. */
export async function nixClosure(paths: readonly string[]): Promise<string[]> {
  return (await nix('nix-store', ['-qR', ...paths])).toString().trim().split('\n');
}

/**
 * Assert that `fetch` (key -> bytes or undefined) shows a complete, signed
 * cache entry for every path, equal to the store's own record.
 */
export async function assertCacheHas(
  fetch: (key: string) => Promise<Buffer | undefined>,
  paths: readonly string[],
  publicKey: string,
): Promise<NarInfo[]> {
  const infos = await nixPathInfos(paths);
  const key = parsePublicKey(publicKey);
  const out: NarInfo[] = [];
  for (const p of paths) {
    const hashPart = p.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const text = await fetch(`${hashPart}.narinfo`);
    assert.ok(text, `narinfo of ${p} is in the cache`);
    const ni = parseNarInfo(text.toString('utf8'));
    const want = infos.get(p);
    assert.ok(want, `${p} is valid in the local store (was it garbage-collected under the test?)`);
    assert.equal(ni.storePath.path, p);
    assert.ok(hashEquals(ni.narHash, parseHash(want.narHash)), `NarHash of ${p}`);
    assert.equal(ni.narSize, want.narSize, `NarSize of ${p}`);
    assert.deepEqual(ni.references.map((r) => r.path).sort(), [...want.references].sort(), `References of ${p}`);
    assert.equal(ni.deriver?.path, want.deriver, `Deriver of ${p}`);
    assert.equal(ni.ca, want.ca, `CA of ${p}`);
    assert.equal(verifyNarInfo(ni, [key]), 1, `signature of ${p}`);
    const file = await fetch(ni.url);
    assert.ok(file, `NAR ${ni.url} of ${p} is in the cache`);
    assert.equal(file.length, ni.fileSize, `FileSize of ${p}`);
    assert.ok(ni.fileHash && createHash('sha256').update(file).digest().equals(ni.fileHash.digest), `FileHash of ${p}`);
    out.push(ni);
  }
  return out;
}

/** Fetch over plain HTTP (as Nix does from an http:// substituter). */
export function httpFetcher(base: string): (key: string) => Promise<Buffer | undefined> {
  return async (key) => {
    const r = await fetch(`${base}/${key}`);
    if (r.status === 404) return undefined;
    assert.equal(r.status, 200, `GET ${key}`);
    return Buffer.from(await r.arrayBuffer());
  };
}

/**
 * Put one store path into a cache through `backend` without narpush's
 * pipeline: the NAR from `nix-store --dump` (uncompressed, streamed) and a
 * narinfo written out by hand, so a backend can be tested on its own with
 * Nix as the judge. Returns the NAR's key and size.
 */
export async function publishByHand(backend: CacheBackend, storePath: string): Promise<{ narKey: string; bytes: number }> {
  const info = (await nixPathInfos([storePath])).get(storePath)!;
  const hashPart = storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
  await backend.putBytes('nix-cache-info', Buffer.from('StoreDir: /nix/store\n'), 'text/x-nix-cache-info');
  const narKey = `nar/${hashPart}.nar`;
  const { bytes } = await backend.putStream(narKey, childStdout('nix-store', ['--dump', storePath]), 'application/x-nix-nar', {
    sizeHint: info.narSize,
  });
  assert.equal(bytes, info.narSize);
  const narinfo = [
    `StorePath: ${storePath}`,
    `URL: ${narKey}`,
    'Compression: none',
    `NarHash: ${info.narHash}`,
    `NarSize: ${info.narSize}`,
    `References: ${info.references.map((r) => r.slice('/nix/store/'.length)).join(' ')}`,
    '',
  ].join('\n');
  await backend.putBytes(`${hashPart}.narinfo`, Buffer.from(narinfo), 'text/x-nix-narinfo');
  return { narKey, bytes };
}

/** Stream a child's stdout, failing at the end if it exits non-zero. */
export async function* childStdout(cmd: string, args: string[]): AsyncGenerator<Uint8Array> {
  const child = spawn(cmd, args, { env: nixEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  yield* child.stdout;
  const code = await exited;
  if (code !== 0) throw new Error(`${cmd} exited ${code}`);
}
