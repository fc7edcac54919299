// NAR listings (src/nar/listing.ts) against Nix 2.8's own: every fixture of
// nar-edge-cases.nix, plus names that need JSON escapes, `nix copy`-ed with
// write-nar-listing=true and compared as JSON (and as bytes); fed whole and
// split anywhere. Random trees: every narOffset points at its file's bytes.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NarLister, jsonBytes, listNar } from '../../src/nar/listing.js';
import { encodeNarSync } from '../../src/nar/encode.js';
import { isNarpushError } from '../../src/errors.js';
import { nixBuildExpr } from '../helpers/nix.js';
import { nixListings, parseListing } from '../helpers/nix-listing.js';
import { FIXTURE_NAMES, narFixtures, nixDump } from './fixtures.js';
import { type Tree, treeArb, treeEvents } from './tree.js';

// Names and a target that need every kind of escape Nix 2.8 writes (and bytes it does not escape).
const ESCAPES_SCRIPT = `
  mkdir -p $out && cd $out
  touch '"q' 'back\\slash' "$(printf 'tab\\there')" "$(printf 'cr\\rhere')" "$(printf '\\001ctl')"
  touch "$(printf '\\010bs')" "$(printf '\\014ff')" "$(printf '\\037us')" "$(printf '\\177del')" "$(printf 'hi\\377')"
  ln -s "$(printf 'q"t\\\\b\\tx\\001')" link
`;

let paths: Map<string, string>;
let nixLs: Map<string, Buffer>;

before(async () => {
  const fixtures = await narFixtures();
  const [escapes] = await nixBuildExpr(`lib.mk { name = "nar-listing-escapes"; script = ''${ESCAPES_SCRIPT}''; }`);
  paths = new Map([...fixtures, ['escapes', escapes!]]);
  nixLs = await nixListings([...paths.values()]);
});

/** Feed `nar` in pieces whose sizes come from `sizes` (cycled). */
function listInPieces(nar: Buffer, sizes: readonly number[]): Buffer | undefined {
  const lister = new NarLister();
  for (let at = 0, k = 0; at < nar.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length]!);
    lister.update(nar.subarray(at, at + n));
    at += n;
  }
  return lister.finish();
}

for (const name of [...FIXTURE_NAMES, 'escapes']) {
  test(`listing of ${name} equals Nix's`, async () => {
    const p = paths.get(name)!;
    const nar = await nixDump(p);
    const want = nixLs.get(p)!;
    const whole = listNar(nar)!;
    assert.deepEqual(parseListing(whole), parseListing(want));
    assert.ok(whole.equals(want), 'byte for byte too');
    // Split anywhere: one byte at a time for small NARs, odd sizes for all.
    if (nar.length < 1 << 20) assert.ok(listInPieces(nar, [1])!.equals(want), 'fed one byte at a time');
    assert.ok(listInPieces(nar, [7, 1, 4096, 13, 65536 + 3])!.equals(want), 'fed in odd pieces');
  });
}

test('strings are escaped as Nix 2.8 escapes them', () => {
  const s = (b: number[]): string => jsonBytes(Buffer.from(b));
  assert.equal(s([0x22, 0x5c, 0x0a, 0x0d, 0x09]), '"\\"\\\\\\n\\r\\t"');
  assert.equal(s([0x01, 0x08, 0x0c, 0x1f]), '"\\u0001\\u0008\\u000c\\u001f"');
  assert.equal(s([0x7f, 0x80, 0xff, 0x41]), '"\x7f\x80\xffA"');
});

/** Every regular file of a listing, with the path of names to it. */
function* files(node: any, at: string[] = []): Generator<[string[], any]> {
  if (node.type === 'regular') yield [at, node];
  if (node.type === 'directory') for (const [n, c] of Object.entries(node.entries)) yield* files(c, [...at, n]);
}

function lookup(tree: Tree, names: string[]): Tree {
  let t = tree;
  for (const n of names) {
    assert.equal(t.type, 'directory');
    t = (t as Extract<Tree, { type: 'directory' }>).entries.find(([e]) => e.toString('latin1') === n)![1];
  }
  return t;
}

test('random trees: the listing mirrors the tree and every narOffset points at its contents', () => {
  fc.assert(
    fc.property(treeArb(), fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 5 }), (tree, sizes) => {
      const nar = encodeNarSync(treeEvents(tree));
      const ls = listInPieces(nar, sizes)!;
      assert.ok(ls.equals(listNar(nar)!));
      const j = parseListing(ls) as { version: number; root: any };
      assert.equal(j.version, 1);
      let count = 0;
      for (const [names, node] of files(j.root)) {
        const t = lookup(tree, names) as Extract<Tree, { type: 'regular' }>;
        assert.equal(t.type, 'regular');
        assert.equal(node.size, t.contents.length);
        assert.equal(node.executable, t.executable ? true : undefined);
        assert.ok(nar.subarray(node.narOffset, node.narOffset + node.size).equals(t.contents), `contents at narOffset of ${names.join('/')}`);
        count++;
      }
      const regulars = (t: Tree): number =>
        t.type === 'regular' ? 1 : t.type === 'directory' ? t.entries.reduce((n, [, e]) => n + regulars(e), 0) : 0;
      assert.equal(count, regulars(tree));
    }),
    { numRuns: 200 },
  );
});

test('a listing over the cap is given up; one at the cap is kept', async () => {
  const nar = await nixDump(paths.get('nar-tree')!);
  const size = listNar(nar)!.length;
  assert.equal(listNar(nar, size - 1), undefined);
  assert.equal(listNar(nar, size)!.length, size);
  const lister = new NarLister(100);
  lister.update(nar);
  assert.equal(lister.tooLarge, true);
  assert.equal(lister.finish(), undefined);
});

test('a truncated NAR, bytes after its end, or a wrong word throw BAD_NAR', async () => {
  const nar = await nixDump(paths.get('nar-root-file')!);
  const code = (f: () => unknown): string | undefined => {
    try {
      f();
    } catch (e) {
      return isNarpushError(e) ? e.code : 'other';
    }
    return undefined;
  };
  assert.equal(code(() => listNar(nar.subarray(0, nar.length - 8))), 'BAD_NAR');
  assert.equal(code(() => listNar(Buffer.concat([nar, Buffer.alloc(8)]))), 'BAD_NAR');
  const wrong = Buffer.from(nar);
  wrong.write('regulaR', 56, 'latin1');
  assert.equal(code(() => listNar(wrong)), 'BAD_NAR');
});
