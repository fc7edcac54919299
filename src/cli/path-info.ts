/**
 * `narpush path-info [--json] [-r] PATH...`: what the Nix store knows of
 * paths, printed exactly as `nix path-info` of Nix 2.8 prints it. It reads
 * the store through the worker protocol (src/store), never by running nix.
 *
 * Edge module: reads the environment to find the daemon, writes stdout.
 * Differences from Nix 2.8, on purpose: an invalid path is an error (exit 1)
 * with --json too, where Nix prints `"valid":false` and exits 0.
 */
import { expandDerivations, queryPathInfos } from '../store/arguments.js';
import { StoreClient } from '../store/client.js';
import { fetchClosure, sortByReferences } from '../store/closure.js';
import { type PathInfo, formatNixPathInfoJson } from '../store/path-info.js';
import { type StorePath, followLinksToStorePath } from '../store/store-path.js';
import { storeTransportFromEnv } from '../store/transport.js';
import type { CliContext } from './context.js';

export async function pathInfo(
  ctx: CliContext,
  paths: string[],
  opts: { json: boolean; recursive: boolean },
): Promise<number> {
  const args: StorePath[] = [];
  for (const p of paths) args.push((await followLinksToStorePath(p, ctx.storeDir)).storePath);

  const client = await StoreClient.open({
    transport: storeTransportFromEnv(ctx.env),
    storeDir: ctx.storeDir,
    ...(ctx.storeOpening && { opening: ctx.storeOpening() }),
    onLog: (e) => {
      if (e.kind === 'message') ctx.stderr.write(e.text.endsWith('\n') ? e.text : `${e.text}\n`);
    },
  });
  try {
    const roots = await expandDerivations(client, args);
    const infos = opts.recursive ? await fetchClosure(client, roots) : await queryPathInfos(client, roots);
    // Nix 2.8 prints JSON sorted by path without a final newline; plain
    // output in dependency order (Store::topoSortPaths, reversed).
    ctx.stdout.write(
      opts.json ? formatNixPathInfoJson(infos) : sortByReferences(infos).map((i) => `${i.path.path}\n`).join(''),
    );
  } finally {
    await client.close();
  }
  return 0;
}
