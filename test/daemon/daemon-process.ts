/**
 * Running `narpush daemon` as a real child process for the integration
 * tests: start it, wait until it answers, ask its status, wait until its
 * queue is empty, stop it with a signal and get the exit code.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { sendRequest } from '../../src/daemon/client.js';
import type { DaemonStatus } from '../../src/daemon/daemon.js';
import { NARPUSH_BIN } from '../helpers/run.js';

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly socket: string;
  /** Everything it logged so far. */
  log(): string;
  status(): Promise<DaemonStatus>;
  /** Wait until nothing is queued or in flight (and the worker had time to go idle). */
  idle(timeoutMs?: number): Promise<DaemonStatus>;
  /** Send a signal and wait for the exit: the code, or the signal that killed it. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartOptions {
  readonly to: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly args?: readonly string[];
  /** Command prefix (e.g. systemd-socket-activate …); the daemon then starts on first connection. */
  readonly wrapper?: readonly string[];
  /** Do not wait until it answers. */
  readonly noWait?: boolean;
}

// Daemons still running: a test that fails before stopping its daemon must not leave it
// holding the test process open (its pipes keep the event loop alive) until CI times out.
const running = new Set<ChildProcess>();

/** Kill (SIGKILL) every daemon a test left running; for `after` hooks. */
export async function killLeftoverDaemons(): Promise<void> {
  const left = [...running];
  await Promise.all(
    left.map((child) => new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    })),
  );
}

export async function startDaemonProcess(o: StartOptions): Promise<DaemonProcess> {
  const args = [NARPUSH_BIN, 'daemon', '--to', o.to, '--socket', o.socket, '--state-dir', o.stateDir, ...(o.args ?? [])];
  const [cmd, ...pre] = o.wrapper && o.wrapper.length > 0 ? [...o.wrapper, process.execPath] : [process.execPath];
  const child = spawn(cmd!, [...pre, ...args], { env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const status = async (): Promise<DaemonStatus> => {
    const a = await sendRequest(o.socket, { op: 'status' }, { timeoutMs: 15_000 });
    if (a.ok !== true) throw new Error(`status failed: ${JSON.stringify(a)}`);
    return a.status as DaemonStatus;
  };
  const handle: DaemonProcess = {
    child,
    socket: o.socket,
    log: () => output,
    status,
    async idle(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await status();
        if (s.queued === 0 && s.inFlight.length === 0) {
          await new Promise((r) => setTimeout(r, 200)); // let the worker close its store connection (temp roots)
          return s;
        }
        if (Date.now() > deadline) throw new Error(`daemon not idle after ${timeoutMs} ms: ${JSON.stringify(s)}\n${output}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
  };
  if (!o.noWait) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`narpush daemon exited ${child.exitCode}: ${output}`);
      try {
        await status();
        break;
      } catch {
        if (Date.now() > deadline) {
          child.kill('SIGKILL');
          throw new Error(`narpush daemon did not answer within 30 s: ${output}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  return handle;
}
