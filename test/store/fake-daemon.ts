/**
 * A scripted stand-in for nix-daemon on a Unix socket in a temp dir, for the
 * cases a real daemon will not produce on demand: old protocol versions,
 * dying mid-answer, unknown messages. Each test scripts the daemon's side
 * with the same wire parsers the client uses.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { DaemonConnection } from '../../src/store/connection.js';
import {
  STDERR_LAST,
  V,
  WORKER_MAGIC_1,
  WORKER_MAGIC_2,
  protocolVersion,
} from '../../src/store/protocol.js';
import { type Frame, NEED_MORE, WireDecoder } from '../../src/store/wire-reader.js';
import { WireWriter, wire } from '../../src/store/wire.js';

export const u64: Frame<number> = (r) => r.u64();
export const string: Frame<string> = (r) => r.string();
export const bytes: Frame<Buffer> = (r) => Buffer.from(r.bytes());
export const strings: Frame<string[]> = (r) => r.strings();

export class Peer {
  private readonly decoder = new WireDecoder();
  private readonly waiters: { frame: Frame<unknown>; resolve(v: unknown): void; reject(e: unknown): void }[] = [];
  private ended = false;

  constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.decoder.push(c);
      this.pump();
    });
    socket.on('end', () => {
      this.ended = true;
      this.pump();
    });
    socket.on('error', () => {});
  }

  read<T>(frame: Frame<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiters.push({ frame, resolve: resolve as (v: unknown) => void, reject });
      this.pump();
    });
  }

  write(build: (w: WireWriter) => unknown): void {
    this.socket.write(wire(build));
  }

  /** The daemon's side of the handshake at `version` (see src/store/handshake.ts). */
  async handshake(
    version: number,
    extra: { features?: string[]; nixVersion?: string; trusted?: 0 | 1 | 2 } = {},
  ): Promise<{ clientVersion: number; clientFeatures: string[] }> {
    const magic = await this.read(u64);
    if (magic !== WORKER_MAGIC_1) throw new Error(`fake daemon: bad magic ${magic}`);
    this.write((w) => w.u64(WORKER_MAGIC_2).u64(version));
    const clientVersion = await this.read(u64);
    const v = Math.min(version, clientVersion);
    let clientFeatures: string[] = [];
    if (v >= V.FEATURES) {
      clientFeatures = await this.read(strings);
      this.write((w) => w.strings(extra.features ?? []));
    }
    if (v >= V.AFFINITY && (await this.read(u64)) !== 0) await this.read(u64);
    if (v >= V.RESERVE_SPACE) await this.read(u64);
    this.write((w) => {
      if (v >= V.DAEMON_NIX_VERSION) w.string(extra.nixVersion ?? '2.99.0-fake');
      if (v >= V.TRUST_FLAG) w.u64(extra.trusted ?? 0);
      w.u64(STDERR_LAST);
    });
    return { clientVersion, clientFeatures };
  }

  private pump(): void {
    try {
      while (this.waiters.length > 0) {
        const v = this.decoder.read(this.waiters[0]!.frame);
        if (v === NEED_MORE) {
          if (this.ended) throw new Error('fake daemon: the client closed the connection');
          return;
        }
        this.waiters.shift()!.resolve(v);
      }
    } catch (e) {
      for (const w of this.waiters.splice(0)) w.reject(e);
    }
  }
}

export interface FakeDaemon {
  readonly socketPath: string;
  /** Errors thrown by the script, for the test to check. */
  readonly errors: unknown[];
  connect(): Promise<DaemonConnection>;
  stop(): Promise<void>;
}

/** Serve `script` to every connection on a fresh socket. */
export async function fakeDaemon(script: (peer: Peer) => Promise<void>): Promise<FakeDaemon> {
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-fake-daemon-'));
  const socketPath = path.join(dir, 'socket');
  const errors: unknown[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    script(new Peer(socket)).catch((e: unknown) => {
      errors.push(e);
      socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    errors,
    connect: () => DaemonConnection.open(createConnection({ path: socketPath })),
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const V1_34 = protocolVersion(1, 34);
