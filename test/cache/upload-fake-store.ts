/**
 * A fake store for upload tests: each path is a directory in a temporary
 * dir holding some random bytes and the paths it refers to, with a PathInfo
 * computed from its NAR as Nix would record it. Real Nix is not needed, so
 * tests can make any reference graph (deep chains, diamonds, random DAGs).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix32Encode } from '../../src/hash/nix32.js';
import { dumpNar } from '../../src/nar/dump.js';
import type { PathInfo } from '../../src/store/path-info.js';
import { StorePath } from '../../src/store/store-path.js';

export async function narOf(p: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of dumpNar(p)) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/** Paths named by the keys of `refs`, each referring to the paths listed (itself allowed). */
export async function makeStore(refs: Record<string, string[]>, dataBytes = 2000): Promise<{ dir: string; infos: Map<string, PathInfo> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-store-'));
  const paths = new Map<string, StorePath>();
  for (const name of Object.keys(refs)) {
    const hash = nix32Encode(createHash('sha1').update(`${dir}/${name}`).digest());
    paths.set(name, new StorePath(hash, name, dir));
  }
  const infos = new Map<string, PathInfo>();
  for (const [name, rs] of Object.entries(refs)) {
    const sp = paths.get(name)!;
    await mkdir(sp.path);
    await writeFile(path.join(sp.path, 'data'), randomBytes(dataBytes + name.length * 1000));
    await writeFile(path.join(sp.path, 'refs'), rs.map((r) => paths.get(r)!.path).join('\n'));
    const nar = await narOf(sp.path);
    infos.set(name, {
      path: sp,
      deriver: undefined,
      narHash: { algo: 'sha256', digest: createHash('sha256').update(nar).digest() },
      references: rs.map((r) => paths.get(r)!).sort((a, b) => (a.baseName < b.baseName ? -1 : 1)),
      registrationTime: 0,
      narSize: nar.length,
      ultimate: true,
      sigs: [],
      ca: undefined,
    });
  }
  return { dir, infos };
}
