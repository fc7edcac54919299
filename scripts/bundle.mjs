// bin/narpush loads a bundle instead of ~100 modules: Node's ES module loader
// costs ~1 ms per module, and the CLI's start-up comes before every upload.
// Every part is CommonJS (.cjs): a process that loads no ES module never
// starts Node's ES module loader, 8-10 ms of `narpush --version` on Node 20
// (docs/performance.md). The parts, in dist/bundle:
//  - early-store.cjs, which bin/narpush runs first: it starts opening the Nix
//    daemon's stream (a `nix-daemon --stdio` to start, tens of milliseconds)
//    before the rest loads.
//  - narpush.cjs: the command line and commander. Kept apart from the
//    commands, `--version` and `--help` load no command and none of the
//    Node builtins the commands use (worker_threads, zlib, http...). The
//    few modules it shares with early-store.cjs (errors.ts, the store
//    transport) exist in both.
//  - commands.cjs (src/cli/commands.ts): every command, in one file,
//    required by main.ts when a command runs. Its lazy imports (backends,
//    the S3 SDK's loader, metrics...) stay lazy inside the file.
//  - upload.cjs (src/cli/upload-command.ts): upload-path alone, built the
//    same way. It runs most often, on the smallest jobs, and needs about two
//    thirds of commands.cjs (no daemon, gc or verify, no node:http, vm or v8):
//    Node parses and compiles less before its first byte. Its modules exist
//    in commands.cjs too; one process loads one of the two.
//  - crypto-thread.cjs: the worker thread, alone, next to the code that
//    starts it (thread-pool.ts picks it beside a .cjs).
//  - hook.cjs: bin/narpush-hook's code (src/daemon/hook.ts and the modules
//    it needs): the hook holds up every build. Only when it spools does it
//    run the spool module's code and load the store client, unbundled (an ES
//    module), from dist/src/daemon/hook-roots.js.
// Modules both parts use exist twice; a NarpushError is recognised across
// the copies (errors.ts). tsc still compiles every module to dist/src (tests
// use those). Native addons, the AWS SDK and prom-client stay outside:
// required when used.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist/bundle', { recursive: true, force: true });

const common = {
  outdir: 'dist/bundle',
  bundle: true,
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  platform: 'node',
  target: 'node20',
  external: ['zstd-napi', 'lzma-native', '@aws-sdk/*', '@smithy/*', 'prom-client'],
  // Each module finds what lies beside it from its own URL: here, the bundle's.
  define: { 'import.meta.url': 'narpushImportMetaUrl' },
  inject: ['scripts/cjs-import-meta.js'],
  // The lazy import() of a command or an external package becomes a
  // require() inside a promise: an import() would start the ES module loader.
  supported: { 'dynamic-import': false },
  logLevel: 'warning',
};

/**
 * main.ts's lazy imports of './commands.js' and './upload-command.js' load
 * the files built next to it, through the code cache (code-cache.cjs, which
 * bin/narpush loads first and whose one instance both then share).
 */
const commandsOutside = {
  name: 'commands-outside',
  setup(b) {
    const files = { './commands.js': 'commands.cjs', './upload-command.js': 'upload.cjs' };
    b.onResolve({ filter: /^\.\/(commands|upload-command)\.js$/ }, (args) => ({ path: files[args.path], namespace: 'cached-bundle' }));
    b.onResolve({ filter: /^\.\/code-cache\.cjs$/ }, () => ({ path: './code-cache.cjs', external: true }));
    b.onLoad({ filter: /.*/, namespace: 'cached-bundle' }, (args) => ({
      contents: `module.exports = require('./code-cache.cjs').loadBundle(require('node:path').join(__dirname, ${JSON.stringify(args.path)}));`,
      loader: 'js',
    }));
  },
};

await build({ ...common, entryPoints: { 'code-cache': 'dist/src/cli/code-cache.js' } });
await build({ ...common, entryPoints: { 'early-store': 'dist/src/cli/early-store.js' } });
await build({ ...common, entryPoints: { narpush: 'dist/src/cli/main.js' }, plugins: [commandsOutside] });
await build({ ...common, entryPoints: { commands: 'dist/src/cli/commands.js' } });
await build({ ...common, entryPoints: { upload: 'dist/src/cli/upload-command.js' } });
await build({ ...common, entryPoints: { 'crypto-thread': 'dist/src/cache/threads/crypto-thread.js' } });

/** hook.ts's lazy import of './hook-roots.js' stays a lazy import of the unbundled module. */
const hookRootsOutside = {
  name: 'hook-roots-outside',
  setup(b) {
    b.onResolve({ filter: /^\.\/hook-roots\.js$/ }, () => ({ path: '../src/daemon/hook-roots.js', external: true }));
  },
};
// Its one import() (the store client, an ES module, when it spools) stays an import().
await build({
  ...common,
  supported: {},
  define: {},
  inject: [],
  entryPoints: { hook: 'dist/src/daemon/hook.js' },
  plugins: [hookRootsOutside],
});
