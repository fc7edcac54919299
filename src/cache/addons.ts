/**
 * The native addons narpush compresses with, loaded on first use (a command
 * that does not compress never loads them) through require(): both are
 * CommonJS packages, and Node's ES module loader, asked for them by
 * import(), first parses their source to find the exports. For zstd-napi
 * that parse costs the main thread more than the whole require(), once per
 * process, before the first byte of every zstd upload.
 */
import { createRequire } from 'node:module';
import type LzmaNative from 'lzma-native';
import type * as ZstdNapi from 'zstd-napi';
import type ZstdBinding from 'zstd-napi/binding.js';

const load = createRequire(import.meta.url);

/** zstd-napi's stream and one-shot API. */
export function zstdNapi(): typeof ZstdNapi {
  return load('zstd-napi') as typeof ZstdNapi;
}

/** zstd-napi's raw binding: contexts driven by direct calls (see compression.ts). */
export function zstdBinding(): typeof ZstdBinding {
  return load('zstd-napi/binding.js') as typeof ZstdBinding;
}

export function lzmaNative(): typeof LzmaNative {
  return load('lzma-native') as typeof LzmaNative;
}
