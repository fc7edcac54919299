// narpush gc in a loop while the daemon uploads overlapping closures into one
// cache, file:// and S3 (s3rver, where narinfos are not staged and a
// renewal is a copy onto itself), in real time with short durations (--keep-since 6s, the
// daemon renewing what it relies on after 1s). While both run, a watcher
// looks for a narinfo whose NAR or reference is missing (confirmed by a
// second look, see `confirmedViolations`); at the end the whole cache is
// checked, every path of the last closure is in it, and gc did delete things
// during the run. The interleavings are the scheduler's; the property test
// (gc-race.property.test.ts) explores them systematically.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { runHook } from '../../src/daemon/hook.js';
import type { CacheBackend } from '../../src/cache/backend.js';
import { FileBackend } from '../../src/cache/file-backend.js';
import { parseCacheUrl, type S3CacheConfig } from '../../src/cli/cache-url.js';
import { openS3Backend } from '../../src/s3/s3-backend.js';
import { narInfoHash, narInfoLinks } from '../../src/gc/inventory.js';
import { backendInvariantViolations } from '../helpers/cache-invariant.js';
import { nixClosure } from '../helpers/cache-check.js';
import { nixEnv, requireNix } from '../helpers/nix.js';
import { FIXTURES, narpush, run } from '../helpers/run.js';
import { S3RVER_CREDENTIALS, S3RVER_ENV, type S3rverHandle, startS3rver } from '../helpers/s3rver.js';
import { killLeftoverDaemons, startDaemonProcess } from '../daemon/daemon-process.js';
import { tempDir } from '../daemon/fakes.js';

let work: { dir: string; remove(): Promise<void> };
let s3: S3rverHandle | undefined;
before(async () => {
  await requireNix();
  work = await tempDir('narpush-gc-race-');
});
after(async () => {
  await killLeftoverDaemons();
  await s3?.stop();
  await work?.remove();
});

/** `batches` closures of 4 fresh paths each, all referring to one shared chain (common2 -> common1 -> common0). */
async function buildBatches(batches: number): Promise<string[][]> {
  const salt = randomUUID();
  const expr = `let lib = import ${path.join(FIXTURES, 'lib.nix')};
    mk = name: script: lib.mk { inherit name script; salt = "${salt}"; };
    c0 = mk "gc-race-c0" "mkdir $out; echo c0 > $out/f";
    c1 = mk "gc-race-c1" "mkdir $out; echo \${c0} > $out/f";
    c2 = mk "gc-race-c2" "mkdir $out; echo \${c1} > $out/f";
  in builtins.concatLists (builtins.genList (b: builtins.genList (i:
       mk "gc-race-\${toString b}-\${toString i}" "mkdir $out; echo \${toString b} \${toString i} > $out/f; echo \${c2} > $out/dep") 4) ${batches})`;
  const r = await run('nix-build', ['-E', expr, '--no-out-link'], { env: nixEnv() });
  assert.equal(r.code, 0, r.stderr);
  const outs = r.stdout.toString().trim().split('\n');
  return Array.from({ length: batches }, (_, b) => outs.slice(4 * b, 4 * b + 4));
}

/**
 * Narinfos that were seen, then one of their objects missing, then the
 * narinfo still there, then the object still missing: at the moment of the
 * third look the cache showed a narinfo without what it needs.
 */
async function confirmedViolations(backend: CacheBackend): Promise<string[]> {
  const out: string[] = [];
  for await (const o of backend.list('')) {
    if (narInfoHash(o.key) === undefined) continue;
    const text = await backend.get(o.key).catch(() => undefined);
    const links = text === undefined ? undefined : narInfoLinks(text.toString('utf8'));
    if (!links) continue;
    const needs = [links.url, ...links.references.map((r) => `${r.slice(0, 32)}.narinfo`).filter((k) => k !== o.key)];
    for (const k of needs) {
      if (await backend.exists(k)) continue;
      if (!(await backend.exists(o.key))) break;
      if (!(await backend.exists(k))) out.push(`${o.key} is visible without ${k}`);
    }
  }
  return out;
}

interface Target {
  readonly url: string;
  readonly env: NodeJS.ProcessEnv;
  readonly backend: CacheBackend;
}

async function race(name: string, target: Target): Promise<void> {
  const { url, env, backend } = target;
  const batches = await buildBatches(10);
  const p = { socket: path.join(work.dir, `${name}.sock`), stateDir: path.join(work.dir, `state-${name}`) };
  const d = await startDaemonProcess({
    to: url,
    ...p,
    env,
    args: ['--compression', 'none', '--retry-delay', '0.2', '--retry-max-delay', '1', '--narinfo-refresh-age', '1s'],
  });
  let uploading = true;
  const violations: string[] = [];
  let deleted = 0;
  let runs = 0;
  try {
    await runHook({ OUT_PATHS: batches[0]!.join(' '), NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir });
    await d.idle(60_000);
    const collector = (async () => {
      while (uploading) {
        const r = await narpush(['gc', '--cache', url, '--keep-since', '6s', '--grace', '4s', '--json'], { env });
        assert.equal(r.code, 0, r.stderr);
        deleted += (JSON.parse(r.stdout.toString()) as { freed: { objects: number } }).freed.objects;
        runs++;
        // Uploads that overlap a collection are retried: leave them room between collections.
        await new Promise((res) => setTimeout(res, 1000));
      }
    })();
    const watcher = (async () => {
      while (uploading) violations.push(...(await confirmedViolations(backend)));
    })();
    // A batch every 0.8 s for 16 s: old batches age past --keep-since while the shared chain stays in use.
    for (const batch of batches.slice(1)) {
      await runHook({ OUT_PATHS: batch.join(' '), NARPUSH_SOCKET: p.socket, NARPUSH_STATE_DIR: p.stateDir });
      await new Promise((r) => setTimeout(r, 1800));
    }
    await d.idle(60_000);
    uploading = false;
    await Promise.all([collector, watcher]);
  } finally {
    uploading = false;
    await d.stop();
  }
  assert.deepEqual(violations, []);
  assert.deepEqual(await backendInvariantViolations(backend), []);
  const last = await nixClosure(batches[batches.length - 1]!);
  for (const q of last) assert.ok(await backend.exists(`${path.basename(q).slice(0, 32)}.narinfo`), `${q} is in the cache`);
  assert.ok(runs >= 3, `gc ran ${runs} times`);
  assert.ok(deleted > 0, 'gc deleted the old batches while uploads went on');
}

test('file://: gc in a loop while the daemon uploads overlapping closures: no narinfo ever without its NAR or references', async () => {
  const cache = path.join(work.dir, 'cache');
  const backend = new FileBackend(cache);
  try {
    await race('file', { url: `file://${cache}`, env: nixEnv(), backend });
  } finally {
    await backend.close();
  }
});

test('s3: gc in a loop while the daemon uploads overlapping closures: no narinfo ever without its NAR or references', async () => {
  s3 = await startS3rver({ bucket: 'narpush-gc-race' });
  const backend = await openS3Backend(parseCacheUrl(s3.url) as S3CacheConfig, { credentials: S3RVER_CREDENTIALS });
  try {
    await race('s3', { url: s3.url, env: nixEnv({ ...S3RVER_ENV, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }), backend });
  } finally {
    await backend.close();
  }
});
