// bin/narpush runs dist/bundle/narpush.cjs (scripts/bundle.mjs), CommonJS
// throughout. The bundle must load no more than the unbundled modules did at
// start-up: the AWS SDK, the native addons and prom-client only when a
// command needs them, and the crypto thread must be found next to it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';
import { nixBuildExpr, nixEnv } from '../helpers/nix.js';
import { NARPUSH_BIN, REPO_ROOT, run } from '../helpers/run.js';

const bundle = path.join(REPO_ROOT, 'dist', 'bundle');

/** Every file of the bundle, by name. */
async function bundleFiles(): Promise<Map<string, string>> {
  const names = await readdir(bundle);
  return new Map(await Promise.all(names.map(async (n) => [n, await readFile(path.join(bundle, n), 'utf8')] as const)));
}

/** The CommonJS files a run of bin/narpush loads (a preload lists require.cache as the process exits). */
async function loadedFiles(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(report, "process.on('exit', () => require('fs').writeFileSync(process.env.LOADED_REPORT, JSON.stringify(Object.keys(require.cache))));\n");
    const out = path.join(dir, 'loaded.json');
    const r = await run(process.execPath, ['--require', report, NARPUSH_BIN, ...args], { env: { ...env, LOADED_REPORT: out } });
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(await readFile(out, 'utf8')) as string[]).filter((f) => f !== report);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('the bundle is CommonJS, requires the AWS SDK and the native addons when used, and carries the crypto thread', async () => {
  // No ES module: a process that loads none never starts Node's ES module loader (scripts/bundle.mjs).
  const files = await bundleFiles();
  assert.deepEqual([...files.keys()].sort(), ['code-cache.cjs', 'commands.cjs', 'crypto-thread.cjs', 'early-store.cjs', 'hook.cjs', 'narpush.cjs', 'upload.cjs']);
  for (const [name, text] of files) {
    assert.match(text, /^["']use strict["'];/, `${name} keeps the strict mode of the ES modules it was made from`);
    assert.doesNotMatch(text, /\bimport\.meta\b/, `${name}: import.meta has no meaning in CommonJS`);
    // The hook's one import(): the store client, an ES module, when it spools.
    const imports = [...text.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)].map((m) => m[1]);
    assert.deepEqual(imports, name === 'hook.cjs' ? ['../src/daemon/hook-roots.js'] : [], `${name}: no import() of an ES module`);
  }
  const all = [...files.values()].join('\n');
  assert.match(all, /require\(["']prom-client["']\)/, 'prom-client is required when used (daemon --metrics-listen)');
  for (const addon of ['zstd-napi', 'zstd-napi/binding.js', 'lzma-native', '@aws-sdk/client-s3']) {
    assert.match(all, new RegExp(`\\(["']${addon.replace(/[/.]/g, '\\$&')}["']\\)`), `${addon} is loaded at run time`);
  }
  assert.match(files.get('upload.cjs')!, /\? ["']\.\/crypto-thread\.cjs["'] :/, 'the thread is found beside the bundle');
  assert.match(await readFile(path.join(REPO_ROOT, 'bin', 'narpush-hook'), 'utf8'), /require\(['"]\.\.\/dist\/bundle\/hook\.cjs['"]\)/);
  const bin = await readFile(path.join(REPO_ROOT, 'bin', 'narpush'), 'utf8');
  assert.match(bin, /require\(['"]\.\.\/dist\/bundle\/code-cache\.cjs['"]\)/);
  assert.match(bin, /bundle\(['"]early-store\.cjs['"]\)/);
  assert.match(bin, /bundle\(['"]narpush\.cjs['"]\)/);
  // The commands' bundles load through the same cache (one instance: code-cache.cjs is required, not bundled).
  const entry = files.get('narpush.cjs')!;
  for (const name of ['commands.cjs', 'upload.cjs']) {
    assert.match(entry, new RegExp(`require\\(["']\\./code-cache\\.cjs["']\\)\\.loadBundle\\([^\\n]*["']${name.replace('.', '\\.')}["']`), name);
  }
  assert.doesNotMatch(entry, /new Script\(/, 'the loader is not bundled into the entry');
});

test('`--version` loads only the entry and the command line, none of the commands; upload-path loads upload.cjs alone', async () => {
  const bundled = (files: string[]): string[] => files.filter((f) => f.startsWith(bundle)).map((f) => path.basename(f)).sort();
  const start = await loadedFiles(['--version']);
  assert.ok(start.includes(NARPUSH_BIN), 'the check sees bin/narpush');
  assert.deepEqual(bundled(start), ['code-cache.cjs', 'early-store.cjs', 'narpush.cjs']);
  assert.deepEqual(start.filter((f) => f.includes('/node_modules/')), [], 'nothing from node_modules');
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const help = await loadedFiles(['verify', '--help']);
    assert.deepEqual(bundled(help), ['code-cache.cjs', 'early-store.cjs', 'narpush.cjs'], '--help of a command loads no command');
    const [small] = await nixBuildExpr(`lib.mk { name = "np-bundle-tiny"; salt = "${process.pid}-${Date.now()}"; script = "echo tiny > $out"; }`);
    const upload = await loadedFiles(['upload-path', '--to', `file://${path.join(dir, 'c')}`, '--compression', 'zstd', small!], nixEnv());
    assert.deepEqual(bundled(upload), ['code-cache.cjs', 'early-store.cjs', 'narpush.cjs', 'upload.cjs']);
    const gen = await loadedFiles(['generate-key', 'k', path.join(dir, 'sk'), path.join(dir, 'pk')]);
    assert.deepEqual(bundled(gen), ['code-cache.cjs', 'commands.cjs', 'early-store.cjs', 'narpush.cjs']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bin/narpush runs as a program, with the node flags of its #! line', async () => {
  // As users run it (not `node bin/narpush`): `env -S` must split the line
  // and this node must accept the flags, or every command would fail to start.
  const first = (await readFile(path.join(REPO_ROOT, 'bin', 'narpush'), 'utf8')).split('\n')[0]!;
  assert.match(first, /^#!\/usr\/bin\/env -S node --v8-pool-size=1$/);
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? ''}` };
  const r = await run(path.join(REPO_ROOT, 'bin', 'narpush'), ['--version'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^\d+\.\d+\.\d+\n$/);
  assert.equal(r.stderr, '');
});

test('commands that do not compress load neither native addon', async () => {
  // A preload reports, as the process exits, every CommonJS module it loaded.
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(report, "process.on('exit', () => process.stderr.write(JSON.stringify(Object.keys(require.cache))));\n");
    const addons = async (args: string[]): Promise<string[]> => {
      const r = await run(process.execPath, ['--require', report, ...args]);
      assert.equal(r.code, 0, r.stderr);
      const loaded = JSON.parse(r.stderr) as string[];
      assert.ok(loaded.includes(report), 'the preload itself is listed');
      return loaded.filter((m) => /node_modules\/(zstd-napi|lzma-native)\//.test(m));
    };
    const bin = path.join(REPO_ROOT, 'bin', 'narpush');
    assert.deepEqual(await addons([bin, '--version']), []);
    assert.deepEqual(await addons([bin, 'generate-key', 'k', path.join(dir, 'sk'), path.join(dir, 'pk')]), []);
    // The check sees an addon once it is loaded.
    const url = pathToFileURL(path.join(REPO_ROOT, 'dist', 'src', 'cache', 'addons.js')).href;
    const seen = await addons(['--input-type=module', '-e', `(await import('${url}')).zstdNapi()`]);
    assert.ok(seen.some((m) => m.includes('/zstd-napi/')), seen.join(', '));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('prom-client is loaded only when a metrics server starts', async () => {
  // It is CommonJS: imported or required, its modules are listed in require.cache.
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(report, "process.on('exit', () => process.stderr.write(JSON.stringify(Object.keys(require.cache))));\n");
    const promClient = async (args: string[]): Promise<string[]> => {
      const r = await run(process.execPath, ['--require', report, ...args]);
      assert.equal(r.code, 0, r.stderr);
      const loaded = JSON.parse(r.stderr.slice(r.stderr.lastIndexOf('['))) as string[];
      assert.ok(loaded.includes(report), 'the preload itself is listed');
      return loaded.filter((m) => m.includes('/node_modules/prom-client/'));
    };
    const bin = path.join(REPO_ROOT, 'bin', 'narpush');
    assert.deepEqual(await promClient([bin, '--version']), []);
    assert.deepEqual(await promClient([bin, 'generate-key', 'k', path.join(dir, 'sk'), path.join(dir, 'pk')]), []);
    const daemonJs = pathToFileURL(path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'daemon.js')).href;
    const metricsJs = pathToFileURL(path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'metrics.js')).href;
    const statsJs = pathToFileURL(path.join(REPO_ROOT, 'dist', 'src', 'daemon', 'stats.js')).href;
    assert.deepEqual(await promClient(['--input-type=module', '-e', `await import('${daemonJs}'); await import('${metricsJs}')`]), []);
    // The check sees it once a server starts.
    const start = `const { startMetricsServer } = await import('${metricsJs}'); const { DaemonStats } = await import('${statsJs}');
      const s = await startMetricsServer({ listen: { host: '127.0.0.1', port: 0 }, stats: new DaemonStats(Date.now),
        queue: () => ({ queued: 0, inFlight: 0, waitingRetry: 0 }), health: () => undefined });
      await s.close();`;
    const seen = await promClient(['--input-type=module', '-e', start]);
    assert.ok(seen.length > 0, 'prom-client seen once loaded');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the hook runs as CommonJS and, when the daemon answers, loads no file-system code', async () => {
  // A preload reports, as the process exits, the CommonJS files loaded and
  // whether Node's node:fs/promises (ten more of Node's own modules, needed
  // only to spool) was.
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  const socket = path.join(dir, 'd.sock');
  const server = createServer((c) => {
    c.once('data', () => c.end('{"ok":true}\n'));
    c.on('error', () => {});
  });
  try {
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(
      report,
      "process.on('exit', () => process.stdout.write(JSON.stringify({ cjs: Object.keys(require.cache), fsPromises: process.moduleLoadList.includes('NativeModule fs/promises') })));\n",
    );
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const hookRun = async (sock: string): Promise<{ cjs: string[]; fsPromises: boolean; stderr: string }> => {
      const env = { ...process.env, OUT_PATHS: '/nix/store/00000000000000000000000000000000-x', NARPUSH_SOCKET: sock, NARPUSH_STATE_DIR: path.join(dir, 'state'), NARPUSH_HOOK_TIMEOUT: '5' };
      const r = await run(process.execPath, ['--require', report, path.join(REPO_ROOT, 'bin', 'narpush-hook')], { env });
      assert.equal(r.code, 0, r.stderr);
      return { ...(JSON.parse(r.stdout.toString()) as { cjs: string[]; fsPromises: boolean }), stderr: r.stderr };
    };
    const up = await hookRun(socket);
    assert.equal(up.stderr, '', 'queued: nothing to say');
    for (const f of [path.join(REPO_ROOT, 'bin', 'narpush-hook'), path.join(bundle, 'hook.cjs')]) assert.ok(up.cjs.includes(f), `${f} is loaded as CommonJS`);
    assert.equal(up.fsPromises, false, 'node:fs/promises is not loaded when the daemon answers');
    // The check sees it once the hook spools (nothing listens there).
    const down = await hookRun(path.join(dir, 'nobody.sock'));
    assert.match(down.stderr, /spooled the request/);
    assert.equal(down.fsPromises, true);
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('upload-path loads node:zlib only for xz, node:worker_threads only when it starts a thread, and neither perf_hooks nor node:assert for zstd', async () => {
  // Each is a dozen of Node's own modules, loaded at start-up if imported
  // statically: small jobs, where start-up is most of the time, need neither.
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const salt = `${process.pid}-${Date.now()}`;
    const [small] = await nixBuildExpr(`lib.mk { name = "np-bundle-small"; salt = "${salt}"; script = "echo small > $out"; }`);
    // Two NARs over the in-memory size, 34 MB in all (plan.ts WHOLE_MIN_BYTES): each goes whole to a worker thread.
    const large = await Promise.all(
      [1, 2].map(async (i) => (await nixBuildExpr(`lib.mk { name = "np-bundle-large-${i}"; salt = "${salt}"; script = "head -c 17000000 /dev/urandom > $out"; }`))[0]!),
    );
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(
      report,
      "process.on('exit', () => require('fs').writeFileSync(process.env.LOADED_REPORT, JSON.stringify(process.moduleLoadList)));\n",
    );
    await run(process.execPath, [NARPUSH_BIN, 'generate-key', 'bundle-test-1', path.join(dir, 'sk'), path.join(dir, 'pk')]);
    let n = 0;
    const loaded = async (compression: string, paths: readonly string[]): Promise<{ zlib: boolean; threads: boolean; perfHooks: boolean; assert: boolean }> => {
      const out = path.join(dir, `loaded-${n++}.json`);
      const cache = `file://${path.join(dir, `cache-${n}`)}`;
      const r = await run(
        process.execPath,
        ['--require', report, NARPUSH_BIN, 'upload-path', '--to', cache, '--compression', compression, '--secret-key-file', path.join(dir, 'sk'), ...paths],
        { env: nixEnv({ LOADED_REPORT: out }) },
      );
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(await readFile(out, 'utf8')) as string[];
      return {
        zlib: list.includes('NativeModule zlib'),
        threads: list.includes('NativeModule worker_threads'),
        // The performance global (src/clock.ts) and zstd-napi's index (compression.ts) load these.
        perfHooks: list.includes('NativeModule perf_hooks'),
        assert: list.includes('NativeModule assert'),
      };
    };
    const none = { zlib: false, threads: false, perfHooks: false, assert: false };
    assert.deepEqual(await loaded('zstd', [small!]), none);
    assert.deepEqual(await loaded('none', [small!]), none);
    // The checks see each once it is needed.
    const xz = await loaded('xz', [small!]);
    assert.equal(xz.zlib, true, 'xz needs CRC32 from node:zlib');
    assert.equal(xz.assert, true, 'the xz encoder loads zstd-napi whole');
    assert.deepEqual(await loaded('zstd', large), { ...none, threads: true });
    const out = path.join(dir, 'loaded-perf.json');
    assert.equal((await run(process.execPath, ['--require', report, '-e', 'performance.now()'], { env: { ...process.env, LOADED_REPORT: out } })).code, 0);
    assert.ok((JSON.parse(await readFile(out, 'utf8')) as string[]).includes('NativeModule perf_hooks'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a command that stops before it answers (the event loop ran dry) exits 70 with one line, never 0', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    // The command's promise never settles and nothing keeps the process alive.
    const preload = path.join(dir, 'stall.cjs');
    await writeFile(
      preload,
      `const Module = require('node:module');
const load = Module._load;
Module._load = function (request, ...rest) {
  const m = load.call(this, request, ...rest);
  if (!request.endsWith('code-cache.cjs')) return m;
  const loadBundle = (f) => {
    const b = m.loadBundle(f);
    return f.endsWith('narpush.cjs') ? { ...b, main: () => new Promise(() => {}) } : b;
  };
  return { ...m, loadBundle };
};
`,
    );
    const bin = path.join(REPO_ROOT, 'bin', 'narpush');
    const stalled = await run(process.execPath, ['--require', preload, bin, '--version']);
    assert.equal(stalled.code, 70);
    assert.equal(stalled.stderr, 'narpush: internal error: the command stopped before it finished (nothing was left to wait for)\n');
    assert.equal(stalled.stdout.toString(), '');
    // And an ordinary run says nothing of the kind.
    const r = await run(process.execPath, [bin, '--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
