// bin/narpush loads one bundled file instead of ~50 modules: Node's ES module
// loader costs ~1 ms per module, and the CLI's start-up comes before every
// upload (1,000 small paths: ~7% of the time, measured in paired runs).
// tsc still compiles every module to dist/src (tests and the hook use those);
// this bundles dist/src/cli/main.js and the crypto thread it starts into
// dist/bundle, next to each other as thread-pool.ts expects. Native
// addons, the AWS SDK and prom-client (only `daemon --metrics-listen` needs
// it) stay outside: they are loaded when first used.
import { build } from 'esbuild';

await build({
  entryPoints: { narpush: 'dist/src/cli/main.js', 'crypto-thread': 'dist/src/cache/threads/crypto-thread.js' },
  outdir: 'dist/bundle',
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['zstd-napi', 'lzma-native', '@aws-sdk/*', '@smithy/*', 'prom-client'],
  // commander is CommonJS: its require() calls of Node builtins need a require.
  banner: { js: "import { createRequire as narpushCreateRequire } from 'node:module';\nconst require = narpushCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
