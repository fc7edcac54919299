// Injected into bin/narpush's CommonJS bundles (scripts/bundle.mjs), where
// `import.meta.url` is replaced by this: the URL of the bundle file itself,
// which the modules use to find what lies beside them (createRequire for the
// native addons and the AWS SDK, the crypto thread's file).
export const narpushImportMetaUrl = require('node:url').pathToFileURL(__filename).href;
