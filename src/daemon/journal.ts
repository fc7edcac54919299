/**
 * The durable half of the queue: an append-only journal of JSON lines in the
 * state directory. A path is acknowledged to a client only after its
 * `queued` record is on disk (fdatasync); `done`, `failed` and `dropped`
 * records follow as work completes. Appends that arrive while a sync is
 * running are committed together (group commit), so 200 hooks at once cost
 * a few syncs, not 200.
 *
 * Replaying the journal gives the paths still to upload. A torn last line
 * (a crash mid-write) and unreadable lines are skipped, never fatal. The
 * journal is compacted (rewritten with only what is pending, atomically by
 * rename) when opened and whenever it grows past a threshold.
 */
import { open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import * as nodePath from 'node:path';
import { fsyncDir } from './fs-util.js';

export type JournalRecord =
  | { readonly op: 'queued'; readonly path: string; readonly at: number }
  | { readonly op: 'done'; readonly path: string }
  | { readonly op: 'failed'; readonly path: string; readonly attempts: number; readonly error: string }
  | { readonly op: 'dropped'; readonly path: string; readonly reason: string };

export interface PendingPath {
  readonly path: string;
  /** When it was first queued (ms since the epoch). */
  readonly queuedAt: number;
  readonly attempts: number;
  readonly lastError?: string;
}

export interface ReplayResult {
  /** Paths queued and not yet done or dropped, in the order they were first queued. */
  readonly pending: Map<string, PendingPath>;
  readonly records: number;
  /** Lines that could not be read (not counting a torn last line). */
  readonly badLines: number;
  /** Whether the file ended in an incomplete line (a write cut short). */
  readonly tornTail: boolean;
}

function isRecord(v: unknown): v is JournalRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  if (typeof r.path !== 'string') return false;
  switch (r.op) {
    case 'queued':
      return typeof r.at === 'number';
    case 'done':
      return true;
    case 'failed':
      return typeof r.attempts === 'number' && typeof r.error === 'string';
    case 'dropped':
      return typeof r.reason === 'string';
    default:
      return false;
  }
}

/** Apply one record to the pending set (in place). */
export function applyRecord(pending: Map<string, PendingPath>, r: JournalRecord): void {
  switch (r.op) {
    case 'queued':
      if (!pending.has(r.path)) pending.set(r.path, { path: r.path, queuedAt: r.at, attempts: 0 });
      return;
    case 'failed': {
      const p = pending.get(r.path);
      if (p) pending.set(r.path, { ...p, attempts: r.attempts, lastError: r.error });
      return;
    }
    case 'done':
    case 'dropped':
      pending.delete(r.path);
  }
}

/** Replay journal text. Pure. */
export function replayJournal(text: string): ReplayResult {
  const pending = new Map<string, PendingPath>();
  const lines = text.split('\n');
  // After the last newline: '' for a clean file, else a line cut short.
  const tail = lines.pop() ?? '';
  let records = 0;
  let badLines = 0;
  for (const line of lines) {
    if (line === '') continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      badLines++;
      continue;
    }
    if (!isRecord(v)) {
      badLines++;
      continue;
    }
    applyRecord(pending, v);
    records++;
  }
  return { pending, records, badLines, tornTail: tail !== '' };
}

/** The records that recreate `pending` exactly. */
export function snapshotRecords(pending: ReadonlyMap<string, PendingPath>): JournalRecord[] {
  const out: JournalRecord[] = [];
  for (const p of pending.values()) {
    out.push({ op: 'queued', path: p.path, at: p.queuedAt });
    if (p.attempts > 0) out.push({ op: 'failed', path: p.path, attempts: p.attempts, error: p.lastError ?? '' });
  }
  return out;
}

function encode(records: readonly JournalRecord[]): string {
  return records.map((r) => `${JSON.stringify(r)}\n`).join('');
}

/**
 * Replace `file` with `text` atomically and durably (temp file, fsync,
 * rename, fsync of the directory) and return a handle positioned at its end,
 * opened before the rename so that it can only ever point at the new file.
 */
