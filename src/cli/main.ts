/**
 * The `narpush` command line: parses flags and the environment once, then
 * hands a read-only context to the command. This is the edge where errors
 * become one line on stderr and an exit code; nothing below it prints or exits.
 * Command modules are imported lazily so that startup stays fast.
 */
import { Command, CommanderError } from 'commander';
import { isNarpushError, printable } from '../errors.js';
import type { EarlyStream } from '../store/early-stream.js';
import { DEFAULT_STORE_DIR } from '../store/store-path.js';
import { ERROR_CODES } from '../error-codes.js';
import { type CliContext, EXIT_BUG, EXIT_USAGE } from './context.js';
import { startStoreEarly } from './early-store.js';


function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `--upstream URL` shares its name with `--no-upstream` (false), which wins whatever the order. */
function collectUpstream(value: string, previous: string[] | false): string[] | false {
  return previous === false ? false : [...previous, value];
}

/** The upstream flags of upload-path and daemon (see README, "Upstream filtering"). */
function upstreamOptions(command: Command): Command {
  return command
    .option('--upstream-key <name>', 'paths signed by this key (name, or name:base64 public key) are not uploaded (repeatable; default cache.nixos.org-1)', collect, [])
    .option('--upstream <url>', 'paths this cache (https://, http://, file://, s3://) serves with the same NarHash are not uploaded (repeatable)', collectUpstream, [])
    .option('--no-upstream-keys', 'trust no signing key, not even the default cache.nixos.org-1: only --upstream caches keep paths from being uploaded')
    .option('--no-upstream', 'upload every path of the closure, whatever an upstream serves (as nix copy does)');
}

function upstreamFlags(opts: Record<string, unknown>): { upstreamKey: string[]; upstream: string[]; noUpstream: boolean; noUpstreamKeys: boolean } {
  return {
    upstreamKey: opts.upstreamKey as string[],
    upstream: opts.upstream === false ? [] : (opts.upstream as string[]),
    noUpstream: opts.upstream === false,
    noUpstreamKeys: opts.upstreamKeys === false,
  };
}

function version(): string {
  return '0.1.0';
}

/**
 * Run the command line `argv` (node's, program name included). `early`:
 * the store stream bin/narpush started opening before loading this (see
 * early-store.ts); by default it is started here.
 */
export async function main(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  early: EarlyStream | undefined = startStoreEarly(argv, env),
): Promise<number> {
  const debug = argv.includes('--debug') || env.NARPUSH_DEBUG === '1';
  try {
    return await run(argv, env, debug, early);
  } finally {
    await early?.release();
  }
}

