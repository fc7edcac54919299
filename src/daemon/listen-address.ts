/**
 * `--metrics-listen HOST:PORT`: the one TCP address the metrics endpoint
 * binds. Pure, so the CLI checks it before anything starts and without
 * loading the metrics library.
 *
 *   127.0.0.1:9101   an IPv4 address
 *   [::1]:9101       an IPv6 address, in brackets (a bare one is ambiguous)
 *   localhost:9101   a host name, resolved when the server binds
 *
 * Port 0 asks the kernel for a free port; the daemon logs the one it got.
 */
import { isIP } from 'node:net';

export interface ListenAddress {
  /** Without brackets: what `server.listen({ host })` takes. */
  readonly host: string;
  readonly port: number;
}

/** One label of a host name (RFC 1123): letters, digits, inner hyphens. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The address, or an error message (one line, naming what is wrong). */
export function parseListenAddress(s: string): { ok: true; address: ListenAddress } | { ok: false; error: string } {
  const bad = (why: string): { ok: false; error: string } => ({
    ok: false,
    error: `takes HOST:PORT such as 127.0.0.1:9101 or [::1]:9101, not '${s}' (${why})`,
  });
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(s);
  if (!m) {
    if (isIP(s) === 6 || (s.split(':').length > 2 && !s.startsWith('['))) return bad('an IPv6 address goes in brackets');
    return bad(s.includes(':') ? 'the port is missing or not a number' : 'no :PORT');
  }
  const port = Number(m[3]);
  if (port > 65535) return bad('the port is above 65535');
  if (m[1] !== undefined) {
    if (isIP(m[1]) !== 6) return bad('not an IPv6 address inside the brackets');
    return { ok: true, address: { host: m[1], port } };
  }
  const host = m[2]!;
  if (host === '') return bad('no host; use 0.0.0.0 for every IPv4 address');
  if (isIP(host) !== 4 && (/^[\d.]+$/.test(host) || !HOST_NAME.test(host))) return bad('not an IPv4 address or a host name');
  return { ok: true, address: { host, port } };
}

/** `host:port` as a URL authority: IPv6 in brackets. */
export function formatListenAddress(a: ListenAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
