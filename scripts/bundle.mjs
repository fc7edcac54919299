// bin/narpush loads a bundle instead of ~100 modules: Node's ES module loader
// costs ~1 ms per module, and the CLI's start-up comes before every upload.
// Three parts, in dist/bundle:
//  - narpush.js (+ early-store.js, which bin/narpush runs first, and the
//    chunks the two share): the command line, commander and the early store
//    connection. An ES module's static imports all load before it runs: kept
//    apart, `--version` and `--help` load no command and none of the Node
//    builtins the commands use (worker_threads, zlib, http...).
//  - commands.js (src/cli/commands.ts): every command, in one file, imported
//    by main.ts when a command runs. Built without splitting: esbuild splits
//    at every lazy import, and the commands' own (backends, the S3 SDK's
//    loader, metrics...) made some fifty chunks that each cost a read and a
//    module instantiation; unsplit, those imports stay lazy inside the file.
//    Modules both parts use (errors.ts, the store transport) exist twice; a
//    NarpushError is recognised across the copies (errors.ts).
//  - upload.js (src/cli/upload-command.ts): upload-path alone, built the same
//    way. It runs most often, on the smallest jobs, and needs about two
//    thirds of commands.js (no daemon, gc or verify, no node:http, vm or v8):
//    Node parses and compiles less before its first byte. Its modules exist
//    in commands.js too; one process loads one of the two.
//  - crypto-thread.js: the worker thread, alone, next to the code that
//    starts it as thread-pool.ts expects.
//  - hook.cjs: bin/narpush-hook's code (src/daemon/hook.ts and the modules
//    it needs) as one CommonJS file: the hook holds up every build. Only
//    when it spools does it run the spool module's code and load the store
//    client, unbundled, from dist/src/daemon/hook-roots.js.
// tsc still compiles every module to dist/src (tests and the hook use those).
// Native addons, the AWS SDK and prom-client stay outside: loaded when used.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

// Chunk names change with their contents: stale ones would pile up.
rmSync('dist/bundle', { recursive: true, force: true });

const common = {
  outdir: 'dist/bundle',
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['zstd-napi', 'lzma-native', '@aws-sdk/*', '@smithy/*', 'prom-client'],
  // commander is CommonJS: its require() calls of Node builtins need a require.
  banner: { js: "import { createRequire as narpushCreateRequire } from 'node:module';\nconst require = narpushCreateRequire(import.meta.url);" },
  logLevel: 'warning',
};

/** main.ts's imports of './commands.js' and './upload-command.js' stay imports of the files built next to it. */
const commandsOutside = {
  name: 'commands-outside',
  setup(b) {
    b.onResolve({ filter: /^\.\/commands\.js$/ }, () => ({ path: './commands.js', external: true }));
    b.onResolve({ filter: /^\.\/upload-command\.js$/ }, () => ({ path: './upload.js', external: true }));
  },
};

await build({
  ...common,
  entryPoints: { narpush: 'dist/src/cli/main.js', 'early-store': 'dist/src/cli/early-store.js' },
  splitting: true,
  chunkNames: 'chunk-[hash]',
  plugins: [commandsOutside],
});
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
// CommonJS, like bin/narpush-hook that loads it (bin/package.json): a
// process whose first module is an ES module starts Node's ES module loader
// first, ~9 ms of the hook's ~40 (docs/performance.md). Its one import() (the
// store client, when it spools) stays an import() of the ES module.
await build({
  ...common,
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  banner: {},
  entryPoints: { hook: 'dist/src/daemon/hook.js' },
  plugins: [hookRootsOutside],
});
