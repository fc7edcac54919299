/**
 * What bin/narpush-hook does, as a function: turn the post-build-hook
 * environment (OUT_PATHS, DRV_PATH) into enqueue requests, hand them to the
 * daemon, and spool them when the daemon does not answer in time. It must
 * never fail a build nor hold it up for long: it never throws (the outcome
 * says what happened), and its imports are node builtins plus the tiny
 * protocol and client modules, so that it starts in milliseconds. Only when
 * it spools does it load the spool module (it needs node:fs/promises, which
 * pulls in ten more of Node's own modules) and the store client
 * (hook-roots.ts), to hold GC roots for the spooled paths; when the daemon
 * answers, the daemon does both.
 */
import type { HookRootStore } from './hook-roots.js';
import { sendRequest } from './client.js';
import { type EnqueueRequest, MAX_PATHS_PER_REQUEST, encodeLine } from './protocol.js';

export const DEFAULT_SOCKET = '/run/narpush/narpush.sock';
export const DEFAULT_STATE_DIR = '/var/lib/narpush';
/** How long the hook waits for the daemon's acknowledgement before spooling. */
export const DEFAULT_ACK_TIMEOUT_MS = 2000;

export interface HookOptions {
  readonly ackTimeoutMs?: number;
  /** The store that registers GC roots for spooled paths; default the nix-daemon NIX_REMOTE names. */
  readonly openRootStore?: () => Promise<HookRootStore>;
  /** How long registering those roots may take; default 2 s. */
  readonly rootTimeoutMs?: number;
}

/** The hook's share of the environment and options, passed down. */
interface HookContext {
  readonly socket: string;
  readonly stateDir: string;
  readonly timeoutMs: number;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly opts: HookOptions;
}

export interface HookOutcome {
  readonly result: 'queued' | 'spooled' | 'nothing' | 'rejected' | 'lost';
  /** One line for the build log, when there is something to say. */
  readonly message?: string;
}

/** The requests for a build: OUT_PATHS in chunks the daemon accepts, with DRV_PATH. */
export function hookRequests(env: Readonly<Record<string, string | undefined>>): EnqueueRequest[] {
  const paths = (env.OUT_PATHS ?? '').split(/\s+/).filter(Boolean);
  const drv = env.DRV_PATH?.trim() || undefined;
  if (paths.length === 0) return drv ? [{ op: 'enqueue', paths: [], drv }] : [];
  const out: EnqueueRequest[] = [];
  for (let i = 0; i < paths.length; i += MAX_PATHS_PER_REQUEST) {
    out.push({ op: 'enqueue', paths: paths.slice(i, i + MAX_PATHS_PER_REQUEST), ...(drv ? { drv } : {}) });
  }
  return out;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

/**
 * GC roots for a spooled request, so the collector keeps its paths until
 * the daemon is back. Undefined when they are registered, else why not.
 * The store client is loaded only here, never on the fast path.
 */
async function rootSpooledRequest(req: EnqueueRequest, ctx: HookContext): Promise<string | undefined> {
  try {
    const { openHookRootStore, rootSpooled } = await import('./hook-roots.js');
    const storeDir = (ctx.env.NIX_STORE_DIR || '/nix/store').replace(/\/+$/, '');
    const targets = req.paths.length > 0 ? req.paths : req.drv ? [req.drv] : [];
    const open = ctx.opts.openRootStore ?? (() => openHookRootStore(ctx.env, storeDir));
    return await rootSpooled(ctx.stateDir, storeDir, targets, open, ctx.opts.rootTimeoutMs ?? 2000);
  } catch (e) {
    return firstLine(e);
  }
}

async function one(req: EnqueueRequest, ctx: HookContext): Promise<HookOutcome> {
  const { socket, stateDir, timeoutMs } = ctx;
  let why: string;
  try {
    const answer = await sendRequest(socket, req, { timeoutMs });
    if (answer.ok === true) {
      const rejected = Array.isArray(answer.rejected) ? (answer.rejected as { path?: unknown; reason?: unknown }[]) : [];
      if (rejected.length === 0) return { result: 'queued' };
      const shown = rejected.slice(0, 3).map((r) => `${String(r.path)} (${String(r.reason)})`).join(', ');
      return { result: 'rejected', message: `the daemon rejected ${rejected.length} path(s): ${shown}` };
    }
    // The daemon understood and refused the request: spooling it would not help.
    if (answer.code === 'BAD_REQUEST') return { result: 'rejected', message: `the daemon refused the request: ${String(answer.error)}` };
    why = `the daemon answered: ${String(answer.error)}`;
  } catch (e) {
    why = firstLine(e);
  }
  let dir = stateDir;
  try {
    const { spoolDir, writeSpoolFile } = await import('./spool.js');
    dir = spoolDir(stateDir);
    await writeSpoolFile(dir, encodeLine(req));
  } catch (e) {
    return { result: 'lost', message: `${why}; and cannot spool to ${dir}: ${firstLine(e)}; these paths will not be uploaded` };
  }
  const rootError = await rootSpooledRequest(req, ctx);
  const spooled = `${why}; spooled the request to ${dir} for the daemon to pick up`;
  if (rootError === undefined) return { result: 'spooled', message: spooled };
  return { result: 'spooled', message: `${spooled}, but the garbage collector may delete its paths first (no GC root: ${rootError})` };
}

/**
 * Run the hook for the environment `env` (OUT_PATHS, DRV_PATH, NARPUSH_SOCKET,
 * NARPUSH_STATE_DIR, and NARPUSH_HOOK_TIMEOUT: seconds to wait for the
 * daemon, default 2, at most 60). Never throws.
 */
export async function runHook(env: Readonly<Record<string, string | undefined>>, opts: HookOptions = {}): Promise<HookOutcome> {
  try {
    const requests = hookRequests(env);
    if (requests.length === 0) return { result: 'nothing', message: 'neither OUT_PATHS nor DRV_PATH is set; nothing to upload' };
    const socket = env.NARPUSH_SOCKET || DEFAULT_SOCKET;
    const stateDir = env.NARPUSH_STATE_DIR || DEFAULT_STATE_DIR;
    const fromEnv = Number(env.NARPUSH_HOOK_TIMEOUT) * 1000;
    const timeoutMs = opts.ackTimeoutMs ?? (fromEnv > 0 && fromEnv <= 60_000 ? fromEnv : DEFAULT_ACK_TIMEOUT_MS);
    const ctx: HookContext = { socket, stateDir, timeoutMs, env, opts };
    const outcomes = await Promise.all(requests.map((r) => one(r, ctx)));
    const worst = outcomes.find((o) => o.result === 'lost') ?? outcomes.find((o) => o.message !== undefined) ?? outcomes[0]!;
    return worst;
  } catch (e) {
    return { result: 'lost', message: firstLine(e) };
  }
}
