/**
 * The store as narpush sees it: typed queries over one or more daemon
 * connections. Requests are pipelined on each connection and spread over
 * the pool (`connections`), so thousands of queries cost little more than
 * the daemon's own lookups. Temporary GC roots are registered on the first
 * connection and last until `close()`.
 *
 * Paths are checked before they are sent: the daemon drops a connection
 * that sends it a malformed path, so that must never happen.
 */
import { NarpushError } from '../errors.js';
import { type ConnectionOptions, DaemonConnection, type Operation } from './connection.js';
import type { DaemonLog } from './daemon-stderr.js';
import * as ops from './operations.js';
import { type PathInfo, pathInfoFromWire } from './path-info.js';
import { V } from './protocol.js';
import { DEFAULT_STORE_DIR, type StorePath, parseStorePath } from './store-path.js';
import { type OpenedStream, type StoreTransport, openStream } from './transport.js';

export interface StoreClientOptions {
  readonly transport: StoreTransport;
  /** The store directory the daemon serves; default /nix/store. */
  readonly storeDir?: string;
  /**
   * Connections to open (each is one nix-daemon process serving us). One
   * pipelined connection is usually enough; see bench/path-info.ts.
   */
  readonly connections?: number;
  readonly onLog?: (event: DaemonLog) => void;
  /** Connecting to the daemon's socket may take this long; default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * A connection owing an answer fails (STORE_TIMEOUT) after this long
   * without a byte from the daemon; default 0, never. The daemon sets one:
   * a hung nix-daemon must become a failed attempt, not a stuck upload.
   */
  readonly idleTimeoutMs?: number;
  /**
   * The first connection's stream, already being opened with the same
   * transport (see early-stream.ts); when it resolves to undefined, the
   * connection is opened as usual.
   */
  readonly opening?: Promise<OpenedStream | undefined>;
}

interface Member {
  readonly conn: DaemonConnection;
  readonly opened: OpenedStream;
}

async function openMember(
  transport: StoreTransport,
  options: ConnectionOptions,
  connectTimeoutMs?: number,
  opening?: Promise<OpenedStream | undefined>,
): Promise<Member> {
  const opened =
    (await opening) ?? (await openStream(transport, { ...(connectTimeoutMs !== undefined && { connectTimeoutMs }) }));
  try {
    const conn = await DaemonConnection.open(opened.stream, { ...options, closeDetail: opened.closeDetail });
    return { conn, opened };
  } catch (e) {
    opened.stream.destroy();
    await opened.dispose();
    // A daemon that died says why on stderr, which is complete only now.
    const detail = opened.closeDetail();
    if (e instanceof NarpushError && e.code === 'STORE_CONNECTION_CLOSED' && detail && !e.message.includes(detail)) {
      throw new NarpushError(e.code, `${e.message}: ${detail}`, { cause: e });
    }
    throw e;
  }
}

/** Parsed store paths kept for reuse: a closure mentions each path many times. */
const PATH_CACHE_LIMIT = 100_000;

export class StoreClient {
  private readonly parsed = new Map<string, StorePath>();

  private constructor(
    private readonly members: readonly Member[],
    readonly storeDir: string,
  ) {}

