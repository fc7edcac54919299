/**
 * Benchmark: a daemon under a long stream of hook requests.
 *
 *   npx tsc -p . && node dist/bench/daemon-soak.js [--requests N] [--clients N]
 *
 * Starts a real `narpush daemon` (bin/narpush, file:// cache in a temp dir,
 * a generated key) and sends it N requests (default 10,000) from many
 * clients at once (default 50), each request on its own connection as the
 * hook makes them: mostly enqueues of 1-3 of 1,000 tiny store paths
 * (test/fixtures/store-bench.nix), so most are duplicates, mixed with
 * garbage (bytes that are not JSON, unknown ops, paths outside the store,
 * a line cut off by the client hanging up, a connection closed at once)
 * and status requests. Prints the daemon's VmRSS, OS threads and open file
 * descriptors at 2,000 requests, at the end, once the queue has drained,
 * and after the crypto threads' idle delay. Figures only.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { DEFAULT_THREAD_IDLE_MS } from '../src/cache/threads/thread-pool.js';
import { nix, nixBuildFile, nixEnv } from '../test/helpers/nix.js';
import { narpushCommand, procLine, startBenchDaemon, timeRun } from './lib.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Outcome = 'ok' | 'error-answer' | 'no-answer';

/** One connection: send `bytes`, then read one answer line (unless `hangUp`), and close. */
function exchange(socket: string, bytes: string | Buffer, hangUp: boolean): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path: socket });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within 30 s to ${JSON.stringify(bytes.toString().slice(0, 80))}`));
    }, 30_000);
    const finish = (o: Outcome): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(o);
    };
    s.on('connect', () => {
      if (bytes.length > 0) s.write(bytes);
      if (hangUp) finish('no-answer');
    });
    s.on('data', (b: Buffer) => {
      got += b.toString();
      const nl = got.indexOf('\n');
      if (nl >= 0) finish((JSON.parse(got.slice(0, nl)) as { ok: boolean }).ok ? 'ok' : 'error-answer');
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => finish('no-answer'));
  });
}

/** The i-th request: mostly enqueues of known paths, one in five something else. */
function request(i: number, paths: readonly string[]): { bytes: string | Buffer; hangUp: boolean } {
  const pick = (): string => paths[(i * 7919 + Math.floor(Math.random() * paths.length)) % paths.length]!;
  switch (i % 20) {
    case 3:
      return { bytes: Buffer.concat([randomBytes(200).map((b) => (b === 10 ? 32 : b)), Buffer.from('\n')]), hangUp: false };
    case 7:
      return { bytes: '{"op":"frobnicate"}\n', hangUp: false };
    case 11:
      return { bytes: `${JSON.stringify({ op: 'enqueue', paths: ['/tmp/not-a-store-path', pick()] })}\n`, hangUp: false };
    case 13:
      return { bytes: '{"op":"enqueue","paths":["/nix/sto', hangUp: true };
    case 17:
      return { bytes: '', hangUp: true };
    case 19:
      return { bytes: '{"op":"status"}\n', hangUp: false };
    default: {
      const n = 1 + (i % 3);
      return { bytes: `${JSON.stringify({ op: 'enqueue', paths: Array.from({ length: n }, pick) })}\n`, hangUp: false };
    }
  }
}

async function main(): Promise<void> {
  const total = arg('--requests', 10_000);
  const clients = arg('--clients', 50);
  const [root] = await nixBuildFile('store-bench.nix', undefined, ['--argstr', 'salt', 'narpush-idle-bench-1']);
  const paths = (await nix('nix-store', ['-qR', root!])).toString().trim().split('\n');
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-bench-soak-'));
  try {
    const key = narpushCommand(['generate-key', 'narpush-bench-1', path.join(dir, 'secret.key'), path.join(dir, 'public.key')]);
    timeRun(key.cmd, key.args, { env: key.env });
    const daemon = await startBenchDaemon(dir, ['--secret-key-file', path.join(dir, 'secret.key')], nixEnv());
    try {
      console.log(
        `daemon soak: ${total} requests from ${clients} clients, one connection each, ${paths.length} distinct paths ` +
          `(pid ${daemon.pid}, node ${process.version}, NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'unset'})`,
      );
      console.log(procLine('started', daemon.pid));
      const outcomes: Record<Outcome, number> = { ok: 0, 'error-answer': 0, 'no-answer': 0 };
      const marks = new Set([2_000, total]);
      let sent = 0;
      let answered = 0;
      const t0 = Date.now();
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (sent < total) {
            const r = request(sent++, paths);
            outcomes[await exchange(daemon.socket, r.bytes, r.hangUp)]++;
            answered++;
            if (marks.has(answered)) console.log(procLine(`after ${answered} requests (${((Date.now() - t0) / 1000).toFixed(1)} s)`, daemon.pid));
          }
        }),
      );
      console.log(`  answers: ${outcomes.ok} ok, ${outcomes['error-answer']} errors, ${outcomes['no-answer']} hung up by the client`);
      const s = await daemon.settled(paths.length);
      const drained = Date.now();
      console.log(procLine(`queue drained (${((drained - t0) / 1000).toFixed(1)} s)`, daemon.pid));
      console.log(`  status: uploaded ${s.uploaded}, skipped ${s.skipped}, rejected ${s.rejected}, dropped ${s.dropped}`);
      await sleep(DEFAULT_THREAD_IDLE_MS + 5_000 - (Date.now() - drained));
      console.log(procLine(`idle delay (${DEFAULT_THREAD_IDLE_MS / 1000} s) + 5 s after`, daemon.pid));
    } finally {
      await daemon.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
