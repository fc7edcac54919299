/**
 * The daemon's Unix socket: accepts many clients at once, reads one JSON
 * request per line and writes one answer per request, in order. What a
 * request means is the `handle` function's business; this file only keeps
 * hostile or broken clients from harming anyone else:
 * - a line longer than the cap is answered with an error and the client is
 *   dropped (nothing beyond the cap is ever buffered);
 * - a client that sends no complete request for `idleTimeoutMs` is dropped
 *   (dribbling bytes does not keep it alive), and so is one that does not
 *   read its answers;
 * - a client's requests are handled one at a time, its socket paused
 *   meanwhile, so a flood of lines cannot queue up unbounded work.
 *
 * The socket file gets mode 0660 (only its owner and group may connect) from
 * the moment it exists; a stale file from a dead daemon is replaced, a live
 * daemon's socket or a file that is not a socket is left alone. Under
 * systemd socket activation the inherited listening socket is used instead.
 * The daemon starts the server `paused`: clients that connect while it
 * starts are accepted (the kernel would queue them anyway) and read from
 * once it calls `open()`.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import * as nodePath from 'node:path';
import { NarpushError } from '../errors.js';
import { makeDirs } from './fs-util.js';
import type { DaemonLogger } from './log.js';
import { type ErrorAnswer, LineSplitter, MAX_LINE_BYTES, encodeLine } from './protocol.js';

export interface ServerOptions {
  /** Where to create the socket; ignored when `listenFd` is given. */
  readonly socketPath?: string;
  /** A listening socket inherited from systemd (LISTEN_FDS: fd 3). */
  readonly listenFd?: number;
  /** Default 0o660. */
  readonly socketMode?: number;
  readonly maxLineBytes?: number;
  /** Drop a client that sends no complete request for this long; default 10 s. */
  readonly idleTimeoutMs?: number;
  /** Default 1024; more are refused (the hook then spools). */
  readonly maxConnections?: number;
  /** Answer one request line. A throw is answered as an internal error. */
  readonly handle: (line: string) => Promise<unknown>;
  readonly log: DaemonLogger;
  /**
   * Accept connections but read no request until `open()`: the daemon opens
   * once it has started (journal replayed, worker running, its "listening"
   * line written), so no client is answered by a daemon still starting.
   */
  readonly paused?: boolean;
}

export interface SocketServer {
  /** The socket path, or `fd:3` when inherited. */
  readonly address: string;
  readonly connections: number;
  /** Start reading requests (a server started `paused`); those sent meanwhile are answered now. */
  open(): void;
  /** Stop accepting, let requests being handled finish (bounded), drop idle clients, remove the socket file. */
  close(timeoutMs?: number): Promise<void>;
}

/** Unanswered output a client may leave unread before it is dropped. */
const MAX_UNREAD_ANSWERS = 1024 * 1024;

function connectable(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Make `path` free for a new socket: remove a stale socket, refuse anything else. */
export async function prepareSocketPath(path: string): Promise<void> {
  await makeDirs(nodePath.dirname(path), 0o755);
  let st;
  try {
    st = await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (!st.isSocket()) {
    throw new NarpushError('SOCKET_PATH_IN_USE', `${path} exists and is not a socket; remove it or choose another --socket`);
  }
  if (await connectable(path)) {
    throw new NarpushError('DAEMON_ALREADY_RUNNING', `another process is listening on ${path} (a narpush daemon already running?)`);
  }
  await unlink(path);
}

function listen(server: Server, target: { path: string } | { fd: number }, mode: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    // bind() runs synchronously inside listen(): the umask covers exactly the socket's creation.
    const old = 'path' in target ? process.umask(0o777 & ~mode) : undefined;
    try {
      server.listen(target, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      if (old !== undefined) process.umask(old);
    }
  });
}

export async function startServer(opts: ServerOptions): Promise<SocketServer> {
  const maxLine = opts.maxLineBytes ?? MAX_LINE_BYTES;
  const idleMs = opts.idleTimeoutMs ?? 10_000;
  const mode = opts.socketMode ?? 0o660;
  const live = new Map<Socket, { busy: boolean }>();
  let closing = false;
  // Clients that connected while the server is paused: not read from until open().
  let waiting: Set<Socket> | undefined = opts.paused ? new Set() : undefined;

  const server = createServer({ allowHalfOpen: false, pauseOnConnect: true }, (socket) => {
    const state = { busy: false };
    live.set(socket, state);
    const lines = new LineSplitter(maxLine);
    const pending: string[] = [];
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), idleMs).unref();
    };
    const send = (answer: unknown): void => {
      if (socket.destroyed) return;
      socket.write(encodeLine(answer));
      if (socket.writableLength > MAX_UNREAD_ANSWERS) socket.destroy();
    };
    const pump = async (): Promise<void> => {
      if (state.busy) return;
      state.busy = true;
      clearTimeout(timer);
      socket.pause();
      while (pending.length > 0 && !socket.destroyed) {
        const line = pending.shift()!;
        if (line.trim() === '') continue;
        let answer: unknown;
        try {
          answer = await opts.handle(line);
        } catch (e) {
          answer = { ok: false, code: 'INTERNAL', error: `internal error: ${(e as Error)?.message ?? String(e)}` } satisfies ErrorAnswer;
        }
        send(answer);
      }
      state.busy = false;
      if (socket.destroyed) return;
      if (closing) {
        socket.end();
        return;
      }
      socket.resume();
      arm();
    };
    arm();
    socket.on('data', (chunk: Buffer) => {
      pending.push(...lines.push(chunk));
      if (lines.overflowed) {
        pending.length = 0;
        opts.log({ event: 'rejected', subject: 'a client', detail: `sent a request line longer than ${maxLine} bytes; dropped it` });
        send({ ok: false, code: 'BAD_REQUEST', error: `request line longer than ${maxLine} bytes` } satisfies ErrorAnswer);
        socket.end();
        socket.destroySoon();
        return;
      }
      if (pending.length > 0) void pump();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(timer);
      live.delete(socket);
      waiting?.delete(socket);
    });
    if (waiting) waiting.add(socket);
    else socket.resume();
  });
  server.maxConnections = opts.maxConnections ?? 1024;
  server.on('error', (e) => opts.log({ event: 'warning', detail: `socket server: ${e.message}` }));

  let address: string;
  let ino: number | undefined;
  if (opts.listenFd !== undefined) {
    await listen(server, { fd: opts.listenFd }, mode);
    address = `fd:${opts.listenFd}`;
  } else {
    const path = opts.socketPath;
    if (!path) throw new NarpushError('BAD_OPTION', 'no socket path given');
    await prepareSocketPath(path);
    await listen(server, { path }, mode);
    await chmod(path, mode);
    ino = (await lstat(path)).ino;
    address = path;
  }

  return {
    address,
    get connections() {
      return live.size;
    },
    open() {
      const w = waiting;
      waiting = undefined;
      for (const socket of w ?? []) socket.resume();
    },
    async close(timeoutMs = 5000) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const [socket, state] of live) if (!state.busy) socket.destroy();
      const deadline = setTimeout(() => {
        for (const socket of live.keys()) socket.destroy();
      }, timeoutMs);
      await closed;
      clearTimeout(deadline);
      if (opts.socketPath && ino !== undefined) {
        // Only our own socket: a new daemon may already have replaced it.
        const st = await lstat(opts.socketPath).catch(() => undefined);
        if (st?.ino === ino) await unlink(opts.socketPath).catch(() => {});
      }
    },
  };
}
