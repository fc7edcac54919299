import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { narpush, run, runOk, NARPUSH_BIN, type RunResult } from '../helpers/run.js';
import { FIXTURE_NAMES, narFixtures, nixDump, nixPathInfo } from './fixtures.js';

async function withTemp<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-dump-'));
  try {
    return await f(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One clear line on stderr, a non-zero exit, no stack trace. */
function assertOneLineError(r: RunResult, re: RegExp): void {
  assert.notEqual(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
  assert.match(r.stderr, /^narpush: error: [^\n]*\n$/, r.stderr);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  assert.match(r.stderr, re);
}

test('dump-path writes exactly what nix-store --dump writes, for every fixture', async () => {
  const fixtures = await narFixtures();
  for (const name of FIXTURE_NAMES) {
    const p = fixtures.get(name)!;
    const r = await narpush(['dump-path', p]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const expected = await nixDump(p);
    assert.ok(r.stdout.equals(expected), `${name}: ${r.stdout.length} bytes, Nix wrote ${expected.length}`);
  }
});

test("the NAR's sha256 and size are the narHash and narSize in Nix's database", async () => {
  const fixtures = await narFixtures();
  for (const name of FIXTURE_NAMES) {
    const p = fixtures.get(name)!;
    const r = await narpush(['dump-path', p]);
    const info = await nixPathInfo(p);
    assert.equal(info.narHash.algo, 'sha256');
    assert.equal(createHash('sha256').update(r.stdout).digest('hex'), info.narHash.digest.toString('hex'), name);
    assert.equal(r.stdout.length, info.narSize, name);
  }
});

test('subpaths inside a store path dump like nix-store --dump does', async () => {
  const tree = (await narFixtures()).get('nar-tree')!;
  const deep = `deep/${Array.from({ length: 40 }, (_, i) => `d${i}`).join('/')}`;
  for (const sub of ['sub', 'size9', 'exe755', 'abs-link', 'dangling-link', 'dir-link', `${deep}/up`, deep, 'many/']) {
    const r = await narpush(['dump-path', `${tree}/${sub}`]);
    assert.equal(r.code, 0, `${sub}: ${r.stderr}`);
    assert.ok(r.stdout.equals(await nixDump(`${tree}/${sub}`)), sub);
  }
});

test('a ./result symlink (or a chain of them) names its store path', async () => {
  const p = (await narFixtures()).get('nar-tree')!;
  await withTemp(async (dir) => {
    fs.symlinkSync(p, path.join(dir, 'result'));
    fs.symlinkSync('result', path.join(dir, 'result2'));
    const expected = await nixDump(p);
    for (const arg of ['./result', 'result2', path.join(dir, 'result')]) {
      const r = await narpush(['dump-path', arg], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(expected), arg);
    }
  });
});

test('bad arguments give one line on stderr and a non-zero exit', async () => {
  const p = (await narFixtures()).get('nar-tree')!;
  const hash = path.basename(p).slice(0, 32);
  await withTemp(async (dir) => {
    fs.symlinkSync('/etc/passwd', path.join(dir, 'outside-link'));
    assertOneLineError(await narpush(['dump-path', path.join(dir, 'missing')]), /does not exist/);
    assertOneLineError(await narpush(['dump-path', `/nix/store/${hash}-not-built-here`]), /path '\/nix\/store\/\w{32}-not-built-here' does not exist/);
    assertOneLineError(await narpush(['dump-path', `${p}/no/such/file`]), /does not exist/);
    assertOneLineError(await narpush(['dump-path', '/etc/passwd']), /'\/etc\/passwd' is not in the Nix store/);
    assertOneLineError(await narpush(['dump-path', path.join(dir, 'outside-link')]), /is not in the Nix store/);
    assertOneLineError(await narpush(['dump-path', `${p}/../../../etc/passwd`]), /not in the Nix store/);
    assertOneLineError(await narpush(['dump-path', `/nix/store/../../etc/passwd`]), /not in the Nix store/);
    assertOneLineError(await narpush(['dump-path', '/nix/store/not-a-hash']), /not a store path|invalid hash part/);
  });
});

test('in a store of its own: FIFOs are refused and symlinks may not lead out of the store path', async () => {
  await withTemp(async (dir) => {
    const store = path.join(dir, 'store');
    const sp = path.join(store, '0123456789abcdfghijklmnpqrsvwxyz-special');
    fs.mkdirSync(sp, { recursive: true });
    fs.writeFileSync(path.join(sp, 'file'), 'x');
    fs.mkdirSync(path.join(dir, 'elsewhere'));
    fs.writeFileSync(path.join(dir, 'elsewhere', 'secret'), 'secret');
    fs.symlinkSync(path.join(dir, 'elsewhere'), path.join(sp, 'escape'));
    const env = { ...process.env, NIX_STORE_DIR: store };
    const ok = await narpush(['dump-path', sp], { env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(ok.stdout.equals(await nixDump(sp)));
    const link = await narpush(['dump-path', `${sp}/escape`], { env });
    assert.ok(link.stdout.equals(await nixDump(`${sp}/escape`)), 'the symlink itself may be dumped');
    assertOneLineError(await narpush(['dump-path', `${sp}/escape/secret`], { env }), /leads outside the store path .* through a symlink/);
    // A store path whose root is a symlink to another one: its subpaths are not its own.
    const other = path.join(store, '1123456789abcdfghijklmnpqrsvwxyz-other');
    fs.symlinkSync(sp, other);
    assertOneLineError(await narpush(['dump-path', `${other}/file`], { env }), /leads outside the store path/);
    const linkRoot = await narpush(['dump-path', other], { env });
    assert.ok(linkRoot.stdout.equals(await nixDump(other)), 'a store path that is a symlink dumps as one');
    await runOk('mkfifo', [path.join(sp, 'fifo')]);
    assertOneLineError(await narpush(['dump-path', sp], { env }), /special\/fifo' is a FIFO: a NAR holds only regular files, symlinks and directories/);
  });
});

test('a reader that goes away (| head -c 10) ends the dump quietly with a non-zero exit', async () => {
  const large = (await narFixtures()).get('nar-large')!;
  const script = `set -o pipefail; "${process.execPath}" "${NARPUSH_BIN}" dump-path "${large}" | head -c 10 | od -c | head -1`;
  const r = await run('bash', ['-c', script]);
  assert.notEqual(r.code, 0);
  assert.equal(r.stderr, '');
  assert.match(r.stdout.toString(), /\\r/); // the first bytes: the length 13 of the magic
});