  static async open(options: StoreClientOptions): Promise<StoreClient> {
    const n = Math.max(1, Math.floor(options.connections ?? 1));
    const results = await Promise.allSettled(
      Array.from({ length: n }, (_, i) =>
        openMember(
          options.transport,
          { onLog: options.onLog, idleTimeoutMs: options.idleTimeoutMs },
          options.connectTimeoutMs,
          i === 0 ? options.opening : undefined,
        ),
      ),
    );
    const members = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(members.map((m) => close(m)));
      throw failed.reason;
    }
    return new StoreClient(members, options.storeDir ?? DEFAULT_STORE_DIR);
  }

  /** The protocol version spoken (the same on every connection). */
  get protocolVersion(): number {
    return this.members[0]!.conn.protocolVersion;
  }

  /** The daemon's Nix version, e.g. "2.8.0" (protocol >= 1.33). */
  get daemonNixVersion(): string | undefined {
    return this.members[0]!.conn.info.daemonNixVersion;
  }

  get connectionCount(): number {
    return this.members.length;
  }

  /** The path's info, or undefined when the path is not valid. */
  queryPathInfo(path: StorePath): Promise<PathInfo | undefined> {
    return this.run(ops.queryPathInfo(this.check(path))).then((w) =>
      w === undefined ? undefined : pathInfoFromWire(path, w, this.parse),
    );
  }

  /** The valid subset of `paths`, in the daemon's (sorted) order. */
  async queryValidPaths(paths: readonly StorePath[]): Promise<StorePath[]> {
    const valid = await this.run(ops.queryValidPaths(paths.map((p) => this.check(p))));
    return valid.map(this.parse);
  }

  async isValidPath(path: StorePath): Promise<boolean> {
    return this.run(ops.isValidPath(this.check(path)));
  }

  /**
   * The outputs of a derivation, by name; undefined for an output whose path
   * is not known yet (a content-addressed derivation not built). Fails with
   * INVALID_PATH when the .drv is not in the store.
   */
  async derivationOutputs(drv: StorePath): Promise<Map<string, StorePath | undefined>> {
    const drvPath = this.check(drv);
    if (!drv.name.endsWith('.drv')) {
      throw new NarpushError('BAD_STORE_PATH', `'${drvPath}' is not a derivation (.drv)`);
    }
    const out = new Map<string, StorePath | undefined>();
    if (this.protocolVersion >= V.OUTPUT_MAP) {
      for (const [name, path] of await this.run(ops.queryDerivationOutputMap(drvPath))) {
        out.set(name, path === '' ? undefined : this.parse(path));
      }
      return out;
    }
    // Old daemons give names and paths separately; an output path's name is
    // the derivation's name, plus "-<output>" for outputs other than "out".
    const [names, paths] = await Promise.all([
      this.run(ops.queryDerivationOutputNames(drvPath)),
      this.run(ops.queryDerivationOutputs(drvPath)),
    ]);
    const parsed = paths.map(this.parse);
    const base = drv.name.slice(0, -'.drv'.length);
    for (const name of names) {
      const wanted = name === 'out' ? base : `${base}-${name}`;
      out.set(name, parsed.find((p) => p.name === wanted));
    }
    return out;
  }

  /** Keep `path` from being garbage-collected until this client is closed. */
  async addTempRoot(path: StorePath): Promise<void> {
    await this.members[0]!.conn.run(ops.addTempRoot(this.check(path)));
  }

  /**
   * Make the symlink `linkPath` a permanent GC root, as `nix-build -o` does:
   * the store path it points to (and its closure) stays until the symlink is
   * deleted. The daemon resolves a relative path against its own working
   * directory and never checks what the link is, so it must be an absolute
   * path with no NUL or newline.
   */
  async addIndirectRoot(linkPath: string): Promise<void> {
    if (!linkPath.startsWith('/') || /[\0\n]/.test(linkPath) || linkPath.length > 4096) {
      throw new NarpushError('BAD_ROOT_PATH', `a GC root must be an absolute path, not '${linkPath.slice(0, 200)}'`);
    }
    await this.run(ops.addIndirectRoot(linkPath));
  }

  /** Finish the requests in flight, close every connection and reap spawned daemons. */
  async close(): Promise<void> {
    await Promise.all(this.members.map((m) => close(m)));
  }

  private run<T>(op: Operation<T>): Promise<T> {
    let best = this.members[0]!;
    for (const m of this.members) if (m.conn.inFlight < best.conn.inFlight) best = m;
    return best.conn.run(op);
  }

  /** parseStorePath with a cache; an arrow so it can be passed around. */
  private readonly parse = (p: string): StorePath => {
    let sp = this.parsed.get(p);
    if (!sp) {
      sp = parseStorePath(p, this.storeDir);
      if (this.parsed.size >= PATH_CACHE_LIMIT) this.parsed.clear();
      this.parsed.set(p, sp);
    }
    return sp;
  };

  private check(path: StorePath): string {
    if (path.storeDir !== this.storeDir) {
      throw new NarpushError('BAD_STORE_PATH', `'${path.path}' is not in the store this client reads (${this.storeDir})`);
    }
    return path.path;
  }
}

async function close(m: Member): Promise<void> {
  await m.conn.close();
  await m.opened.dispose();
}

