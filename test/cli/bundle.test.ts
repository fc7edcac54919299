// bin/narpush runs dist/bundle/narpush.js (scripts/bundle.mjs). The bundle
// must load no more than the unbundled modules did at start-up: the AWS SDK
// and the native addons only when a command needs them, and the crypto
// thread must be found next to it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { REPO_ROOT } from '../helpers/run.js';

const bundle = path.join(REPO_ROOT, 'dist', 'bundle');

test('the bundle imports the AWS SDK and the native addons lazily, and carries the crypto thread', async () => {
  const text = await readFile(path.join(bundle, 'narpush.js'), 'utf8');
  const eager = [...text.matchAll(/^import\s[^;]*?from\s*["']([^"']+)["']/gm)].map((m) => m[1]!);
  assert.ok(eager.length > 0, 'found the static imports');
  assert.deepEqual(eager.filter((m) => !m.startsWith('node:')), [], 'static imports are Node builtins only');
  for (const lazy of ['@aws-sdk/client-s3', 'zstd-napi', 'lzma-native']) {
    assert.match(text, new RegExp(`import\\(["']${lazy.replace('/', '\\/')}["']\\)`), `${lazy} is imported when used`);
  }
  assert.match(text, /new URL\(["']\.\/crypto-thread\.js["'], import\.meta\.url\)/);
  await readFile(path.join(bundle, 'crypto-thread.js'));
  // ...and bin/narpush runs it (the CLI tests then run the bundle).
  assert.match(await readFile(path.join(REPO_ROOT, 'bin', 'narpush'), 'utf8'), /import\(['"]\.\.\/dist\/bundle\/narpush\.js['"]\)/);
});
