/**
 * Where the Nix daemon is and how to reach it: its Unix socket, or a
 * `nix-daemon --stdio` we start ourselves when no daemon runs (single-user
 * installs). The choice mirrors NIX_REMOTE, but is decided once at the edge:
 * `storeTransportFromEnv` turns an environment into a plain options object
 * and `openStream` only follows it. This module never reads process.env.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { Duplex } from 'node:stream';
import { NarpushError } from '../errors.js';

export interface SpawnTransport {
  readonly kind: 'spawn';
  readonly command: string;
  readonly args: readonly string[];
  /** Environment of the spawned daemon (it reads NIX_STORE_DIR, NIX_CONF_DIR, ...). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export type StoreTransport =
  | { readonly kind: 'socket'; readonly path: string }
  | SpawnTransport
  /** The socket when something listens on it, else the spawned daemon. */
  | { readonly kind: 'auto'; readonly socketPath: string; readonly spawn: SpawnTransport };

export const DEFAULT_STATE_DIR = '/nix/var/nix';

/** Nix's default socket: NIX_DAEMON_SOCKET_PATH, else <NIX_STATE_DIR>/daemon-socket/socket. */
export function daemonSocketPath(env: Readonly<Record<string, string | undefined>>): string {
  if (env.NIX_DAEMON_SOCKET_PATH) return env.NIX_DAEMON_SOCKET_PATH;
  return `${(env.NIX_STATE_DIR || DEFAULT_STATE_DIR).replace(/\/+$/, '')}/daemon-socket/socket`;
}

/**
 * Read NIX_REMOTE as Nix does for the stores narpush can use:
 * `daemon` and `unix://PATH` -> the socket; `local`, `local?…` and `/root`
 * -> a spawned `nix-daemon --stdio` opening that store; unset or `auto` ->
 * the socket when it answers, else the spawned daemon. Anything else
 * (ssh-ng://, s3://, …) is not a local store: STORE_UNSUPPORTED.
 */
export function storeTransportFromEnv(env: Readonly<Record<string, string | undefined>>): StoreTransport {
  const remote = env.NIX_REMOTE ?? '';
  const socketPath = daemonSocketPath(env);
  const stdio = (store?: string): SpawnTransport => ({
    kind: 'spawn',
    command: 'nix-daemon',
    args: store === undefined ? ['--stdio'] : ['--stdio', '--option', 'store', store],
    env,
  });
  if (remote === '' || remote === 'auto') return { kind: 'auto', socketPath, spawn: stdio() };
  if (remote === 'daemon') return { kind: 'socket', path: socketPath };
  if (remote.startsWith('unix://')) {
    const path = remote.slice('unix://'.length).split('?')[0]!;
    return { kind: 'socket', path: path === '' ? socketPath : path };
  }
  if (remote === 'local' || remote.startsWith('local?') || remote.startsWith('/')) return stdio(remote);
  throw new NarpushError(
    'STORE_UNSUPPORTED',
    `NIX_REMOTE='${remote}' is not a local Nix store; narpush reads the store through nix-daemon (daemon, unix://…, local, auto)`,
  );
}

export interface OpenedStream {
  readonly stream: Duplex;
  /** e.g. "the Nix daemon at /nix/var/nix/daemon-socket/socket" */
  readonly description: string;
  /** The last line a spawned daemon wrote on stderr, to explain a failure. */
  closeDetail(): string | undefined;
  /** After the connection is closed: reap the spawned daemon, if any. */
  dispose(): Promise<void>;
}

function connectSocket(path: string, timeoutMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    // A Unix socket connect either completes or fails at once; the timer is for the odd file system (a hung FUSE or NFS path).
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            socket.destroy();
            reject(Object.assign(new Error(`no connection within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' }));
          }, timeoutMs)
        : undefined;
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

function spawnDaemon(t: SpawnTransport): Promise<OpenedStream> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(t.command, [...t.args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: (t.env ?? {}) as NodeJS.ProcessEnv,
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      stderr = (stderr + s).slice(-4096);
    });
    const exited = new Promise<void>((done) => child.once('close', () => done()));
    const what = `${t.command} ${t.args.join(' ')}`;
    child.once('error', (e) =>
      reject(new NarpushError('STORE_UNAVAILABLE', `cannot run '${what}': ${e.message}`, { cause: e })),
    );
    child.once('spawn', () => {
      child.removeAllListeners('error');
      child.on('error', () => {});
      resolve({
        stream: Duplex.from({ readable: child.stdout!, writable: child.stdin! }),
        description: `'${what}'`,
        closeDetail: () => stderr.trim().split('\n').pop() || undefined,
        async dispose() {
          child.stdin!.end();
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exited; // also waits for its stderr to be drained
          clearTimeout(timer);
        },
      });
    });
  });
}

const DAEMON_ABSENT = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTDIR']);

/** Nothing at `path` (or a file where a directory should be): no daemon can listen there. Any other doubt (EACCES) is left to the connect. */
function socketAbsent(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false }) === undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOTDIR';
  }
}

/** Open a byte stream to the daemon `t` describes; a socket connection that takes longer than `connectTimeoutMs` (default 10 s) fails. */
export async function openStream(t: StoreTransport, opts: { connectTimeoutMs?: number } = {}): Promise<OpenedStream> {
  if (t.kind === 'spawn') return spawnDaemon(t);
  const path = t.kind === 'socket' ? t.path : t.socketPath;
  // No socket there: start the daemon now, not after a failed connect's
  // callback, which waits for the event loop (and the CLI loads its code
  // without yielding to it: bin/narpush).
  if (t.kind === 'auto' && socketAbsent(path)) return spawnDaemon(t.spawn);
  try {
    const stream = await connectSocket(path, opts.connectTimeoutMs ?? 10_000);
    return {
      stream,
      description: `the Nix daemon at ${path}`,
      closeDetail: () => undefined,
      dispose: async () => {},
    };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    if (t.kind === 'auto' && DAEMON_ABSENT.has(code)) return spawnDaemon(t.spawn);
    throw new NarpushError(
      'STORE_UNAVAILABLE',
      `cannot connect to the Nix daemon at '${path}': ${(e as Error).message}`,
      { cause: e },
    );
  }
}
