/**
 * The worker protocol handshake, as messages and frames (no I/O):
 *
 * ```
 * client: u64 WORKER_MAGIC_1, u64 clientVersion      (sent at once, as current Nix does)
 * daemon: u64 WORKER_MAGIC_2, u64 daemonVersion
 *         version = min(client, daemon)
 * client: [>=1.38 strings features] [>=1.14 u64 0 (cpu affinity)] [>=1.11 u64 0 (reserveSpace)]
 * daemon: [>=1.38 strings features] [>=1.33 string nixVersion] [>=1.35 u64 trusted (0 unknown, 1 yes, 2 no)]
 *         then STDERR_* messages up to STDERR_LAST (startup warnings)
 * ```
 * (Nix: WorkerProto::BasicClientConnection::handshake/postHandshake,
 * RemoteStore::initConnection.)
 */
import { NarpushError } from '../errors.js';
import {
  CLIENT_VERSION,
  MIN_DAEMON_VERSION,
  V,
  WORKER_MAGIC_1,
  WORKER_MAGIC_2,
  formatProtocolVersion,
  protocolMajor,
} from './protocol.js';
import type { Frame } from './wire-reader.js';
import { wire } from './wire.js';

export interface ServerHello {
  /** The first 8 bytes the daemon sent: WORKER_MAGIC_2, or whatever a stranger said. */
  readonly greeting: Buffer;
  readonly daemonVersion: number;
}

export interface HandshakeInfo {
  /** The version both sides speak: min(ours, the daemon's). */
  readonly protocolVersion: number;
  /** The version the daemon offered. */
  readonly daemonProtocolVersion: number;
  /** Features both sides support (protocol >= 1.38). */
  readonly features: readonly string[];
  /** e.g. "2.8.0" (protocol >= 1.33). */
  readonly daemonNixVersion: string | undefined;
  /** Whether the daemon trusts us (protocol >= 1.35). */
  readonly trusted: boolean | undefined;
}

/** Features narpush implements; none of the optional ones so far. */
export const CLIENT_FEATURES: readonly string[] = [];

export function clientHello(version: number = CLIENT_VERSION): Buffer {
  return wire((w) => w.u64(WORKER_MAGIC_1).u64(version));
}

const MAGIC_2 = wire((w) => w.u64(WORKER_MAGIC_2));

export const serverHello: Frame<ServerHello> = (r) => {
  const greeting = Buffer.from(r.raw(8));
  if (!greeting.equals(MAGIC_2)) return { greeting, daemonVersion: 0 };
  return { greeting, daemonVersion: r.u64() };
};

/** Choose the version to speak, or explain why we cannot talk to this daemon. */
export function negotiate(hello: ServerHello, clientVersion: number = CLIENT_VERSION): number {
  if (!hello.greeting.equals(MAGIC_2)) {
    throw new NarpushError(
      'STORE_PROTOCOL_ERROR',
      `the peer is not a Nix daemon (it answered ${JSON.stringify(hello.greeting.toString('latin1'))} ` +
        'instead of the worker protocol greeting)',
    );
  }
  const daemon = hello.daemonVersion;
  if (protocolMajor(daemon) !== protocolMajor(clientVersion)) {
    throw new NarpushError(
      'STORE_VERSION_UNSUPPORTED',
      `the Nix daemon speaks worker protocol ${formatProtocolVersion(daemon)}; narpush speaks ` +
        `${formatProtocolVersion(MIN_DAEMON_VERSION)} to ${formatProtocolVersion(clientVersion)}`,
    );
  }
  if (daemon < MIN_DAEMON_VERSION) {
    throw new NarpushError(
      'STORE_VERSION_TOO_OLD',
      `the Nix daemon speaks worker protocol ${formatProtocolVersion(daemon)}, older than ` +
        `${formatProtocolVersion(MIN_DAEMON_VERSION)} (Nix 2.3), the oldest narpush supports; upgrade Nix`,
    );
  }
  return Math.min(daemon, clientVersion);
}

/** What the client sends once the version is known. */
export function clientSettings(version: number, features: readonly string[] = CLIENT_FEATURES): Buffer {
  return wire((w) => {
    if (version >= V.FEATURES) w.strings(features);
    if (version >= V.AFFINITY) w.u64(0);
    if (version >= V.RESERVE_SPACE) w.u64(0);
  });
}

export type DaemonInfo = Omit<HandshakeInfo, 'protocolVersion' | 'daemonProtocolVersion'>;

/**
 * The daemon's side of the rest of the handshake. Startup messages and
 * STDERR_LAST follow it: read them as an answer with an empty result.
 */
export function daemonInfo(version: number, features: readonly string[] = CLIENT_FEATURES): Frame<DaemonInfo> {
  return (r) => {
    const theirs = version >= V.FEATURES ? r.strings(1024) : [];
    const daemonNixVersion = version >= V.DAEMON_NIX_VERSION ? r.string(1024) : undefined;
    let trusted: boolean | undefined;
    if (version >= V.TRUST_FLAG) {
      const flag = r.u64();
      trusted = flag === 1 ? true : flag === 2 ? false : undefined;
    }
    return { features: theirs.filter((f) => features.includes(f)), daemonNixVersion, trusted };
  };
}
