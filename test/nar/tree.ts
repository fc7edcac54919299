/**
 * In-memory file trees for the NAR tests: the events of a tree (independent
 * of the walker), a tree rebuilt from events (independent of the decoder's
 * consumers), writing a tree to disk, and a fast-check arbitrary of trees.
 */
import * as fs from 'node:fs';
import fc from 'fast-check';
import type { NarEvent, NarEvents } from '../../src/nar/events.js';

export type Tree =
  | { readonly type: 'regular'; readonly executable: boolean; readonly contents: Buffer }
  | { readonly type: 'symlink'; readonly target: Buffer }
  | { readonly type: 'directory'; readonly entries: ReadonlyArray<readonly [Buffer, Tree]> };

function sorted(entries: ReadonlyArray<readonly [Buffer, Tree]>): (readonly [Buffer, Tree])[] {
  return [...entries].sort((a, b) => Buffer.compare(a[0], b[0]));
}

/** The NAR events of a tree; contents are split into pieces of `split` bytes (default: one piece). */
export function* treeEvents(tree: Tree, name?: Buffer, split?: number): Generator<NarEvent> {
  const named = name === undefined ? {} : { name };
  switch (tree.type) {
    case 'regular': {
      const pieces: Buffer[] = [];
      const step = split ?? Math.max(1, tree.contents.length);
      for (let i = 0; i < tree.contents.length; i += step) pieces.push(tree.contents.subarray(i, i + step));
      yield { type: 'regular', ...named, executable: tree.executable, size: tree.contents.length, contents: pieces };
      return;
    }
    case 'symlink':
      yield { type: 'symlink', ...named, target: tree.target };
      return;
    case 'directory':
      yield { type: 'directory', ...named };
      for (const [n, t] of sorted(tree.entries)) yield* treeEvents(t, n, split);
      yield { type: 'end-directory' };
  }
}

/** Rebuild a tree from events, reading every file's contents. */
export async function eventsTree(events: NarEvents): Promise<Tree> {
  const stack: [Buffer, Tree][][] = [];
  let root: Tree | undefined;
  const names: (Buffer | undefined)[] = [];
  const add = (name: Buffer | undefined, t: Tree): void => {
    const top = stack[stack.length - 1];
    if (top === undefined) root = t;
    else top.push([name!, t]);
  };
  for await (const ev of events as AsyncIterable<NarEvent>) {
    switch (ev.type) {
      case 'regular': {
        const parts: Buffer[] = [];
        for await (const c of ev.contents as AsyncIterable<Uint8Array>) parts.push(Buffer.from(c));
        add(ev.name, { type: 'regular', executable: ev.executable, contents: Buffer.concat(parts) });
        break;
      }
      case 'symlink':
        add(ev.name, { type: 'symlink', target: Buffer.from(ev.target) });
        break;
      case 'directory':
        stack.push([]);
        names.push(ev.name);
        break;
      case 'end-directory': {
        const entries = stack.pop()!;
        add(names.pop(), { type: 'directory', entries });
        break;
      }
    }
  }
  if (root === undefined) throw new Error('no root');
  return root;
}

/** A canonical form for deepEqual: entries sorted, contents as hex. */
export function canonical(t: Tree): unknown {
  switch (t.type) {
    case 'regular':
      return { x: t.executable, c: t.contents.toString('hex') };
    case 'symlink':
      return { l: t.target.toString('hex') };
    case 'directory':
      return sorted(t.entries).map(([n, e]) => [n.toString('hex'), canonical(e)]);
  }
}

/** Write a tree at `path` (which must not exist). Executable files get 0755 (or `exeMode`), others 0644 (or `plainMode`). */
export function writeTree(path: Buffer, t: Tree, modes: { exe?: number; plain?: number } = {}): void {
  switch (t.type) {
    case 'regular':
      fs.writeFileSync(path, t.contents);
      fs.chmodSync(path, t.executable ? (modes.exe ?? 0o755) : (modes.plain ?? 0o644));
      return;
    case 'symlink':
      fs.symlinkSync(t.target, path);
      return;
    case 'directory':
      fs.mkdirSync(path);
      for (const [n, e] of t.entries) writeTree(Buffer.concat([path, Buffer.from('/'), n]), e, modes);
  }
}

/** Entry names: random bytes without '/' and NUL, not '.' or '..', at most `max` bytes. */
export function nameArb(max = 12): fc.Arbitrary<Buffer> {
  return fc
    .uint8Array({ minLength: 1, maxLength: max })
    .map((a) => Buffer.from(a.map((b) => (b === 0 || b === 0x2f ? 0x5f : b))))
    .filter((b) => !b.equals(Buffer.from('.')) && !b.equals(Buffer.from('..')));
}

const targetArb = fc
  .uint8Array({ minLength: 1, maxLength: 40 })
  .map((a) => Buffer.from(a.map((b) => (b === 0 ? 0x2f : b))));

const contentsArb = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 100, maxLength: 3000 }) },
);

/** Random trees: files with exec bits, symlinks, directories with unique names. */
export function treeArb(maxDepth = 4): fc.Arbitrary<Tree> {
  const { tree } = fc.letrec<{ tree: Tree; dir: Tree }>((tie) => ({
    tree: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.record({ type: fc.constant('regular' as const), executable: fc.boolean(), contents: contentsArb.map((a) => Buffer.from(a)) }),
      fc.record({ type: fc.constant('symlink' as const), target: targetArb }),
      tie('dir'),
    ),
    dir: fc.record({
      type: fc.constant('directory' as const),
      entries: fc.uniqueArray(fc.tuple(nameArb(), tie('tree')), {
        maxLength: 6,
        selector: ([n]) => n.toString('hex'),
      }),
    }),
  }));
  return tree.filter((t) => depth(t) <= maxDepth);
}

function depth(t: Tree): number {
  return t.type === 'directory' ? 1 + Math.max(0, ...t.entries.map(([, e]) => depth(e))) : 0;
}
