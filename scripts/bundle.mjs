// bin/narpush loads a bundle instead of ~50 modules: Node's ES module loader
// costs ~1 ms per module, and the CLI's start-up comes before every upload.
// The bundle is split (esbuild's `splitting`) at the lazy imports of the
// command modules: an ES module's static imports are all loaded before it
// runs, so one file would make `--version` load every Node builtin any
// command uses (child_process, net, worker_threads, zlib...); split, each
// command loads the chunks it needs and the shared ones once.
// tsc still compiles every module to dist/src (tests and the hook use those);
// this bundles dist/src/cli/main.js and the crypto thread it starts into
// dist/bundle, next to each other as thread-pool.ts expects. Native
// addons, the AWS SDK and prom-client (only `daemon --metrics-listen` needs
// it) stay outside: they are loaded when first used.
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
// early-store.js runs first (bin/narpush); sharing chunks with narpush.js, its
// modules (errors.ts and its classes) are the same instances, not copies.
await build({
  ...common,
  entryPoints: { narpush: 'dist/src/cli/main.js', 'early-store': 'dist/src/cli/early-store.js' },
  splitting: true,
  chunkNames: 'chunk-[hash]',
});
// The crypto thread is built alone: it shares modules with the commands, and
// built together every combination of users would become a chunk of its own.
await build({ ...common, entryPoints: { 'crypto-thread': 'dist/src/cache/threads/crypto-thread.js' } });