async function rewrite(file: string, text: string): Promise<FileHandle> {
  const temp = `${file}.compact`;
  const h = await open(temp, 'w', 0o600);
  try {
    await h.writeFile(text);
    await h.sync();
    await rename(temp, file);
  } catch (e) {
    await h.close();
    await unlink(temp).catch(() => {});
    throw e;
  }
  // The rename has happened: from here on only the new file may be written,
  // even if syncing the directory fails (the old one is unlinked).
  await fsyncDir(nodePath.dirname(file)).catch(() => {});
  return h;
}

/**
 * Write all of `bytes` at `position`. A single write may be short (a disk
 * filling up): the rest is written or the call throws. Positional, so that
 * a file cut back after a failure is never written past its end.
 */
async function writeAt(h: FileHandle, bytes: Buffer, position: number): Promise<void> {
  for (let off = 0; off < bytes.length; ) {
    const { bytesWritten } = await h.write(bytes, off, bytes.length - off, position + off);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    off += bytesWritten;
  }
}

export interface JournalOptions {
  /** Compact when the file grows past this many bytes, default 4 MiB. */
  readonly compactAtBytes?: number;
}

interface Waiter {
  readonly text: string;
  readonly records: readonly JournalRecord[];
  resolve(): void;
  reject(e: unknown): void;
}

export class Journal {
  private waiters: Waiter[] = [];
  private writing: Promise<void> | undefined;
  private closed = false;
  /** The file may hold bytes past `size` from a failed append; repaired before the next one. */
  private torn = false;

  private constructor(
    private readonly file: string,
    private handle: FileHandle,
    private size: number,
    private readonly pendingSet: Map<string, PendingPath>,
    private readonly compactAt: number,
  ) {}

  /** Open (creating) the journal at `file`, replay it and compact it. */
  static async open(file: string, opts: JournalOptions = {}): Promise<{ journal: Journal; replayed: ReplayResult }> {
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const replayed = replayJournal(text);
    const snapshot = encode(snapshotRecords(replayed.pending));
    const handle = await rewrite(file, snapshot);
    const journal = new Journal(file, handle, Buffer.byteLength(snapshot), new Map(replayed.pending), opts.compactAtBytes ?? 4 * 1024 * 1024);
    return { journal, replayed };
  }

  /** What is pending according to everything committed so far. */
  get pending(): ReadonlyMap<string, PendingPath> {
    return this.pendingSet;
  }

  get bytes(): number {
    return this.size;
  }

  /** Append records; resolves once they are on disk. */
  append(records: readonly JournalRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the journal is closed'));
    if (records.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ text: encode(records), records, resolve, reject });
      this.writing ??= this.writeLoop();
    });
  }

  /** Wait for every append, then close the file. Later appends fail. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writing) await this.writing;
    await this.handle.close();
  }

  /** Runs while there are waiters; clears `writing` in the same tick it finds none, so no append is ever stranded. */
  private async writeLoop(): Promise<void> {
    for (;;) {
      if (this.waiters.length === 0) {
        this.writing = undefined;
        return;
      }
      const group = this.waiters.splice(0);
      try {
        await this.repair();
        const bytes = Buffer.from(group.map((w) => w.text).join(''), 'utf8');
        await writeAt(this.handle, bytes, this.size);
        await this.handle.datasync();
        this.size += bytes.length;
        for (const w of group) for (const r of w.records) applyRecord(this.pendingSet, r);
      } catch (e) {
        // Part of the group may be in the file (a short write on a full disk,
        // or written but not synced): nobody was told it is, and it must not
        // stay, or the next record would be glued onto a partial line and
        // lost with it. Cut the file back to its last acknowledged byte.
        this.torn = true;
        await this.repair().catch(() => {});
        for (const w of group) w.reject(e);
        continue;
      }
      for (const w of group) w.resolve();
      if (this.size > this.compactAt) await this.compact().catch(() => {});
    }
  }

  /** After a failed append: cut the file back to what was acknowledged (a truncate needs no free space). */
  private async repair(): Promise<void> {
    if (!this.torn) return;
    await this.handle.truncate(this.size);
    this.torn = false;
  }

  /** Rewrite the file with only what is pending. Runs inside the write loop, so no append interleaves. */
  private async compact(): Promise<void> {
    const snapshot = encode(snapshotRecords(this.pendingSet));
    const fresh = await rewrite(this.file, snapshot);
    const old = this.handle;
    this.handle = fresh;
    this.size = Buffer.byteLength(snapshot);
    await old.close();
  }
}
