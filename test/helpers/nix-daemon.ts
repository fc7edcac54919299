/**
 * A real `nix-daemon` for one test, on a private socket in a temp dir
 * (NIX_DAEMON_SOCKET_PATH, which Nix 2.8 honours on both sides). It serves
 * the machine's store; `stop()` sends SIGTERM to its process group (the
 * daemon forks one child per connection, in the same group) and waits for
 * the daemon to exit, so no daemon outlives its test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { nixEnv, requireNix } from './nix.js';

export interface NixDaemon {
  readonly socketPath: string;
  /** Environment for clients of this daemon (nix and narpush): NIX_REMOTE=daemon on our socket. */
  readonly env: NodeJS.ProcessEnv;
  /** What the daemon printed (it logs each connection). */
  output(): string;
  stop(): Promise<void>;
}

function connectable(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // already gone
  }
}

export async function startNixDaemon(): Promise<NixDaemon> {
  await requireNix();
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-daemon-'));
  const socketPath = path.join(dir, 'socket');
  const env = nixEnv({ NIX_DAEMON_SOCKET_PATH: socketPath });
  delete env.NIX_REMOTE;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  const child = spawn('nix-daemon', [], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  const stop = async (): Promise<void> => {
    killGroup(child, 'SIGTERM');
    const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
    await exited(child);
    clearTimeout(timer);
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (!(await connectable(socketPath))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`nix-daemon did not start on ${socketPath}: ${output.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socketPath,
    env: { ...env, NIX_REMOTE: 'daemon' },
    output: () => output,
    stop,
  };
}
