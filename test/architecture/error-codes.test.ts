// The error codes are a closed registry (src/error-codes.ts): the README's
// table is that registry, row for row; every code thrown in src/ is in it;
// the exit code a command ends with is the registry's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { ERROR_CODES, EXIT_BUG, EXIT_FAILURE, EXIT_USAGE, isErrorCode } from '../../src/error-codes.js';
import { REPO_ROOT, narpush } from '../helpers/run.js';

const BEGIN = '<!-- error codes: generated from src/error-codes.ts, checked by test/architecture/error-codes.test.ts -->';
const END = '<!-- end of error codes -->';

function table(): string {
  const rows = Object.entries(ERROR_CODES).map(
    ([code, i]) => `| \`${code}\` | ${i.meaning} | ${i.retried ? 'yes' : 'no'} | ${i.exit} |`,
  );
  return ['| code | meaning | the daemon retries the path | exit |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

test("the README's table of error codes is the registry", async () => {
  const readme = await readFile(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  assert.ok(a >= 0 && b > a, `README.md has the markers ${BEGIN} ... ${END}`);
  const inReadme = readme.slice(a + BEGIN.length, b).trim();
  assert.equal(inReadme, table(), `README.md's table is out of date; it should be:\n${table()}`);
});

test('every code a NarpushError is made with in src/ is in the registry, and every registered code is used', async () => {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.ts')) files.push(p);
    }
  };
  await walk(path.join(REPO_ROOT, 'src'));
  const text = (await Promise.all(files.filter((f) => !f.endsWith('error-codes.ts')).map((f) => readFile(f, 'utf8')))).join('\n');
  // tsc already refuses an unknown literal; this catches codes built from strings and codes no longer used.
  for (const code of Object.keys(ERROR_CODES)) {
    assert.ok(text.includes(`'${code}'`), `${code} is registered but never used in src/`);
  }
  assert.equal(isErrorCode('NO_SUCH_CODE'), false);
  assert.equal(isErrorCode('toString'), false, 'inherited properties are not codes');
  assert.equal(isErrorCode('BAD_CACHE_URL'), true);
});

test('a command ends with the exit code the registry gives its error', async () => {
  assert.equal(ERROR_CODES.BAD_CACHE_URL.exit, EXIT_USAGE);
  const usage = await narpush(['upload-path', '--to', 'gopher://x', '/nix/store/00000000000000000000000000000000-x'], { env: { ...process.env, NIX_REMOTE: 'unix:///nonexistent' } });
  assert.equal(usage.code, EXIT_USAGE, usage.stderr);
  assert.equal(ERROR_CODES.KEY_FILE_NOT_FOUND.exit, EXIT_FAILURE);
  const failure = await narpush(['upload-path', '--to', 'file:///tmp/x', '--secret-key-file', '/nonexistent/key', '/nix/store/00000000000000000000000000000000-x']);
  assert.equal(failure.code, EXIT_FAILURE, failure.stderr);
  assert.ok(Object.values(ERROR_CODES).every((i) => [EXIT_FAILURE, EXIT_USAGE, EXIT_BUG].includes(i.exit)));
});

test('a NarpushError made by another copy of errors.ts is recognised (bin/narpush bundles two)', async () => {
  const { NarpushError, isNarpushError } = await import('../../src/errors.js');
  // The same file under another URL is another module instance, as in the bundle's two parts.
  const copy = (await import(`${new URL('../../src/errors.js', import.meta.url).href}?copy`)) as typeof import('../../src/errors.js');
  assert.notEqual(copy.NarpushError, NarpushError, 'a second copy of the class');
  const e = new copy.NarpushError('STORE_UNAVAILABLE', 'from the other copy');
  assert.equal(e instanceof NarpushError, false);
  assert.equal(isNarpushError(e), true);
  assert.equal(isNarpushError(Object.assign(new Error('look-alike'), { code: 'STORE_UNAVAILABLE', name: 'NarpushError' })), false);
  assert.equal(isNarpushError({ code: 'BAD_OPTION' }), false);
});
