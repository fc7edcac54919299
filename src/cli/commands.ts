/**
 * Every command's implementation but upload-path's (upload-command.ts),
 * behind one lazy import in main.ts.
 * In bin/narpush's bundle (scripts/bundle.mjs) this is a file of its own,
 * loaded whole when a command runs: one file to read instead of dozens of
 * small chunks, and `--version` or `--help` load none of it.
 */
export { daemon } from './daemon.js';
export { dumpPath } from './dump-path.js';
export { gc } from './gc.js';
export { generateKey } from './generate-key.js';
export { pathInfo } from './path-info.js';
export { status } from './status.js';
export { verify } from './verify.js';
