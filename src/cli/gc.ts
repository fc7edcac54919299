/**
 * `narpush gc --cache URL --keep-since DURATION`: collect the garbage of a
 * binary cache (src/gc/). Every flag, pin and the cache itself are checked
 * before the first delete: a bad duration, a pin that is not a store path,
 * an unreadable --keep-file, a URL that is not a binary cache (no
 * nix-cache-info) or a missing bucket is a one-line error with nothing
 * deleted. Progress on a terminal (stderr), a summary, or --json on stdout.
 */
import { readFile } from 'node:fs/promises';
import { NarpushError, isErrnoException, printable } from '../errors.js';
import { HASH_PART_LENGTH, parseStorePath, parseStorePathBaseName } from '../store/store-path.js';
import type { GcEvent, GcReport } from '../gc/gc.js';
import { parseCacheUrl } from './cache-url.js';
import type { CliContext } from './context.js';
import { parseDuration } from './duration.js';
import { formatBytes } from './format.js';
import { openCacheBackend } from './open-backend.js';
import { wholeNumber } from './upload-settings.js';

export interface GcFlags {
  readonly cache: string;
  readonly keepSince: string;
  readonly keep: readonly string[];
  readonly keepFile: readonly string[];
  readonly grace?: string;
  readonly dryRun: boolean;
  readonly jobs?: string;
  readonly json: boolean;
}

/** A pin: a store path (`/nix/store/<hash>-name`), its base name, or a narinfo's hash part. */
function pinHash(text: string, storeDir: string, whence: string): string {
  const s = text.trim();
  try {
    if (s.startsWith('/')) return parseStorePath(s.replace(/\/+$/, ''), storeDir).hashPart;
    if (/^[0-9a-z]{32}$/.test(s)) return parseStorePathBaseName(`${s}-x`, storeDir).hashPart;
    return parseStorePathBaseName(s, storeDir).hashPart;
  } catch {
    throw new NarpushError('BAD_OPTION', `${whence}: '${s}' is not a store path in ${storeDir}`);
  }
}

async function readPins(flags: GcFlags, storeDir: string): Promise<Set<string>> {
  const pins = new Set<string>();
  for (const k of flags.keep) pins.add(pinHash(k, storeDir, '--keep'));
  for (const file of flags.keepFile) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new NarpushError('BAD_OPTION', `--keep-file ${file}: ${isErrnoException(e) ? e.code : String(e)}`);
    }
    text.split('\n').forEach((line, n) => {
      if (line.trim() !== '' && !line.trim().startsWith('#')) pins.add(pinHash(line, storeDir, `--keep-file ${file}:${n + 1}`));
    });
  }
  for (const p of pins) if (p.length !== HASH_PART_LENGTH) throw new NarpushError('BAD_OPTION', `bad pin '${p}'`);
  return pins;
}

export async function gc(ctx: CliContext, flags: GcFlags): Promise<number> {
  const keepSinceMs = parseDuration('--keep-since', flags.keepSince);
  const graceMs = flags.grace !== undefined ? parseDuration('--grace', flags.grace) : undefined;
  const jobs = flags.jobs !== undefined ? wholeNumber('--jobs', flags.jobs, 1, 256) : 16;
  const config = parseCacheUrl(flags.cache, { cwd: process.cwd() });
  const pins = await readPins(flags, ctx.storeDir);
  const [{ collectGarbage }, backend] = await Promise.all([import('../gc/gc.js'), openCacheBackend(config)]);
  const tty = Boolean((ctx.stderr as NodeJS.WriteStream).isTTY) && !flags.json;
  let report: GcReport;
  // A signal stops the deletes cleanly, so that the run's marker records its end (see cache/gc-fence.ts).
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new NarpushError('INTERRUPTED', 'interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if ((await backend.get('nix-cache-info')) === undefined) {
      throw new NarpushError('NOT_A_CACHE', `${backend.description} is not a binary cache (it has no nix-cache-info); nothing was deleted`);
    }
    let last = 0;
    const onEvent = (e: GcEvent): void => {
      if (!tty || Date.now() - last < 100) return;
      last = Date.now();
      const line =
        e.type === 'inventory' ? `listed ${e.listed} objects, read ${e.read} narinfos`
        : e.type === 'planned' ? `to delete: ${e.narinfos} narinfos, ${e.others} other objects`
        : `deleted ${e.objects} objects (${formatBytes(e.bytes)})`;
      ctx.stderr.write(`\r\x1b[K${line}`);
    };
    report = await collectGarbage(backend, {
      keepSinceMs,
      ...(graceMs !== undefined && { graceMs }),
      pins,
      dryRun: flags.dryRun,
      jobs,
      onEvent,
      signal: abort.signal,
    });
    if (tty) ctx.stderr.write('\r\x1b[K');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await backend.close();
  }
  if (flags.json) ctx.stdout.write(`${JSON.stringify({ cache: config.description, ...report }, null, 2)}\n`);
  else printSummary(ctx, report);
  if (abort.signal.aborted) return 130;
  return report.failedCount > 0 || report.timedOut ? 1 : 0;
}

function printSummary(ctx: CliContext, r: GcReport): void {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  ctx.stderr.write(
    `${verb} ${r.freed.objects} objects (${formatBytes(r.freed.bytes)}: ${r.narinfos} narinfos, ${r.nars} NARs, ${r.listings} listings, ${r.logs} logs), ` +
      `kept ${r.kept.objects} objects (${formatBytes(r.kept.bytes)}), ` +
      (r.abortedUploads === null
        ? 'incomplete uploads not checked (the server cannot list them)\n'
        : `${r.dryRun ? 'would abort' : 'aborted'} ${r.abortedUploads} incomplete uploads\n`),
  );
  for (const f of r.failures) ctx.stderr.write(`narpush: could not delete ${printable(f.key)}: ${printable(f.message)}\n`);
  if (r.failedCount > r.failures.length) ctx.stderr.write(`narpush: … and ${r.failedCount - r.failures.length} more could not be deleted\n`);
  if (r.timedOut) ctx.stderr.write('narpush: stopped (time limit or signal) before the end; run it again to finish\n');
}
