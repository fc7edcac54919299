/**
 * Picking up what the hook spooled (spool.ts) when the daemon did not
 * answer: each file read, parsed and queued through the intake, one pass at
 * a time (a pass asked for meanwhile runs after it). A spool file is deleted
 * only after its paths are in the journal; one that cannot be used is kept
 * as `<name>.rejected`, never deleted; when the queue cannot be written the
 * pass stops and the file waits for the next one. Never rejects.
 */
import type { EnqueueRequest, Intake } from './intake.js';
import { type DaemonLogger, errorLine } from './log.js';
import { MAX_LINE_BYTES } from './protocol.js';
import { parseRequest } from './request.js';
import { listSpool, markSpoolFileRejected, readSpoolFile, removeSpoolFile, removeStaleTempFiles } from './spool.js';
import type { DaemonStats } from './stats.js';

/** Temporary files older than this were left by a hook that died mid-write. */
const STALE_TEMP_MS = 10 * 60_000;

export interface SpoolIngestDeps {
  readonly dir: string;
  readonly storeDir: string;
  readonly intake: Intake;
  readonly stats: DaemonStats;
  readonly log: DaemonLogger;
}

/** The requests in the spool's files that parse as enqueue requests (unreadable ones left out); reads only. */
export async function spooledRequests(dir: string, storeDir: string): Promise<EnqueueRequest[]> {
  const out: EnqueueRequest[] = [];
  for (const name of await listSpool(dir)) {
    const line = await readSpoolFile(dir, name, MAX_LINE_BYTES + 1).catch(() => '');
    const parsed = parseRequest(line.replace(/\n$/, ''), storeDir);
    if (parsed.ok && parsed.request.op === 'enqueue') out.push(parsed.request);
  }
  return out;
}

export class SpoolIngester {
  private ingesting: Promise<void> = Promise.resolve();

  constructor(private readonly deps: SpoolIngestDeps) {}

  /** Ingest the spool now, after any pass under way. */
  ingest(): Promise<void> {
    this.ingesting = this.ingesting.then(() => this.once()).catch((e: unknown) => this.deps.log({ event: 'warning', detail: `spool: ${errorLine(e)}` }));
    return this.ingesting;
  }

  /** Resolves once the passes asked for so far are over. */
  settled(): Promise<void> {
    return this.ingesting;
  }

  private async once(): Promise<void> {
    const { dir, stats, log } = this.deps;
    await removeStaleTempFiles(dir, STALE_TEMP_MS).catch(() => 0);
    for (const name of await listSpool(dir)) {
      const request = await this.read(name);
      if (!request) continue;
      try {
        await this.deps.intake.enqueue(request, 'the spool');
        stats.hookRequest('spool', 'ok');
      } catch (e) {
        stats.hookRequest('spool', 'error');
        log({ event: 'warning', detail: `cannot queue spool file ${name} (${errorLine(e)}); will try again` });
        return;
      }
      await removeSpoolFile(dir, name).catch(() => {});
    }
  }

  /** The file's request; undefined when it is gone, or unusable (then kept as `.rejected`). */
  private async read(name: string): Promise<EnqueueRequest | undefined> {
    const { dir, stats, log } = this.deps;
    let line: string;
    try {
      line = (await readSpoolFile(dir, name, MAX_LINE_BYTES + 1)).replace(/\n$/, '');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      stats.hookRequest('spool', 'rejected');
      log({ event: 'rejected', subject: name, detail: `unreadable spool file (${errorLine(e)}); kept as ${name}.rejected` });
      await markSpoolFileRejected(dir, name).catch(() => {});
      return undefined;
    }
    const parsed = parseRequest(line, this.deps.storeDir);
    if (!parsed.ok || parsed.request.op !== 'enqueue') {
      stats.hookRequest('spool', 'rejected');
      log({ event: 'rejected', subject: name, detail: `${parsed.ok ? 'not an enqueue request' : parsed.error}; kept as ${name}.rejected` });
      await markSpoolFileRejected(dir, name).catch(() => {});
      return undefined;
    }
    return parsed.request;
  }
}
