/**
 * What main.ts hands every command: the read-only context parsed once at the
 * edge, and the exit codes. Its own file so that commands need not import
 * main.ts, which imports them.
 */
import type { OpenedStream } from '../store/transport.js';

export interface CliContext {
  readonly storeDir: string;
  readonly debug: boolean;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
  /**
   * The Nix daemon's stream that main.ts started to open before the command
   * loaded (for the commands that read the store at once), or undefined: pass
   * it as StoreClient.open's `opening`. The first call takes it.
   */
  readonly storeOpening?: () => Promise<OpenedStream> | undefined;
}

/** Exit codes: 0 success, 1 a failure narpush reports, 2 bad usage, 70 an internal bug (per error code: error-codes.ts). */
export { EXIT_BUG, EXIT_FAILURE, EXIT_USAGE } from '../error-codes.js';
