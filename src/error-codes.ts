/**
 * Every error code narpush reports: the closed set a NarpushError's `code`
 * is one of, and the daemon's answers use. For each, what it means, whether
 * the daemon tries a path again later when its upload fails so, and the exit
 * code of a command that fails with it. The README's table of codes is
 * checked against this one (test/architecture/error-codes.test.ts).
 *
 * A leaf: imports nothing. Adding a code means adding it here, with its
 * meaning; a code is never reused for another meaning.
 */

/** The CLI's exit codes: 1 a failure narpush reports, 2 bad usage, 70 a bug in narpush. */
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_BUG = 70;

export interface ErrorCodeInfo {
  /** What went wrong, in a few words (the README's table). */
  readonly meaning: string;
  /**
   * For the daemon: a path whose upload fails with this code is tried again
   * later (with backoff). False: the path is dropped or refused, or the
   * code is not one a path's upload fails with.
   */
  readonly retried: boolean;
  /** The exit code of a command that fails with it. */
  readonly exit: typeof EXIT_FAILURE | typeof EXIT_USAGE | typeof EXIT_BUG;
}

const usage = (meaning: string): ErrorCodeInfo => ({ meaning, retried: false, exit: EXIT_USAGE });
const failure = (meaning: string, retried: boolean): ErrorCodeInfo => ({ meaning, retried, exit: EXIT_FAILURE });
const bug = (meaning: string): ErrorCodeInfo => ({ meaning, retried: false, exit: EXIT_BUG });

