/**
 * An unreliable network in front of a loopback S3 server, for the tests.
 * Each request draws from a seeded random generator and is either forwarded
 * or meets one fault:
 * - `slowDown`: 503 SlowDown with S3's XML error body (a share of them with
 *   Retry-After, see `retryAfterShare`), without reaching the server;
 * - `internalError`: 500 InternalError, without reaching the server;
 * - `resetBefore`: the connection is reset (RST) before anything is forwarded;
 * - `resetAfter`: the request is forwarded and takes effect, then the
 *   connection is reset partway through the response (after the headers and
 *   half the body, or at once when the body is empty): the client never
 *   learns that it succeeded;
 * - `delay`: forwarded after `delayMs` (slowness);
 * - `hang`: nothing of the request is read and nothing is ever answered
 *   (a frozen server): only the client's timeout ends it.
 * `down()` stops listening so connections are refused; `up()` listens again
 * on the same port. Counters record what was done. Loopback only.
 */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FaultRates {
  readonly slowDown: number;
  readonly internalError: number;
  readonly resetBefore: number;
  readonly resetAfter: number;
  readonly delay: number;
  readonly hang: number;
}

export interface FaultProxyOptions {
  /** Port of the real server on 127.0.0.1. */
  readonly targetPort: number;
  readonly seed: number;
  readonly rates?: Partial<FaultRates>;
  /** Share of SlowDown answers that carry Retry-After, default 0.5. */
  readonly retryAfterShare?: number;
  /** Value of Retry-After (seconds; the SDK also accepts decimals such as "0.02"), default "1". */
  readonly retryAfter?: string;
  readonly delayMs?: number;
  /** Only requests this accepts ("POST /bucket/key?uploadId=…") can meet a fault; default all. */
  readonly only?: (requestLine: string) => boolean;
  /**
   * Faults met once each, before any drawn at random: the first request
   * whose line an entry matches meets its fault, and the entry is used up
   * (a race seen once in a hundred runs, made to happen every time).
   */
  readonly once?: readonly { readonly match: (requestLine: string) => boolean; readonly fault: keyof FaultRates }[];
}

export interface FaultCounts {
  requests: number;
  forwarded: number;
  slowDown: number;
  slowDownWithRetryAfter: number;
  internalError: number;
  resetBefore: number;
  resetAfter: number;
  delay: number;
  hang: number;
}

export interface FaultProxy {
  readonly port: number;
  readonly endpoint: string;
  readonly counts: FaultCounts;
  /** Each fault with the request it hit ("resetAfter PUT /bucket/key?partNumber=2&uploadId=…"). */
  readonly log: string[];
  /** Every request's line and headers, in order. */
  readonly requests: { readonly line: string; readonly headers: http.IncomingHttpHeaders }[];
  /** Answer every request with this S3 error until called with undefined (e.g. 403 AccessDenied). */
  answerAll(error: { status: number; code: string } | undefined): void;
  /** Change the fault rates from now on. */
  setRates(rates: Partial<FaultRates>): void;
  /** Stop listening and drop open connections: new connections are refused. */
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

/** mulberry32: small, fast, good enough to make fault sequences reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NO_FAULTS: FaultRates = { slowDown: 0, internalError: 0, resetBefore: 0, resetAfter: 0, delay: 0, hang: 0 };

function s3Xml(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>fault-proxy</RequestId></Error>`;
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const random = seededRandom(opts.seed);
  let rates: FaultRates = { ...NO_FAULTS, ...opts.rates };
  const counts: FaultCounts = {
    requests: 0, forwarded: 0, slowDown: 0, slowDownWithRetryAfter: 0, internalError: 0, resetBefore: 0, resetAfter: 0, delay: 0, hang: 0,
  };
  const log: string[] = [];
  const once = [...(opts.once ?? [])];
  const upstream = new http.Agent({ keepAlive: true });
  const sockets = new Set<Socket>();

  const choose = (): keyof FaultRates | 'forward' => {
    let r = random();
    for (const k of ['slowDown', 'internalError', 'resetBefore', 'resetAfter', 'delay', 'hang'] as const) {
      if (r < rates[k]) return k;
      r -= rates[k];
    }
    return 'forward';
  };

  const reset = (req: http.IncomingMessage): void => {
    const s = req.socket;
    if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
    else s.destroy();
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, cutResponse: boolean): void => {
    const headers = { ...req.headers };
    delete headers.expect; // the client already got its 100 Continue from us
    const up = http.request(
      { host: '127.0.0.1', port: opts.targetPort, method: req.method, path: req.url, headers, agent: upstream },
      (upRes) => {
        if (!cutResponse) {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        upRes.on('data', (c: Buffer) => chunks.push(c));
        upRes.on('end', () => {
          const body = Buffer.concat(chunks);
          if (body.length < 2) return reset(req);
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          res.write(body.subarray(0, body.length >> 1), () => reset(req));
        });
      },
    );
    up.on('error', () => reset(req));
    req.pipe(up);
  };

  let fixed: { status: number; code: string } | undefined;
  const requests: { line: string; headers: http.IncomingHttpHeaders }[] = [];
  const server = http.createServer((req, res) => {
    counts.requests++;
    requests.push({ line: `${req.method} ${req.url}`, headers: req.headers });
    if (fixed) {
      const { status, code } = fixed;
      req.resume();
      req.on('end', () => {
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(req.method === 'HEAD' ? undefined : s3Xml(code, `injected ${code}`));
      });
      return;
    }
    const line = `${req.method} ${req.url}`;
    const planned = once.findIndex((o) => o.match(line));
    const fault = planned >= 0 ? once.splice(planned, 1)[0]!.fault : opts.only && !opts.only(line) ? 'forward' : choose();
    if (fault !== 'forward') log.push(`${fault} ${line}`);
    switch (fault) {
      case 'resetBefore':
        counts.resetBefore++;
        return reset(req);
      case 'slowDown':
      case 'internalError': {
        // Read the request first, as a server that answers after the upload would.
        req.resume();
        req.on('end', () => {
          const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/xml' };
          let status = 500;
          let body = s3Xml('InternalError', 'We encountered an internal error. Please try again.');
          if (fault === 'slowDown') {
            counts.slowDown++;
            status = 503;
            body = s3Xml('SlowDown', 'Please reduce your request rate.');
            if (random() < (opts.retryAfterShare ?? 0.5)) {
              counts.slowDownWithRetryAfter++;
              headers['retry-after'] = opts.retryAfter ?? '1';
            }
          } else {
            counts.internalError++;
          }
          // HEAD answers carry no body.
          res.writeHead(status, headers);
          res.end(req.method === 'HEAD' ? undefined : body);
        });
        return;
      }
      case 'resetAfter':
        counts.resetAfter++;
        counts.forwarded++;
        return forward(req, res, true);
      case 'hang':
        counts.hang++;
        req.pause();
        return;
      case 'delay':
        counts.delay++;
        counts.forwarded++;
        req.pause();
        setTimeout(() => forward(req, res, false), opts.delayMs ?? 50);
        return;
      default:
        counts.forwarded++;
        return forward(req, res, false);
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_e, s) => s.destroy());

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const close = async (): Promise<void> => {
    if (!server.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };

  await listen(0);
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    counts,
    log,
    requests,
    answerAll(e) {
      fixed = e;
    },
    setRates(r) {
      rates = { ...NO_FAULTS, ...r };
    },
    down: close,
    up: () => listen(port),
    async stop() {
      await close();
      upstream.destroy();
    },
  };
}
