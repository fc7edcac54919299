/**
 * The store-closure.nix fixture, built once per test process by real Nix,
 * with a path added by `nix-store --add` (content-addressed, no deriver) and
 * a signature on `leaf` (so `signatures` appears in path-info output).
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix, nixBuildFile } from '../helpers/nix.js';
import { FIXTURES } from '../helpers/run.js';

export interface StoreFixture {
  readonly added: string;
  readonly leaf: string;
  readonly left: string;
  readonly right: string;
  readonly text: string;
  readonly fixed: string;
  readonly multiOut: string;
  readonly top: string;
  readonly topDrv: string;
  readonly multiDrv: string;
}

async function build(): Promise<StoreFixture> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-store-fixture-'));
  try {
    const src = path.join(dir, 'store-added');
    await mkdir(src);
    await writeFile(path.join(src, 'a'), 'added by nix-store --add\n');
    await symlink('a', path.join(src, 'link'));
    const added = (await nix('nix-store', ['--add', src])).toString().trim();
    const file = 'store-closure.nix';
    const args = ['--argstr', 'addedPath', added];
    const one = async (attr: string): Promise<string> => (await nixBuildFile(file, attr, args))[0]!;
    const [leaf, left, right, fixed, multiOut, top] = await Promise.all(
      ['leaf', 'left', 'right', 'fixed', 'multi', 'top'].map(one),
    );
    const text = (await nix('nix-instantiate', ['--eval', '--json', '-E', `(import ${path.join(FIXTURES, file)} { addedPath = "${added}"; }).text`]))
      .toString()
      .trim()
      .replace(/^"|"$/g, '');
    const deriver = async (p: string): Promise<string> => (await nix('nix-store', ['-q', '--deriver', p])).toString().trim();
    const fixture = {
      added,
      leaf: leaf!,
      left: left!,
      right: right!,
      text,
      fixed: fixed!,
      multiOut: multiOut!,
      top: top!,
      topDrv: await deriver(top!),
      multiDrv: await deriver(multiOut!),
    };
    // One signature, made once: later runs find it and leave the path alone.
    const info = JSON.parse((await nix('nix', ['path-info', '--json', leaf!])).toString()) as { signatures?: string[] }[];
    if (!info[0]?.signatures?.length) {
      const key = path.join(dir, 'key');
      await nix('nix-store', ['--generate-binary-cache-key', 'narpush-store-test-1', key, `${key}.pub`]);
      await nix('nix', ['store', 'sign', '--key-file', key, leaf!]);
    }
    return fixture;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let built: Promise<StoreFixture> | undefined;

export function storeFixture(): Promise<StoreFixture> {
  built ??= build();
  return built;
}
