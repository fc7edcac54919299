/**
 * The worker-protocol requests narpush makes, each as an encoder and a
 * result frame for a given protocol version (Nix: daemon.cc performOp,
 * remote-store.cc). Pure: they describe bytes, the connection moves them.
 * Store paths go out as full paths and come back as raw strings; the client
 * checks them, so a strange answer fails one request, not the connection.
 */
import type { Operation } from './connection.js';
import { type WirePathInfo, wirePathInfo } from './path-info.js';
import { Op, V } from './protocol.js';
import type { Frame } from './wire-reader.js';
import { wire } from './wire.js';

/** QueryPathInfo (26): the path's info, or undefined when it is not valid. */
export function queryPathInfo(path: string): Operation<WirePathInfo | undefined> {
  return {
    name: `QueryPathInfo(${path})`,
    encode: () => wire((w) => w.u64(Op.QueryPathInfo).string(path)),
    // Since 1.17 a flag says whether the path is valid; narpush needs >= 1.21.
    result: () => maybePathInfo,
  };
}

const maybePathInfo: Frame<WirePathInfo | undefined> = (r) => (r.bool() ? wirePathInfo(r) : undefined);

/** QueryValidPaths (31): the subset of `paths` that is valid (never substituting). */
export function queryValidPaths(paths: readonly string[]): Operation<string[]> {
  return {
    name: `QueryValidPaths(${paths.length} paths)`,
    encode: (version) =>
      wire((w) => {
        w.u64(Op.QueryValidPaths).strings(paths);
        if (version >= V.VALID_PATHS_SUBSTITUTE) w.bool(false);
      }),
    result: () => (r) => r.strings(),
  };
}

/** IsValidPath (1). */
export function isValidPath(path: string): Operation<boolean> {
  return {
    name: `IsValidPath(${path})`,
    encode: () => wire((w) => w.u64(Op.IsValidPath).string(path)),
    result: () => (r) => r.bool(),
  };
}

/** AddTempRoot (11): keep `path` from garbage collection while this connection lives. */
export function addTempRoot(path: string): Operation<void> {
  return {
    name: `AddTempRoot(${path})`,
    encode: () => wire((w) => w.u64(Op.AddTempRoot).string(path)),
    result: () => (r) => void r.u64(),
  };
}

/**
 * AddIndirectRoot (12): make the symlink at `linkPath` (absolute; it points
 * into the store) a GC root for as long as it exists. The daemon links it
 * from <state>/gcroots/auto/; any user the daemon lets in may ask.
 */
export function addIndirectRoot(linkPath: string): Operation<void> {
  return {
    name: `AddIndirectRoot(${linkPath})`,
    encode: () => wire((w) => w.u64(Op.AddIndirectRoot).string(linkPath)),
    result: () => (r) => void r.u64(),
  };
}

/** Output name -> output path ('' when not known yet, e.g. floating content-addressed outputs). */
export type WireOutputMap = ReadonlyArray<readonly [name: string, path: string]>;

/** QueryDerivationOutputMap (41, protocol >= 1.22). Fails with "path … is not valid" for an unknown .drv. */
export function queryDerivationOutputMap(drvPath: string): Operation<WireOutputMap> {
  return {
    name: `QueryDerivationOutputMap(${drvPath})`,
    encode: () => wire((w) => w.u64(Op.QueryDerivationOutputMap).string(drvPath)),
    result: () => (r) => {
      const n = r.count(1024 * 1024);
      const out: (readonly [string, string])[] = [];
      for (let i = 0; i < n; i++) out.push([r.string(), r.string()]);
      return out;
    },
  };
}

/** QueryDerivationOutputs (22): the output paths of a .drv, for daemons older than 1.22. */
export function queryDerivationOutputs(drvPath: string): Operation<string[]> {
  return {
    name: `QueryDerivationOutputs(${drvPath})`,
    encode: () => wire((w) => w.u64(Op.QueryDerivationOutputs).string(drvPath)),
    result: () => (r) => r.strings(),
  };
}

/** QueryDerivationOutputNames (28): the output names of a .drv, for daemons older than 1.22. */
export function queryDerivationOutputNames(drvPath: string): Operation<string[]> {
  return {
    name: `QueryDerivationOutputNames(${drvPath})`,
    encode: () => wire((w) => w.u64(Op.QueryDerivationOutputNames).string(drvPath)),
    result: () => (r) => r.strings(),
  };
}