export const ERROR_CODES = {
  // What the user typed or configured.
  BAD_USAGE: usage('arguments that contradict each other'),
  BAD_OPTION: usage('a flag or setting with an invalid value'),
  BAD_CACHE_URL: usage('a cache URL narpush cannot use (scheme, parameter, value)'),
  BAD_COMPRESSION: usage('an unknown compression method or level'),
  BAD_KEY_NAME: usage('a signing key name Nix would not accept'),
  BAD_STORE_PATH: failure('a path that is not a store path (or is inside one)', false),
  FILE_EXISTS: failure('a file that generate-key refuses to overwrite', false),
  KEY_FILE_NOT_FOUND: failure('a key file that does not exist', false),
  KEY_FILE_UNREADABLE: failure('a key file that cannot be read', false),
  KEY_FILE_UNWRITABLE: failure('a key file that cannot be created', false),
  BAD_KEY: failure('a key file that does not hold a Nix Ed25519 key', false),
  SOCKET_PATH_IN_USE: failure('the daemon socket path exists and is not a socket', false),
  STATE_DIR_UNUSABLE: failure('the state directory cannot be written (permissions, full disk)', false),
  DAEMON_ALREADY_RUNNING: failure('another daemon uses the state directory', false),
  METRICS_LISTEN_FAILED: failure('the metrics address cannot be listened on', false),
  // The Nix store and its daemon.
  STORE_UNSUPPORTED: failure('NIX_REMOTE names a store that is not local', true),
  STORE_UNAVAILABLE: failure('the Nix daemon cannot be reached or started', true),
  STORE_CONNECTION_CLOSED: failure('the Nix daemon closed the connection', true),
  STORE_TIMEOUT: failure('the Nix daemon sent nothing for too long', true),
  STORE_PROTOCOL_ERROR: failure('the Nix daemon sent something the protocol does not allow', true),
  STORE_VERSION_TOO_OLD: failure('the Nix daemon speaks a protocol older than narpush supports', true),
  STORE_VERSION_UNSUPPORTED: failure('the Nix daemon speaks a newer major protocol version', true),
  STORE_ERROR: failure('the Nix daemon reported an error', true),
  STORE_CYCLE: failure('the references of store paths form a cycle', false),
  INVALID_PATH: failure('the path is not valid in the Nix store (never built, or deleted)', false),
  BAD_ROOT_PATH: bug('a GC root path that is not absolute'),
  BAD_WIRE_VALUE: bug('a value the worker protocol cannot carry'),
  // Reading a path and making its NAR.
  PATH_NOT_FOUND: failure('a file of the path disappeared while it was read', true),
  PATH_UNREADABLE: failure('a file of the path cannot be read', true),
  FILE_CHANGED: failure('a file of the path changed while it was read', true),
  UNSUPPORTED_FILE_TYPE: failure('the path holds a file type a NAR cannot (socket, device, FIFO)', true),
  NAR_HASH_MISMATCH: failure('the NAR does not have the hash the store records (the path was modified)', true),
  HASH_FAILED: failure('a worker thread hashing or signing stopped', true),
  NAR_JOB_FAILED: failure('a worker thread making a NAR stopped', true),
  WRITE_FAILED: failure('the NAR cannot be written to stdout', false),
  // The cache.
  BAD_CACHE: failure('the cache has a nix-cache-info without StoreDir', false),
  WRONG_STORE_DIR: failure('the cache is for another store directory', false),
  BAD_CACHE_KEY: bug('an object key outside the cache layout'),
  CACHE_NOT_FOUND: failure('the file:// cache directory does not exist', false),
  CACHE_IO: failure('the file:// cache cannot be read or written', true),
  CACHE_OBJECT_TOO_LARGE: failure('a metadata object in the cache is implausibly large', false),
  BAD_CONTENT_ENCODING: failure("a metadata object in an S3 cache has a Content-Encoding narpush cannot undo, or is not valid in it", false),
  S3_NO_CREDENTIALS: failure('no AWS credentials were found', true),
  S3_BAD_CREDENTIALS: failure('the S3 server does not know the access key, or the signature is wrong', true),
  S3_ACCESS_DENIED: failure('the credentials may not do this in the bucket', true),
  S3_NO_SUCH_BUCKET: failure('the bucket does not exist', true),
  S3_WRONG_REGION: failure('the bucket is in another region', true),
  S3_UNAVAILABLE: failure('the S3 server cannot be reached, or keeps failing, after retries', true),
  S3_ERROR: failure('the S3 server refused a request', true),
  BUILD_LOG_UNREADABLE: failure("a derivation's build log cannot be read or decompressed (the path itself is uploaded)", false),
  UPSTREAM_FAILED: failure('an upstream cache could not be asked; the path is uploaded instead', false),
  UPLOAD_FAILED: failure('uploading the path failed (the message says why)', true),
  UPLOAD_ABORTED: failure('the upload was stopped (signal, shutdown)', true),
  REFERENCE_MISSING: failure('a reference of the path is not in the cache, so its narinfo is held back', true),
  GC_CONFLICT: failure('a garbage collection of the cache overlapped the upload: its narinfos were held back (see src/gc/README.md)', true),
  INTERRUPTED: failure('interrupted by SIGINT or SIGTERM', false),
  // narpush gc.
  NOT_A_CACHE: failure('the location has no nix-cache-info: not a binary cache, nothing deleted', false),
  GC_UNSUPPORTED: failure('the backend cannot delete objects', false),
  INCOMPLETE_UNSUPPORTED: failure('the S3 server cannot list multipart uploads (gc says so and goes on)', false),
  INVENTORY_BAD_NARINFO: failure('a narinfo without StorePath or URL: gc deleted nothing', false),
  GC_REFERENCE_CYCLE: failure('narinfos whose references form a cycle: gc deleted nothing', false),
  // Formats read from elsewhere.
  BAD_NAR: failure('a NAR that is not valid', false),
  BAD_NARINFO: failure('a narinfo that is not valid', false),
  BAD_FINGERPRINT: failure('a narinfo whose fields cannot be signed', false),
  BAD_CONTENT_ADDRESS: failure('a content address (CA field) that is not valid', false),
  BAD_HASH: failure('a hash that is not valid', false),
  BAD_NIX32: failure('a nix32 string that is not valid', false),
  BAD_NAR_EVENT: bug('NAR events in an order a NAR cannot have'),
  BAD_NAR_USE: bug('NAR contents read out of turn'),
  // The narpush daemon, from a client (hook, status) and in its answers.
  DAEMON_NOT_RUNNING: failure('no narpush daemon listens on the socket', false),
  DAEMON_TIMEOUT: failure('the narpush daemon did not answer in time', false),
  DAEMON_UNREACHABLE: failure('the narpush daemon could not be asked (connection failed, oversized answer)', false),
  DAEMON_ERROR: failure('the narpush daemon answered with an error', false),
  BAD_REQUEST: failure('the daemon refused a request (malformed, or paths that are not store paths)', false),
  QUEUE_UNAVAILABLE: failure('the daemon cannot write its queue', false),
  ROOT_TIMEOUT: failure('the Nix daemon did not register a GC root in time', false),
  INTERNAL: bug('a bug in narpush'),
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === 'string' && Object.hasOwn(ERROR_CODES, s);
}
