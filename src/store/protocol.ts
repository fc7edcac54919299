/**
 * Constants of the Nix worker protocol (Nix: src/libstore/worker-protocol.hh)
 * and the version arithmetic around them. No I/O.
 *
 * Versions are `major << 8 | minor`; both sides use min(client, daemon).
 * narpush speaks up to 1.38 (the first version with a feature-set exchange,
 * current Nix) and needs at least 1.21 (Nix 2.3, still shipped by Debian 11):
 * everything narpush asks for exists there, and the two later additions it
 * uses have fallbacks (QueryDerivationOutputMap arrived in 1.22, structured
 * errors in 1.26).
 */

export const WORKER_MAGIC_1 = 0x6e697863;
export const WORKER_MAGIC_2 = 0x6478696f;

export function protocolVersion(major: number, minor: number): number {
  return (major << 8) | minor;
}

export function protocolMajor(v: number): number {
  return (v >> 8) & 0xff;
}

export function protocolMinor(v: number): number {
  return v & 0xff;
}

/** `1.34` */
export function formatProtocolVersion(v: number): string {
  return `${protocolMajor(v)}.${protocolMinor(v)}`;
}

/** The newest version narpush speaks. */
export const CLIENT_VERSION = protocolVersion(1, 38);
/** The oldest daemon narpush talks to (Nix 2.3). */
export const MIN_DAEMON_VERSION = protocolVersion(1, 21);

/** Protocol versions at which something narpush depends on changed. */
export const V = {
  /** cpu affinity is sent in the handshake */
  AFFINITY: protocolVersion(1, 14),
  /** reserveSpace is sent in the handshake */
  RESERVE_SPACE: protocolVersion(1, 11),
  /** QueryDerivationOutputMap exists */
  OUTPUT_MAP: protocolVersion(1, 22),
  /** STDERR_ERROR carries a structured error */
  STRUCTURED_ERRORS: protocolVersion(1, 26),
  /** QueryValidPaths takes a "substitute" flag */
  VALID_PATHS_SUBSTITUTE: protocolVersion(1, 27),
  /** the daemon sends its Nix version after the handshake */
  DAEMON_NIX_VERSION: protocolVersion(1, 33),
  /** the daemon says whether it trusts us after the handshake */
  TRUST_FLAG: protocolVersion(1, 35),
  /** both sides exchange feature sets right after the versions */
  FEATURES: protocolVersion(1, 38),
} as const;

/** Operation codes narpush uses (WorkerProto::Op). */
export const Op = {
  IsValidPath: 1,
  AddTempRoot: 11,
  AddIndirectRoot: 12,
  QueryDerivationOutputs: 22,
  QueryPathInfo: 26,
  QueryDerivationOutputNames: 28,
  QueryValidPaths: 31,
  QueryDerivationOutputMap: 41,
} as const;

/** Message kinds the daemon sends while it works on a request. */
export const STDERR_NEXT = 0x6f6c6d67;
export const STDERR_READ = 0x64617461;
export const STDERR_WRITE = 0x64617416;
export const STDERR_LAST = 0x616c7473;
export const STDERR_ERROR = 0x63787470;
export const STDERR_START_ACTIVITY = 0x53545254;
export const STDERR_STOP_ACTIVITY = 0x53544f50;
export const STDERR_RESULT = 0x52534c54;
