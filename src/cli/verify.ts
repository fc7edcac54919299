/**
 * `narpush verify --store URL [--trusted-public-keys KEYS]... [PATH...]`:
 * check a binary cache end to end (cache/verify.ts) and say what is wrong,
 * one line per defect on stdout (or one JSON report with --json), a summary,
 * and progress on stderr when it is a terminal. Exit 0 when all is well,
 * 1 when anything is wrong (or the cache cannot be read), 2 for bad usage.
 *
 * The cache is opened, then only ever seen through a read-only view: this
 * command cannot write to it, whatever the code below does.
 */
import { NarpushError, isNarpushError } from '../errors.js';
import { readOnlyView } from '../cache/backend.js';
import type { VerifyReport } from '../cache/verify.js';
import { type PublicKey, parsePublicKeys } from '../signing/keys.js';
import { type StorePath, followLinksToStorePath } from '../store/store-path.js';
import { parseCacheUrl } from './cache-url.js';
import { type CliContext, EXIT_FAILURE, EXIT_USAGE } from './context.js';
import { formatBytes } from './format.js';
import { openCacheBackend } from './open-backend.js';
import { createVerifyProgress, defectLine } from './verify-progress.js';
import { DEFAULT_JOBS, MAX_JOBS, wholeNumber } from './upload-settings.js';

export interface VerifyFlags {
  /** `--store` (Nix's spelling) or `--cache` (accepted as well); exactly one. */
  readonly store?: string;
  readonly cache?: string;
  /** `--trusted-public-keys` values: whitespace-separated lists, as in Nix's setting. */
  readonly trustedPublicKeys: readonly string[];
  /** `--trusted-public-key` values: one key each. */
  readonly trustedPublicKey: readonly string[];
  readonly jobs?: string;
  readonly json: boolean;
}

interface Settings {
  readonly url: string;
  readonly keys: readonly PublicKey[];
  readonly jobs: number;
  readonly paths?: readonly StorePath[];
}

async function settings(ctx: CliContext, paths: readonly string[], flags: VerifyFlags): Promise<Settings> {
  if (flags.store !== undefined && flags.cache !== undefined) {
    throw new NarpushError('BAD_OPTION', 'give the cache once: --store URL (or its alias --cache URL), not both');
  }
  const url = flags.store ?? flags.cache;
  if (url === undefined) throw new NarpushError('BAD_OPTION', "required option '--store <url>' not specified");
  const keys = [...flags.trustedPublicKeys, ...flags.trustedPublicKey].flatMap((k) => parsePublicKeys(k));
  const jobs = flags.jobs !== undefined ? wholeNumber('--jobs', flags.jobs, 1, MAX_JOBS) : DEFAULT_JOBS;
  const storePaths: StorePath[] = [];
  for (const p of paths) {
    const { storePath, subpath } = await followLinksToStorePath(p, ctx.storeDir);
    if (subpath !== '') throw new NarpushError('BAD_STORE_PATH', `'${p}' is inside the store path '${storePath.path}'; give the store path itself`);
    storePaths.push(storePath);
  }
  return { url, keys, jobs, ...(paths.length > 0 && { paths: storePaths }) };
}

export async function verify(ctx: CliContext, paths: readonly string[], flags: VerifyFlags): Promise<number> {
  let s: Settings;
  let config;
  try {
    s = await settings(ctx, paths, flags);
    config = parseCacheUrl(s.url, { cwd: process.cwd() });
  } catch (e) {
    if (!isNarpushError(e)) throw e;
    ctx.stderr.write(`narpush: error: ${e.message}\n`);
    return EXIT_USAGE;
  }
  const [backend, { verifyCache }] = await Promise.all([openCacheBackend(config), import('../cache/verify.js')]);
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new NarpushError('INTERRUPTED', 'interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const progress = createVerifyProgress(ctx.stdout, ctx.stderr, flags.json);
  let report: VerifyReport;
  try {
    report = await verifyCache({
      cache: readOnlyView(backend),
      trustedKeys: s.keys,
      ...(s.paths !== undefined && { paths: s.paths }),
      jobs: s.jobs,
      signal: abort.signal,
      onEvent: progress,
    });
  } catch (e) {
    if (!abort.signal.aborted) throw e;
    progress.done();
    ctx.stderr.write('narpush: interrupted\n');
    return 130;
  } finally {
    progress.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await backend.close();
  }

  if (flags.json) {
    ctx.stdout.write(`${JSON.stringify(jsonReport(config.description, s, report), null, 2)}\n`);
  } else {
    // Path defects were printed as each path finished; the cache's own come last.
    for (const d of report.defects) if (d.path === '') ctx.stdout.write(defectLine(d));
    for (const u of report.unchecked) ctx.stdout.write(`${u.path}: ${u.reason}\n`);
    ctx.stdout.write(`${summary(report, s.keys.length > 0)}\n`);
  }
  return report.defects.length === 0 ? 0 : EXIT_FAILURE;
}

function summary(r: VerifyReport, signatures: boolean): string {
  const paths = new Set(r.defects.map((d) => d.path)).size;
  const bytes = `${formatBytes(r.narBytes)} of NARs, ${formatBytes(r.fileBytes)} stored`;
  const result =
    r.defects.length === 0 ? 'no defects' : `${r.defects.length} defect${r.defects.length === 1 ? '' : 's'} in ${paths} path${paths === 1 ? '' : 's'}`;
  const unchecked = r.unchecked.length > 0 ? `, ${r.unchecked.length} NARs not decompressed` : '';
  return `checked ${r.checked} path${r.checked === 1 ? '' : 's'} (${bytes}${signatures ? '' : ', signatures not checked'}): ${result}${unchecked}`;
}

function jsonReport(cache: string, s: Settings, r: VerifyReport): Record<string, unknown> {
  return {
    cache,
    ok: r.defects.length === 0,
    checked: r.checked,
    signaturesChecked: s.keys.length > 0,
    narBytes: r.narBytes,
    fileBytes: r.fileBytes,
    defects: r.defects.map((d) => ({ path: d.path, key: d.key, kind: d.kind, message: d.message })),
    unchecked: r.unchecked,
  };
}
