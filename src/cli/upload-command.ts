/**
 * `upload-path` alone, behind its own lazy import in main.ts. In bin/narpush's
 * bundle (scripts/bundle.mjs) it is a file of its own, upload.cjs: the command
 * a post-build step runs most, on the smallest jobs, loads only the code it
 * can use (not the daemon's, gc's or verify's, nor node:http, vm and v8) and
 * Node parses about two thirds of what commands.cjs would cost it.
 */
export { uploadPath } from './upload-path.js';
