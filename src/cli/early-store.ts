/**
 * bin/narpush's first step, before the rest of the CLI loads: for the
 * commands that read the Nix store at once, start opening the daemon's
 * stream (store/early-stream.ts), so that a `nix-daemon --stdio` we have to
 * start (tens of milliseconds until it answers) gets ready while the
 * command's modules load. Its own entry in the bundle, kept small: it runs
 * on every start.
 */
import { type EarlyStream, openStreamEarly } from '../store/early-stream.js';
import { storeTransportFromEnv } from '../store/transport.js';

const EARLY_STORE_COMMANDS = new Set(['upload-path', 'path-info']);

export function startStoreEarly(argv: readonly string[], env: NodeJS.ProcessEnv): EarlyStream | undefined {
  const args = argv.slice(2);
  const command = args.find((a) => !a.startsWith('-'));
  if (!command || !EARLY_STORE_COMMANDS.has(command) || args.includes('--help') || args.includes('-h')) return undefined;
  try {
    return openStreamEarly(storeTransportFromEnv(env));
  } catch {
    // An unusable NIX_REMOTE: the command finds it again and says so in its turn.
    return undefined;
  }
}
