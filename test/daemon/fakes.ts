/**
 * Fakes for the daemon's unit tests: store paths that parse, a daemon
 * started on a temp socket and state dir with an injected store and upload
 * function, and a journal that records appends.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nix32Encode } from '../../src/hash/nix32.js';
import type { JournalRecord } from '../../src/daemon/journal.js';
import { startDaemon, type DaemonConfig, type RunningDaemon } from '../../src/daemon/daemon.js';
import type { LogEvent } from '../../src/daemon/log.js';
import type { PathOutcome, UploadBatch } from '../../src/daemon/worker.js';
import type { RootStore } from '../../src/daemon/root-keeper.js';
import type { StorePath } from '../../src/store/store-path.js';

/** A syntactically valid store path that exists nowhere. */
export function fakePath(name = 'pkg'): string {
  return `/nix/store/${nix32Encode(randomBytes(20))}-${name}`;
}

export async function tempDir(prefix = 'narpush-daemon-test-'): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export class RecordingJournal {
  readonly records: JournalRecord[] = [];
  appends = 0;
  /** When set, appends wait for this before resolving. */
  gate: Promise<void> | undefined;
  fail: Error | undefined;

  async append(records: readonly JournalRecord[]): Promise<void> {
    this.appends++;
    if (this.gate) await this.gate;
    if (this.fail) throw this.fail;
    this.records.push(...records);
  }
}

export interface FakeDaemon {
  readonly daemon: RunningDaemon;
  readonly socket: string;
  readonly stateDir: string;
  readonly logs: LogEvent[];
  /** Every path handed to the upload function, in order, once per attempt. */
  readonly uploads: string[];
  /** Paths whose upload succeeded. */
  readonly done: Set<string>;
  stop(): Promise<void>;
}

export interface FakeDaemonOptions {
  readonly dir: string;
  /** Paths the fake store says are valid; default: all. */
  readonly valid?: (p: string) => boolean;
  /** Decide one path's outcome (may wait); default: done at once. */
  readonly outcome?: (p: string, signal: AbortSignal) => Promise<PathOutcome>;
  /** Paths that succeed as "already in the cache" (a skipped event) instead of uploaded. */
  readonly skipped?: (p: string) => boolean;
  readonly config?: Partial<DaemonConfig>;
  /** GC roots (default: none held). */
  readonly roots?: RootStore;
  /** Also told every log event, from the first (`logs` is known only once the daemon has started). */
  readonly onLog?: (e: LogEvent) => void;
}

/** Start the real daemon (real journal, spool, socket) with a fake store and cache. */
export async function startFakeDaemon(opts: FakeDaemonOptions): Promise<FakeDaemon> {
  const socket = path.join(opts.dir, 'sock');
  const stateDir = path.join(opts.dir, 'state');
  const logs: LogEvent[] = [];
  const uploads: string[] = [];
  const done = new Set<string>();
  const upload: UploadBatch = async (paths, ctx) => {
    const out = new Map<string, PathOutcome>();
    await Promise.all(
      paths.map(async (p) => {
        uploads.push(p);
        const o = opts.outcome ? await opts.outcome(p, ctx.signal) : ({ kind: 'done' } as const);
        if (o.kind === 'done') {
          done.add(p);
          if (opts.skipped?.(p)) ctx.onEvent({ type: 'skipped', path: p });
          else ctx.onEvent({ type: 'uploaded', path: p, narSize: 100, fileSize: 50, seconds: 0.01 });
        }
        out.set(p, o);
      }),
    );
    return out;
  };
  const daemon = await startDaemon(
    {
      stateDir,
      storeDir: '/nix/store',
      socketPath: socket,
      cache: 'memory://fake',
      retry: { initialDelayMs: 20, maxDelayMs: 100 },
      spoolPollMs: 50,
      shutdownGraceMs: 200,
      ...opts.config,
    },
    {
      validPaths: async (paths: readonly StorePath[]) => new Set(paths.map((p) => p.path).filter((p) => (opts.valid ? opts.valid(p) : true))),
      upload,
      ...(opts.roots ? { roots: opts.roots } : {}),
      log: (e) => {
        logs.push(e);
        opts.onLog?.(e);
      },
    },
  );
  return { daemon, socket, stateDir, logs, uploads, done, stop: () => daemon.stop() };
}

/** Poll `cond` until it holds (or fail after `ms`). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
