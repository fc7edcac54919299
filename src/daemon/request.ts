/**
 * Checking what a client sent, on the daemon's side. Anything that reaches
 * the queue went through `parseRequest`: a line that is not one well-formed
 * request is answered with an error, and every path is a strictly parsed
 * store path of this store (no `..`, no subpath, no other prefix, no NUL).
 * Pure: whether a path is valid in the store is asked elsewhere.
 */
import { isNarpushError } from '../errors.js';
import { type StorePath, parseStorePath } from '../store/store-path.js';
import { MAX_PATHS_PER_REQUEST, MAX_PATH_CHARS, type RejectedPath } from './protocol.js';

export type ParsedRequest =
  | {
      readonly op: 'enqueue';
      /** What to upload: OUT_PATHS, or the .drv (its outputs) when OUT_PATHS is empty. Unique. */
      readonly targets: readonly StorePath[];
      /** Paths that are not store paths, with the reason. */
      readonly rejected: readonly RejectedPath[];
      readonly drv?: StorePath;
    }
  | { readonly op: 'status' };

export type ParseResult = { readonly ok: true; readonly request: ParsedRequest } | { readonly ok: false; readonly error: string };

const ENQUEUE_KEYS = new Set(['op', 'paths', 'drv']);

function fail(error: string): ParseResult {
  return { ok: false, error };
}

/** Printable and short, for messages about hostile input. */
export function quote(s: string): string {
  const shown = s.length > 120 ? `${s.slice(0, 120)}…` : s;
  return JSON.stringify(shown);
}

function checkPath(s: string, storeDir: string): StorePath | string {
  if (s.length > MAX_PATH_CHARS) return `longer than ${MAX_PATH_CHARS} characters`;
  try {
    return parseStorePath(s, storeDir);
  } catch (e) {
    if (isNarpushError(e)) return `not a store path of ${storeDir}`;
    throw e;
  }
}

/** Parse one request line. Never throws. */
export function parseRequest(line: string, storeDir: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return fail('the request is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('the request is not a JSON object');
  const obj = value as Record<string, unknown>;
  if (obj.op === 'status') {
    if (Object.keys(obj).length !== 1) return fail("a status request has no fields besides 'op'");
    return { ok: true, request: { op: 'status' } };
  }
  if (obj.op !== 'enqueue') return fail(`unknown op ${typeof obj.op === 'string' ? quote(obj.op) : String(obj.op)}`);
  for (const k of Object.keys(obj)) if (!ENQUEUE_KEYS.has(k)) return fail(`unknown field ${quote(k)} in an enqueue request`);

  const paths = obj.paths ?? [];
  if (!Array.isArray(paths)) return fail("'paths' is not a list");
  if (paths.length > MAX_PATHS_PER_REQUEST) return fail(`'paths' has ${paths.length} entries; the limit is ${MAX_PATHS_PER_REQUEST}`);
  if (!paths.every((p): p is string => typeof p === 'string')) return fail("'paths' holds something other than strings");

  let drv: StorePath | undefined;
  const rejected: RejectedPath[] = [];
  if (obj.drv !== undefined && obj.drv !== '') {
    if (typeof obj.drv !== 'string') return fail("'drv' is not a string");
    const d = checkPath(obj.drv, storeDir);
    if (typeof d === 'string') rejected.push({ path: obj.drv.slice(0, 300), reason: d });
    else if (!d.name.endsWith('.drv')) rejected.push({ path: d.path, reason: 'not a derivation (.drv)' });
    else drv = d;
  }

  const seen = new Set<string>();
  const targets: StorePath[] = [];
  for (const s of paths) {
    const p = checkPath(s, storeDir);
    if (typeof p === 'string') {
      rejected.push({ path: s.slice(0, 300), reason: p });
      continue;
    }
    if (!seen.has(p.path)) {
      seen.add(p.path);
      targets.push(p);
    }
  }
  // Nix 2.8.0 passes an empty OUT_PATHS: the derivation's outputs are meant.
  if (paths.length === 0 && drv) targets.push(drv);
  if (paths.length === 0 && !drv && rejected.length === 0) return fail("an enqueue request needs 'paths' or 'drv'");
  return { ok: true, request: { op: 'enqueue', targets, rejected, ...(drv ? { drv } : {}) } };
}
