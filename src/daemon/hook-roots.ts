/**
 * The hook's GC roots for what it spools. When the daemon does not answer,
 * nobody else will protect the spooled paths until the daemon is back, so
 * the hook makes the same links the daemon would (gc-roots.ts) and
 * registers them with the nix-daemon. The daemon adopts them on ingest.
 *
 * Loaded by hook.ts only on the spool path (a dynamic import): the store
 * client costs start-up time a hook that reaches the daemon must not pay.
 * It must never fail a build: every problem becomes the one line it returns.
 * It runs after the spool file is durable (see RootKeeper.reconcile for why
 * that order matters).
 */
import { NarpushError } from '../errors.js';
import { StoreClient } from '../store/client.js';
import { parseStorePath } from '../store/store-path.js';
import { storeTransportFromEnv } from '../store/transport.js';
import { gcRootsDir, makeRootLinks, nixAutoRootsDir, registerIndirectRoots } from './gc-roots.js';

/** What the hook needs of a store; the tests pass a fake. */
export interface HookRootStore {
  /** The built outputs of a .drv. */
  outputs(drv: string): Promise<string[]>;
  register(links: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

/**
 * The nix-daemon named by NIX_REMOTE / NIX_DAEMON_SOCKET_PATH in `env`, as
 * the daemon finds it; except that a hook not running as root (the NixOS
 * module's setpriv wrapper) never starts a `nix-daemon --stdio` of its own:
 * that could not open the store database, so only the socket is tried.
 */
export async function openHookRootStore(
  env: Readonly<Record<string, string | undefined>>,
  storeDir: string,
  uid: number | undefined = process.getuid?.(),
): Promise<HookRootStore> {
  const t = storeTransportFromEnv(env);
  const transport = t.kind === 'auto' && uid !== 0 ? ({ kind: 'socket', path: t.socketPath } as const) : t;
  const client = await StoreClient.open({ transport, storeDir });
  return {
    async outputs(drv) {
      const outs = await client.derivationOutputs(parseStorePath(drv, storeDir));
      return [...outs.values()].flatMap((o) => (o ? [o.path] : []));
    },
    async register(links) {
      // Nix's side synced too (see registerIndirectRoots); a hook says nothing when it cannot be.
      await registerIndirectRoots(client, links, nixAutoRootsDir(env));
    },
    close: () => client.close(),
  };
}

/**
 * Root `targets` (the request's paths, or its .drv) under `stateDir`:
 * links first, then their registration, within `timeoutMs`. Returns
 * undefined when every root is registered, else why not (one line).
 */
export async function rootSpooled(
  stateDir: string,
  storeDir: string,
  targets: readonly string[],
  openStore: () => Promise<HookRootStore>,
  timeoutMs: number,
): Promise<string | undefined> {
  let opening: Promise<HookRootStore> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const work = async (): Promise<void> => {
    const paths: string[] = [];
    for (const t of targets) {
      // Only real store paths: a link named after anything else would point outside the store.
      try {
        paths.push(parseStorePath(t, storeDir).path);
      } catch {
        // the daemon rejects it and says so
      }
    }
    if (paths.length === 0) return;
    opening = openStore();
    const store = await opening;
    for (const p of [...paths]) if (p.endsWith('.drv')) paths.push(...(await store.outputs(p)));
    const links = await makeRootLinks(gcRootsDir(stateDir), paths);
    await store.register(links);
  };
  try {
    await Promise.race([
      work(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new NarpushError('ROOT_TIMEOUT', `the Nix daemon did not answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return undefined;
  } catch (e) {
    return firstLine(e);
  } finally {
    clearTimeout(timer);
    void opening?.then((s) => s.close()).catch(() => {});
  }
}
