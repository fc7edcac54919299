/**
 * A long-lived, lazily (re)opened connection to the Nix store for the
 * daemon. The connection is opened on first use and kept; when it breaks
 * (the Nix daemon restarted, a spawned `nix-daemon --stdio` died) it is
 * dropped and the next use opens a new one. `reset()` closes it on purpose:
 * temporary GC roots live as long as the connection, so the worker resets
 * its handle when idle instead of pinning every uploaded path forever.
 */
import { type ErrorCode, isNarpushError } from '../errors.js';
import type { StoreClient } from '../store/client.js';

const CONNECTION_CODES = new Set<ErrorCode>(['STORE_CONNECTION_CLOSED', 'STORE_PROTOCOL_ERROR', 'STORE_UNAVAILABLE', 'STORE_TIMEOUT']);

/** Whether `e` means the connection is unusable (as opposed to an answer such as "path not valid"). */
export function isConnectionError(e: unknown): boolean {
  return !isNarpushError(e) || CONNECTION_CODES.has(e.code);
}

export class StoreHandle {
  private client: Promise<StoreClient> | undefined;

  constructor(private readonly openClient: () => Promise<StoreClient>) {}

  /** The open client, opening one if needed. */
  get(): Promise<StoreClient> {
    if (!this.client) {
      const opening = this.openClient();
      this.client = opening;
      opening.catch(() => {
        if (this.client === opening) this.client = undefined;
      });
    }
    return this.client;
  }

  /**
   * Run `fn` on the client. On a connection error the client is dropped; with
   * `retry` (for idempotent queries) `fn` runs once more on a fresh one.
   */
  async use<T>(fn: (store: StoreClient) => Promise<T>, opts: { retry?: boolean } = {}): Promise<T> {
    const client = this.get();
    try {
      return await fn(await client);
    } catch (e) {
      if (!isConnectionError(e)) throw e;
      await this.discard(client);
      if (!opts.retry) throw e;
      return fn(await this.get());
    }
  }

  /** Drop `client` if it is still the current one (it broke). */
  async discard(client: Promise<StoreClient>): Promise<void> {
    if (this.client !== client) return;
    this.client = undefined;
    await client.then((c) => c.close(), () => {}).catch(() => {});
  }

  /** Close the current connection, if any; the next use opens a new one. */
  async reset(): Promise<void> {
    const client = this.client;
    if (client) await this.discard(client);
  }

  async close(): Promise<void> {
    await this.reset();
  }
}
