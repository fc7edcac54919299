// bin/narpush runs dist/bundle/narpush.js (scripts/bundle.mjs). The bundle
// must load no more than the unbundled modules did at start-up: the AWS SDK,
// the native addons and prom-client only when a command needs them, and the
// crypto thread must be found next to it.
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

/** Every file of the bundle (the entries and their chunks), by name. */
async function bundleFiles(): Promise<Map<string, string>> {
  const names = (await readdir(bundle)).filter((n) => n.endsWith('.js'));
  return new Map(await Promise.all(names.map(async (n) => [n, await readFile(path.join(bundle, n), 'utf8')] as const)));
}

/** A module's static imports (loaded before it runs). */
function staticImports(text: string): string[] {
  return [...text.matchAll(/^import\s[^;]*?from\s*["']([^"']+)["']|^import\s*["']([^"']+)["']/gm)].map((m) => (m[1] ?? m[2])!);
}

test('the bundle imports the AWS SDK and the native addons lazily, and carries the crypto thread', async () => {
  const files = await bundleFiles();
  const all = [...files.values()].join('\n');
  for (const [name, text] of files) {
    const eager = staticImports(text).filter((m) => !m.startsWith('node:') && !/^\.\/chunk-[A-Z0-9]+\.js$/.test(m));
    assert.deepEqual(eager, [], `${name}: static imports are Node builtins and the bundle's own chunks only`);
  }
  assert.match(all, /import\(["']prom-client["']\)/, 'prom-client is imported when used (daemon --metrics-listen)');
  // The addons and the AWS SDK are CommonJS, loaded by require() when first
  // used (src/cache/addons.ts, src/s3/s3-backend.ts), not bundled.
  assert.doesNotMatch(all, /import\(["']@aws-sdk\//, 'the AWS SDK goes through require(), not the ES module loader');
  for (const addon of ['zstd-napi', 'zstd-napi/binding.js', 'lzma-native', '@aws-sdk/client-s3']) {
    assert.match(all, new RegExp(`\\(["']${addon.replace(/[/.]/g, '\\$&')}["']\\)`), `${addon} is loaded at run time`);
  }
  assert.match(all, /new URL\(["']\.\/crypto-thread\.js["'], import\.meta\.url\)/);
  // The hook is one CommonJS file (what it loads: the test below); the store
  // client, an ES module, by import() when it spools.
  const hook = await readFile(path.join(bundle, 'hook.cjs'), 'utf8');
  assert.match(hook, /import\(["']\.\.\/src\/daemon\/hook-roots\.js["']\)/);
  assert.match(await readFile(path.join(REPO_ROOT, 'bin', 'narpush-hook'), 'utf8'), /require\(['"]\.\.\/dist\/bundle\/hook\.cjs['"]\)/);
  // The thread is bundled alone: it imports nothing of the CLI's chunks.
  assert.deepEqual(staticImports(files.get('crypto-thread.js')!).filter((m) => !m.startsWith('node:')), []);
  // ...and bin/narpush runs it (the CLI tests then run the bundle).
  const bin = await readFile(path.join(REPO_ROOT, 'bin', 'narpush'), 'utf8');
  assert.match(bin, /import\(['"]\.\.\/dist\/bundle\/early-store\.js['"]\)/);
  assert.match(bin, /import\(['"]\.\.\/dist\/bundle\/narpush\.js['"]\)/);
});

test('`--version` loads only the entry and its chunks, none of the commands or the Node builtins they use', async () => {
  // Split at the lazy imports of the commands (scripts/bundle.mjs): the
  // entry's static imports are what every start pays.
  const files = await bundleFiles();
  const seen = new Set<string>();
  const builtins = new Set<string>();
  const visit = (name: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const m of staticImports(files.get(name)!)) {
      if (m.startsWith('node:')) builtins.add(m);
      else visit(m.slice(2));
    }
  };
  visit('narpush.js');
  const text = [...seen].map((n) => files.get(n)!).join('\n');
  const uploadCode = /function uploadPaths\(|\bThreadPool = class\b|\bFileBackend = class\b/;
  assert.match([...files.values()].join('\n'), uploadCode, 'the bundle has the upload code');
  assert.doesNotMatch(text, uploadCode, 'no upload code at start-up');
  for (const heavy of ['node:worker_threads', 'node:zlib', 'node:http']) assert.ok(!builtins.has(heavy), `${heavy} is not loaded at start-up`);
  assert.ok(seen.size < files.size, 'there are chunks a bare start does not load');
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

test('upload-path loads node:zlib only for xz and node:worker_threads only when it starts a thread', async () => {
  // Each is a dozen of Node's own modules, loaded at start-up if imported
  // statically: small jobs, where start-up is most of the time, need neither.
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bundle-'));
  try {
    const salt = `${process.pid}-${Date.now()}`;
    const [small] = await nixBuildExpr(`lib.mk { name = "np-bundle-small"; salt = "${salt}"; script = "echo small > $out"; }`);
    // Two NARs over the in-memory size (plan.ts): each goes whole to a worker thread.
    const large = await Promise.all(
      [1, 2].map(async (i) => (await nixBuildExpr(`lib.mk { name = "np-bundle-large-${i}"; salt = "${salt}"; script = "head -c 700000 /dev/urandom > $out"; }`))[0]!),
    );
    const report = path.join(dir, 'loaded.cjs');
    await writeFile(
      report,
      "process.on('exit', () => require('fs').writeFileSync(process.env.LOADED_REPORT, JSON.stringify(process.moduleLoadList)));\n",
    );
    await run(process.execPath, [NARPUSH_BIN, 'generate-key', 'bundle-test-1', path.join(dir, 'sk'), path.join(dir, 'pk')]);
    let n = 0;
    const loaded = async (compression: string, paths: readonly string[]): Promise<{ zlib: boolean; threads: boolean }> => {
      const out = path.join(dir, `loaded-${n++}.json`);
      const cache = `file://${path.join(dir, `cache-${n}`)}`;
      const r = await run(
        process.execPath,
        ['--require', report, NARPUSH_BIN, 'upload-path', '--to', cache, '--compression', compression, '--secret-key-file', path.join(dir, 'sk'), ...paths],
        { env: nixEnv({ LOADED_REPORT: out }) },
      );
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(await readFile(out, 'utf8')) as string[];
      return { zlib: list.includes('NativeModule zlib'), threads: list.includes('NativeModule worker_threads') };
    };
    assert.deepEqual(await loaded('zstd', [small!]), { zlib: false, threads: false });
    assert.deepEqual(await loaded('none', [small!]), { zlib: false, threads: false });
    // The checks see both once they are needed.
    assert.equal((await loaded('xz', [small!])).zlib, true, 'xz needs CRC32 from node:zlib');
    assert.deepEqual(await loaded('zstd', large), { zlib: false, threads: true });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
