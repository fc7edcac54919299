/**
 * s3rver in a process of its own, so that a test can freeze it with SIGSTOP
 * (a server that accepts connections and never answers) without freezing
 * itself. Run as a script it starts s3rver (test/helpers/s3rver.ts) and
 * writes one JSON line with where it listens; imported, it offers
 * `startS3rverProcess`. The handle's `stop()` always resumes the process
 * before killing it, so a test that fails while it is frozen leaves nothing
 * stopped behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { startS3rver } from './s3rver.js';

export interface S3rverProcess {
  readonly pid: number;
  readonly endpoint: string;
  readonly bucket: string;
  readonly url: string;
  readonly httpUrl: string;
  /** SIGSTOP: connections are still accepted by the kernel, nothing is ever answered. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  /** Resume and kill it, remove its directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Undefined while it runs; else how it ended and the end of what it wrote on stderr. */
  ended(): string | undefined;
}

interface Ready {
  endpoint: string;
  bucket: string;
  url: string;
  httpUrl: string;
  dir: string;
}

export async function startS3rverProcess(): Promise<S3rverProcess> {
  // Its own process group: no signal meant for the test's group can reach it. Its stderr is
  // kept, so a test that finds it gone can say why.
  const child: ChildProcess = spawn(process.execPath, [fileURLToPath(import.meta.url)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let ready: Ready;
  try {
    ready = await new Promise<Ready>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as Ready);
      });
      child.once('exit', (code) => reject(new Error(`s3rver child exited (${code}) before it was ready`)));
      setTimeout(() => reject(new Error('s3rver child not ready within 30 s')), 30_000).unref();
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    pid: child.pid!,
    endpoint: ready.endpoint,
    bucket: ready.bucket,
    url: ready.url,
    httpUrl: ready.httpUrl,
    ended: () => (alive() ? undefined : `exited with ${child.signalCode ?? `code ${child.exitCode}`}; stderr: ${stderr.trim() || '(nothing)'}`),
    freeze: () => void (alive() && child.kill('SIGSTOP')),
    thaw: () => void (alive() && child.kill('SIGCONT')),
    async stop() {
      if (alive()) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      await exited;
      await rm(ready.dir, { recursive: true, force: true });
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // s3rver's logger (silent here) exits on an uncaught exception without a word: say it first.
  process.on('uncaughtExceptionMonitor', (e) => process.stderr.write(`s3rver child: uncaught ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`));
  process.on('exit', (code) => process.stderr.write(`s3rver child: exit ${code}\n`));
  const s3 = await startS3rver();
  const { endpoint, bucket, url, httpUrl, dir } = s3;
  process.stdout.write(`${JSON.stringify({ endpoint, bucket, url, httpUrl, dir })}\n`);
  process.on('SIGTERM', () => void s3.stop().then(() => process.exit(0)));
}