async function run(argv: string[], env: NodeJS.ProcessEnv, debugFlag: boolean, early: EarlyStream | undefined): Promise<number> {
  let debug = debugFlag;
  const ctx = (): CliContext => ({
    storeDir: (env.NIX_STORE_DIR ?? DEFAULT_STORE_DIR).replace(/\/+$/, ''),
    debug,
    stdout: process.stdout,
    stderr: process.stderr,
    env,
    ...(early && { storeOpening: () => early.take() }),
  });
  let exitCode = 0;
  const program = new Command('narpush')
    .description('Push Nix store paths into a binary cache (S3 or file://), natively.')
    .version(version(), '-V, --version')
    .option('--debug', 'show stack traces and internal detail on errors')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('dump-path')
    .description('write the NAR serialisation of a store path to stdout, like nix-store --dump')
    .argument('<path>', 'a store path, or a symlink to one such as ./result')
    .action(async (path: string) => {
      const { dumpPath } = await import('./commands.js');
      exitCode = await dumpPath(ctx(), path);
    });

  program
    .command('generate-key')
    .description('create an Ed25519 signing key pair, like nix-store --generate-binary-cache-key')
    .argument('<name>', 'the key name, e.g. cache.example.org-1')
    .argument('<secret-key-file>', 'where to write the secret key (mode 0600, never overwritten)')
    .argument('<public-key-file>', 'where to write the public key')
    .action(async (name: string, secretFile: string, publicFile: string) => {
      const { generateKey } = await import('./commands.js');
      exitCode = await generateKey(ctx(), name, secretFile, publicFile);
    });

  program
    .command('path-info')
    .description('print what the Nix store knows of paths, like nix path-info')
    .argument('<paths...>', 'store paths, or symlinks to them such as ./result')
    .option('--json', 'print JSON, as nix path-info --json does')
    .option('-r, --recursive', 'include the closure of the paths')
    .action(async (paths: string[], opts: { json?: boolean; recursive?: boolean }) => {
      const { pathInfo } = await import('./commands.js');
      exitCode = await pathInfo(ctx(), paths, { json: Boolean(opts.json), recursive: Boolean(opts.recursive) });
    });

  upstreamOptions(program
    .command('upload-path')
    .description('upload store paths and their closure to a binary cache (S3 or file://)')
    .argument('<paths...>', 'store paths, or symlinks to them such as ./result')
    .requiredOption('--to <url>', 'the cache: file:///dir or s3://bucket?region=...&endpoint=...&profile=...')
    .option('--secret-key-file <file>', 'sign narinfos with this Nix secret key (repeatable)', collect, [])
    .option('--compression <method>', 'xz (default), zstd or none')
    .option('--compression-level <n>', 'xz: 0-9 (default 6); zstd: 1-22 (default 3)')
    .option('-j, --jobs <n>', 'large NARs uploaded in parallel (default 4; small ones up to 8x as many)')
    .option('--no-closure', 'upload only the paths given, not their closure')
    .option('--force', 'upload paths even when the cache has them')
    .option('--dry-run', 'show what would be uploaded, upload nothing')
    .option('--json', 'print a machine-readable report on stdout')
    .option('--build-logs', "also upload the build logs of uploaded paths built here, for 'nix log' (log/<drv>)")
    .option('--narinfo-refresh-age <duration>', 'renew a narinfo this upload relies on once it is this old, for narpush gc (default 1d)'))
    .action(async (paths: string[], opts: Record<string, unknown>) => {
      const { uploadPath } = await import('./upload-command.js');
      exitCode = await uploadPath(ctx(), paths, {
        to: opts.to as string,
        secretKeyFile: opts.secretKeyFile as string[],
        compression: opts.compression as string | undefined,
        compressionLevel: opts.compressionLevel as string | undefined,
        jobs: opts.jobs as string | undefined,
        closure: opts.closure !== false,
        force: Boolean(opts.force),
        dryRun: Boolean(opts.dryRun),
        json: Boolean(opts.json),
        ...upstreamFlags(opts),
        buildLogs: Boolean(opts.buildLogs),
        narinfoRefreshAge: opts.narinfoRefreshAge as string | undefined,
      });
    });

  upstreamOptions(program
    .command('daemon')
    .description('run the upload daemon that bin/narpush-hook hands built paths to')
    .requiredOption('--to <url>', 'the cache: file:///dir or s3://bucket?region=...&endpoint=...&profile=...')
    .option('--secret-key-file <file>', 'sign narinfos with this Nix secret key (repeatable)', collect, [])
    .option('--socket <path>', 'the Unix socket to listen on (default $NARPUSH_SOCKET, else /run/narpush/narpush.sock)')
    .option('--state-dir <dir>', 'queue journal and hook spool (default $NARPUSH_STATE_DIR, else /var/lib/narpush)')
    .option('-j, --jobs <n>', 'large NARs uploaded in parallel (default 4; small ones up to 8x as many)')
    .option('--compression <method>', 'xz (default), zstd or none')
    .option('--compression-level <n>', 'xz: 0-9 (default 6); zstd: 1-22 (default 3)')
    .option('--shutdown-grace <seconds>', 'on SIGTERM, how long uploads in flight may finish before they are aborted (default 10)')
    .option('--retry-delay <seconds>', 'wait after a failed upload before the first retry, doubling each time (default 5)')
    .option('--retry-max-delay <seconds>', 'the longest wait between retries (default 600)')
    .option('--store-timeout <seconds>', 'give up on the Nix daemon when it sends nothing for this long while an answer is owed (default 120)')
    .option('--narinfo-refresh-age <duration>', 'renew a narinfo an upload relies on once it is this old, for narpush gc (default 1d)')
    .option('--metrics-listen <host:port>', 'serve Prometheus /metrics and /healthz over HTTP here, e.g. 127.0.0.1:9101 or [::1]:9101 (default: off)')
    .option('--build-logs', "also upload the build logs of the derivations it uploads outputs of, for 'nix log' (log/<drv>)"))
    .action(async (opts: Record<string, unknown>) => {
      const { daemon } = await import('./commands.js');
      exitCode = await daemon(ctx(), {
        to: opts.to as string,
        secretKeyFile: opts.secretKeyFile as string[],
        socket: opts.socket as string | undefined,
        stateDir: opts.stateDir as string | undefined,
        jobs: opts.jobs as string | undefined,
        compression: opts.compression as string | undefined,
        compressionLevel: opts.compressionLevel as string | undefined,
        shutdownGrace: opts.shutdownGrace as string | undefined,
        retryDelay: opts.retryDelay as string | undefined,
        retryMaxDelay: opts.retryMaxDelay as string | undefined,
        storeTimeout: opts.storeTimeout as string | undefined,
        metricsListen: opts.metricsListen as string | undefined,
        ...upstreamFlags(opts),
        buildLogs: Boolean(opts.buildLogs),
        narinfoRefreshAge: opts.narinfoRefreshAge as string | undefined,
      });
    });

  program
    .command('verify')
    .description('check a binary cache: narinfos, signatures, NARs (sizes, hashes, contents) and references; changes nothing')
    .argument('[paths...]', 'check only these store paths (default: every narinfo in the cache)')
    .option('--store <url>', 'the cache, as in nix store verify --store: file:///dir or s3://bucket?region=...&endpoint=...')
    .option('--cache <url>', 'the same as --store')
    .option('--trusted-public-keys <keys>', 'require a signature by one of these keys (space-separated, as Nix\'s setting; repeatable)', collect, [])
    .option('--trusted-public-key <key>', 'require a signature by this key, or another one given (repeatable)', collect, [])
    .option('-j, --jobs <n>', 'paths checked in parallel, each streaming its NAR (default 4)')
    .option('--json', 'print a machine-readable report on stdout')
    .action(async (paths: string[], opts: Record<string, unknown>) => {
      const { verify } = await import('./commands.js');
      exitCode = await verify(ctx(), paths, {
        store: opts.store as string | undefined,
        cache: opts.cache as string | undefined,
        trustedPublicKeys: opts.trustedPublicKeys as string[],
        trustedPublicKey: opts.trustedPublicKey as string[],
        jobs: opts.jobs as string | undefined,
        json: Boolean(opts.json),
      });
    });

  program
    .command('gc')
    .description('delete what no recent or pinned path needs from a binary cache, safely beside running uploads')
    .requiredOption('--cache <url>', 'the cache: file:///dir or s3://bucket?region=...&endpoint=...&profile=...')
    .requiredOption('--keep-since <duration>', 'keep every path uploaded or relied on within this long, and its closure (e.g. 30d, 12h)')
    .option('--keep <path>', 'also keep this store path and its closure (repeatable)', collect, [])
    .option('--keep-file <file>', 'also keep the store paths listed in this file, one per line (repeatable)', collect, [])
    .option('--grace <duration>', 'never delete an object younger than this, nor abort an upload started since (default 1h)')
    .option('--dry-run', 'show what would be deleted, delete nothing')
    .option('-j, --jobs <n>', 'requests at once (default 16)')
    .option('--json', 'print a machine-readable report on stdout')
    .action(async (opts: Record<string, unknown>) => {
      const { gc } = await import('./commands.js');
      exitCode = await gc(ctx(), {
        cache: opts.cache as string,
        keepSince: opts.keepSince as string,
        keep: opts.keep as string[],
        keepFile: opts.keepFile as string[],
        grace: opts.grace as string | undefined,
        dryRun: Boolean(opts.dryRun),
        jobs: opts.jobs as string | undefined,
        json: Boolean(opts.json),
      });
    });

  program
    .command('status')
    .description('show what the running daemon is doing: queue, uploads, failures, throughput')
    .option('--socket <path>', 'the daemon\'s socket (default $NARPUSH_SOCKET, else /run/narpush/narpush.sock)')
    .option('--json', 'print JSON')
    .action(async (opts: { socket?: string; json?: boolean }) => {
      const { status } = await import('./commands.js');
      exitCode = await status(ctx(), { socket: opts.socket, json: Boolean(opts.json) });
    });

  try {
    await program.parseAsync(argv);
    debug = debug || Boolean(program.opts().debug);
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has already printed its message; --help and --version exit 0.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    return reportError(e, debug);
  }
}

/** Print an error as one line (plus a stack with --debug) and choose the exit code. */
export function reportError(e: unknown, debug: boolean): number {
  if (isNarpushError(e)) {
    process.stderr.write(`narpush: error: ${e.message}\n`);
    if (debug) process.stderr.write(`${e.stack ?? ''}\n`);
    return ERROR_CODES[e.code].exit;
  }
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`narpush: internal error: ${printable(message.split('\n')[0]!)} (run with --debug for details)\n`);
  if (debug && e instanceof Error) process.stderr.write(`${e.stack ?? ''}\n`);
  return EXIT_BUG;
}
