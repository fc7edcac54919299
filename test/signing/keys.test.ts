/**
 * Nix signing keys: keys made by Nix load; malformed keys are refused with
 * their own one-line message that never contains key material; key files are
 * read with errors naming the file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { nix, requireNix } from '../helpers/nix.js';
import { run, REPO_ROOT } from '../helpers/run.js';
import {
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  newSecretKey,
  parsePublicKey,
  parsePublicKeys,
  parseSecretKey,
  toPublicKey,
} from '../../src/signing/keys.js';
import { readPublicKeyFile, readSecretKeyFile } from '../../src/signing/key-file.js';
import { tempDir } from '../narinfo/nix-cache.js';

async function nixKeyPair(name: string): Promise<{ dir: string; sk: string; pk: string; secret: string; public: string }> {
  await requireNix();
  const dir = await tempDir('keys');
  const sk = path.join(dir, 'secret.key');
  const pk = path.join(dir, 'public.key');
  await nix('nix-store', ['--generate-binary-cache-key', name, sk, pk]);
  return { dir, sk, pk, secret: await readFile(sk, 'utf8'), public: await readFile(pk, 'utf8') };
}

test('a key pair made by nix-store --generate-binary-cache-key loads, and its public half is Nix\'s public key', async () => {
  const k = await nixKeyPair('nix-made.example.org-1');
  const secret = parseSecretKey(k.secret);
  assert.equal(secret.name, 'nix-made.example.org-1');
  assert.equal(formatPublicKey(toPublicKey(secret)), k.public);
  assert.equal(formatSecretKey(secret), k.secret);
  assert.deepEqual(parsePublicKey(k.public), toPublicKey(secret));
  assert.deepEqual(await readSecretKeyFile(k.sk), secret);
  assert.deepEqual(await readPublicKeyFile(k.pk), toPublicKey(secret));
  // With the newline an editor adds, or other trailing whitespace.
  for (const tail of ['\n', '\r\n', ' \n\t\n']) {
    assert.deepEqual(parseSecretKey(k.secret + tail), secret, JSON.stringify(tail));
    assert.deepEqual(parsePublicKey(k.public + tail), toPublicKey(secret), JSON.stringify(tail));
    await writeFile(k.sk, k.secret + tail);
    assert.deepEqual(await readSecretKeyFile(k.sk), secret);
  }
});

test('generateKeyPair writes what Nix writes: name:base64, 64 and 32 bytes, no newline', () => {
  const pair = generateKeyPair('cache.example.org-1');
  assert.match(pair.secretKey, /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
  assert.match(pair.publicKey, /^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/);
  assert.equal(formatPublicKey(toPublicKey(parseSecretKey(pair.secretKey))), pair.publicKey);
  assert.notEqual(generateKeyPair('cache.example.org-1').secretKey, pair.secretKey, 'keys are random');
  for (const bad of ['', 'a:b', 'a b', 'a\nb', 'a\tb']) {
    assert.throws(() => generateKeyPair(bad), { code: 'BAD_KEY_NAME' }, JSON.stringify(bad));
  }
});

test('malformed keys are refused, each with its own message and without echoing key material', () => {
  const key = newSecretKey('k-1', Buffer.alloc(32, 7));
  const secretB64 = Buffer.from(key.secretKey).toString('base64');
  const publicB64 = Buffer.from(toPublicKey(key).publicKey).toString('base64');
  const b64 = (n: number): string => Buffer.alloc(n, 1).toString('base64');
  const mismatched = Buffer.concat([Buffer.from(key.secretKey.subarray(0, 32)), Buffer.alloc(32, 9)]).toString('base64');

  const secretCases: [string, string, RegExp][] = [
    ['no colon', secretB64, /^secret key is not a Nix secret key \(expected 'name:base64', found no ':'\)$/],
    ['empty name', `:${secretB64}`, /^secret key is not a Nix secret key: the name is empty$/],
    ['whitespace in the name', `my key:${secretB64}`, /the name contains whitespace/],
    ['empty key', 'k-1:', /^secret key \('k-1'\) is not valid base64 after the name$/],
    ['bad base64', `k-1:${secretB64.slice(0, -4)}!!!=`, /^secret key \('k-1'\) is not valid base64 after the name$/],
    ['base64 without padding', `k-1:${secretB64.replace(/=+$/, '')}`, /is not valid base64/],
    ['63 bytes', `k-1:${b64(63)}`, /^secret key \('k-1'\) has 63 bytes, expected 64 \(Ed25519 seed and public key\)$/],
    ['65 bytes', `k-1:${b64(65)}`, /has 65 bytes, expected 64/],
    ['a public key', `k-1:${publicB64}`, /^secret key \('k-1'\) is a public key, not a secret key/],
    ['public half not matching the seed', `k-1:${mismatched}`, /^secret key \('k-1'\) is corrupt: its public half does not match its seed$/],
    ['leading whitespace', ` k-1:${secretB64}`, /the name contains whitespace/],
  ];
  for (const [what, text, message] of secretCases) {
    assert.throws(() => parseSecretKey(text), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'BAD_KEY', what);
      assert.match(e.message, message, what);
      assert.ok(!e.message.includes(secretB64.slice(0, 20)) && !e.message.includes(mismatched.slice(0, 20)), `${what}: no key material`);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  }

  const publicCases: [string, string, RegExp][] = [
    ['no colon', publicB64, /^public key is not a Nix public key \(expected 'name:base64', found no ':'\)$/],
    ['empty name', `:${publicB64}`, /the name is empty/],
    ['a secret key', `k-1:${secretB64}`, /^public key \('k-1'\) is a secret key, not a public key/],
    ['31 bytes', `k-1:${b64(31)}`, /^public key \('k-1'\) has 31 bytes, expected 32$/],
    ['bad base64', 'k-1:%%%%', /is not valid base64/],
  ];
  for (const [what, text, message] of publicCases) assert.throws(() => parsePublicKey(text), { code: 'BAD_KEY', message }, what);

  assert.deepEqual(
    parsePublicKeys(` a-1:${publicB64}\n b-1:${publicB64}  `).map((k) => k.name),
    ['a-1', 'b-1'],
  );
});

test('key files: missing, unreadable, a directory, too large or malformed are refused naming the file', async () => {
  const dir = await tempDir('keyfiles');
  const missing = path.join(dir, 'nope.key');
  await assert.rejects(readSecretKeyFile(missing), { code: 'KEY_FILE_NOT_FOUND', message: `secret key file '${missing}' does not exist` });
  await assert.rejects(readPublicKeyFile(path.join(dir, 'nope', 'x')), { code: 'KEY_FILE_NOT_FOUND' });
  await mkdir(path.join(dir, 'd'));
  await assert.rejects(readSecretKeyFile(path.join(dir, 'd')), { code: 'KEY_FILE_UNREADABLE', message: /is not a regular file|is a directory/ });
  await writeFile(path.join(dir, 'big'), Buffer.alloc(100_000, 'a'));
  await assert.rejects(readSecretKeyFile(path.join(dir, 'big')), { code: 'BAD_KEY', message: /too large to be a Nix key file/ });

  const key = newSecretKey('k-1');
  const pub = path.join(dir, 'pub');
  await writeFile(pub, formatPublicKey(toPublicKey(key)));
  await assert.rejects(readSecretKeyFile(pub), {
    code: 'BAD_KEY',
    message: `secret key file '${pub}' ('k-1') is a public key, not a secret key (use the secret key file made with the public one)`,
  });
  const short = path.join(dir, 'short');
  const secretText = formatSecretKey(key);
  await writeFile(short, secretText.slice(0, -8) + '====');
  await assert.rejects(readSecretKeyFile(short), (e: Error) => {
    assert.match(e.message, new RegExp(`^secret key file '${short}' \\('k-1'\\) (has \\d+ bytes|is not valid base64)`));
    assert.ok(!e.message.includes(secretText.slice(4, 30)), 'no key material');
    return true;
  });

  // Permission denied: root reads anything, so ask as nobody when we are root.
  const secret = path.join(dir, 'secret');
  await writeFile(secret, secretText, { mode: 0o600 });
  await chmod(secret, 0o000);
  const script = `import(${JSON.stringify(path.join(REPO_ROOT, 'dist/src/signing/key-file.js'))}).then((m) => m.readSecretKeyFile(${JSON.stringify(secret)})).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`;
  const asRoot = process.getuid?.() === 0;
  const r = asRoot
    ? await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], { cwd: '/' })
    : await run(process.execPath, ['--input-type=module', '-e', script]);
  const result = JSON.parse(r.stdout.toString()) as { code?: string; message?: string };
  assert.equal(result.code, 'KEY_FILE_UNREADABLE', r.stderr);
  assert.match(result.message!, new RegExp(`^secret key file '${secret}' is not readable \\(permission denied\\)$`));
});
