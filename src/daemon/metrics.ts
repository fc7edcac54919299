/**
 * `--metrics-listen`: the daemon's Prometheus endpoint and health check on
 * one TCP address (node:http).
 *
 *   GET /metrics   Prometheus text format 0.0.4 (prom-client)
 *   GET /healthz   200 "ok" while the daemon can take work; 503 and the
 *                  reason when it cannot (see `health` below)
 *   other paths 404, other methods 405; HEAD is answered like GET.
 *
 * Every value is read from the daemon when scraped (DaemonStats and the
 * queue), never counted here, so `narpush status` and the metrics agree.
 * The registry belongs to this server, not prom-client's global one: one
 * process may run several daemons (the tests do).
 *
 * prom-client is imported only when a server starts: it takes tens of ms to
 * load, which no other command should pay (the bundle keeps it external).
 * It must never be imported statically from a module the CLI loads.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NarpushError } from '../errors.js';
import { type ListenAddress, formatListenAddress } from './listen-address.js';
import { BUILD_LOG_OUTCOMES, type DaemonStats, HOOK_OUTCOMES, HOOK_SOURCES } from './stats.js';

/** Per-path upload time, from small paths in a batch (ms) to large NARs over a slow link (minutes). */
export const UPLOAD_DURATION_BUCKETS: readonly number[] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];

export interface QueueGauges {
  /** Waiting, including those waiting for a retry. */
  readonly queued: number;
  readonly inFlight: number;
  readonly waitingRetry: number;
}

export interface MetricsServerOptions {
  readonly listen: ListenAddress;
  readonly stats: DaemonStats;
  readonly queue: () => QueueGauges;
  /** Undefined while healthy, else why not (one line). */
  readonly health: () => string | undefined;
}

export interface MetricsServer {
  /** The bound address as host:port (the real port when 0 was asked for). */
  readonly address: string;
  /** Stop listening and drop open connections (a scraper's keep-alive must not hold the daemon). */
  close(): Promise<void>;
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const prom = await import('prom-client');
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const { stats } = o;

  // Counters mirror DaemonStats at scrape time: reset, then set to the count.
  const counter = (name: string, help: string, value: () => number): void => {
    new prom.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value());
      },
    });
  };
  const gauge = (name: string, help: string, value: () => number): void => {
    new prom.Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value());
      },
    });
  };
  const s = () => stats.snapshot();
  counter('narpush_paths_uploaded_total', 'Store paths (of queued closures) uploaded to the cache.', () => s().uploaded);
  counter('narpush_paths_skipped_total', 'Store paths (of queued closures) found already in the cache.', () => s().skipped);
  counter('narpush_paths_skipped_upstream_total', 'Store paths (of queued closures) not uploaded because an upstream cache serves them.', () => s().skippedUpstream);
  counter('narpush_paths_failed_total', 'Failed upload attempts of queued paths; each is retried with backoff.', () => s().failures);
  counter('narpush_paths_dropped_total', 'Queued paths given up on because they left the local store.', () => s().dropped);
  counter('narpush_paths_rejected_total', 'Paths refused in hook requests (not valid in the local store, not store paths).', () => s().rejectedPaths);
  counter('narpush_nar_bytes_total', 'Uncompressed NAR bytes uploaded.', () => s().narBytes);
  counter('narpush_file_bytes_total', 'Compressed NAR file bytes uploaded.', () => s().fileBytes);
  counter('narpush_busy_seconds_total', 'Wall time spent uploading batches.', () => s().busySeconds);
  new prom.Counter({
    name: 'narpush_build_logs_total',
    help: 'Build logs of uploaded outputs (--build-logs) by outcome (written; missing: Nix kept none; failed: not uploaded).',
    labelNames: ['outcome'],
    registers,
    collect() {
      this.reset();
      const counts = s().buildLogs;
      for (const outcome of BUILD_LOG_OUTCOMES) this.inc({ outcome }, counts[outcome]);
    },
  });
  new prom.Counter({
    name: 'narpush_hook_requests_total',
    help: 'Hook requests by source (socket, spool) and outcome (ok: queued; rejected: unreadable; error: the journal could not be written).',
    labelNames: ['source', 'outcome'],
    registers,
    collect() {
      this.reset();
      for (const source of HOOK_SOURCES) for (const outcome of HOOK_OUTCOMES) this.inc({ source, outcome }, stats.hookRequests(source, outcome));
    },
  });
  gauge('narpush_queue_paths', 'Queued paths not uploading now, including those waiting for a retry.', () => o.queue().queued);
  gauge('narpush_queue_retry_paths', 'Queued paths waiting for a retry after a failed attempt.', () => o.queue().waitingRetry);
  gauge('narpush_in_flight_paths', 'Queued paths being uploaded now.', () => o.queue().inFlight);
  gauge('narpush_last_success_timestamp_seconds', 'When a path was last uploaded or found in the cache or upstream (Unix time); 0 before the first.', () =>
    (s().lastSuccessAt ?? 0) / 1000,
  );
  gauge('narpush_healthy', '1 while /healthz answers 200, else 0.', () => (o.health() === undefined ? 1 : 0));
  const durations = new prom.Histogram({
    name: 'narpush_upload_duration_seconds',
    help: 'Time to upload one store path (NAR read, compressed, written, narinfo published).',
    buckets: [...UPLOAD_DURATION_BUCKETS],
    registers,
  });
  const unsubscribe = stats.onUpload((seconds) => durations.observe(seconds));

  const server = createServer((req, res) => void answer(req, res));
  // A scraper gets a few seconds and needs one connection; nothing here should take longer or need more.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 32;

  const send = (res: ServerResponse, code: number, type: string, body: string, head: boolean, headers: Record<string, string> = {}): void => {
    res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...headers });
    res.end(head ? undefined : body);
  };
  const text = 'text/plain; charset=utf-8';
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '').split('?')[0];
    const head = req.method === 'HEAD';
    if (path !== '/metrics' && path !== '/healthz') return send(res, 404, text, 'not found: try /metrics or /healthz\n', head);
    if (req.method !== 'GET' && !head) return send(res, 405, text, 'method not allowed\n', false, { Allow: 'GET, HEAD' });
    if (path === '/healthz') {
      const problem = o.health();
      return problem === undefined ? send(res, 200, text, 'ok\n', head) : send(res, 503, text, `unhealthy: ${problem}\n`, head);
    }
    try {
      send(res, 200, registry.contentType, await registry.metrics(), head);
    } catch (e) {
      send(res, 500, text, `cannot collect metrics: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}\n`, head);
    }
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: o.listen.host, port: o.listen.port, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    unsubscribe();
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'EADDRINUSE' ? 'the address is in use'
      : code === 'EADDRNOTAVAIL' ? 'no such address on this machine'
      : code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)'
      : code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? 'the host name does not resolve'
      : (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new NarpushError('METRICS_LISTEN_FAILED', `cannot serve metrics on ${formatListenAddress(o.listen)}: ${why}`, { cause: e });
  }
  const bound = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  return {
    address: formatListenAddress({ host: bound.address, port: bound.port }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        unsubscribe();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
