/**
 * A real S3 implementation on loopback for the tests: s3rver on 127.0.0.1, a
 * random free port and a fresh temp directory, with one bucket created.
 *
 * s3rver 3.7 lacks two operations narpush relies on, so this helper answers
 * them in front of it, from s3rver's own on-disk state:
 * - AbortMultipartUpload (DELETE /bucket/key?uploadId=…): s3rver answers 405;
 *   here it removes the upload directory and answers 204 (404 NoSuchUpload
 *   when there is none), as S3 does.
 * - ListMultipartUploads (GET /bucket?uploads) is not implemented either:
 *   tests read pending uploads straight from s3rver's directory with
 *   `pendingUploads()` instead.
 *
 * - ListObjectsV2 past its first page: s3rver makes its continuation tokens
 *   with DES, which OpenSSL 3 no longer offers (a 500 on any bucket of more
 *   than 1,000 keys). The token only has to come back to s3rver, so DES is
 *   replaced, for s3rver alone, by AES-128-CBC with the key and IV doubled
 *   (installDesForS3rver).
 *
 * Anonymous GET works as it is: s3rver only checks a signature when a request
 * carries one, so `httpUrl` can serve as Nix's `http://` substituter.
 * Credentials are s3rver's built-in S3RVER/S3RVER (S3RVER_ENV for a child).
 */
import { createRequire } from 'node:module';
import * as http from 'node:http';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

// The SDK warns on stderr that its 2027 releases will need Node 22; tests run on Node 20 on purpose.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export const S3RVER_CREDENTIALS = Object.freeze({ accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' });
export const S3RVER_ENV = Object.freeze({ AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });

interface S3rverInstance {
  configureBuckets(): Promise<void>;
  callback(): (req: http.IncomingMessage, res: http.ServerResponse) => void;
  logger?: { close?(): void; exceptions?: { unhandle?(): void } };
}
type S3rverCtor = new (opts: Record<string, unknown>) => S3rverInstance;

export interface S3rverHandle {
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly bucket: string;
  /** The narpush `--to` URL: `s3://bucket?endpoint=http://127.0.0.1:PORT&region=us-east-1` */
  readonly url: string;
  /** Plain HTTP view of the bucket, usable as a Nix substituter: `http://127.0.0.1:PORT/bucket` */
  readonly httpUrl: string;
  /** s3rver's storage directory. */
  readonly dir: string;
  /** Every request seen, in order ("PUT /bucket/key?uploadId=…"). */
  readonly requests: string[];
  /** Upload ids of multipart uploads begun and neither completed nor aborted. */
  pendingUploads(): Promise<string[]>;
  stop(): Promise<void>;
}

function xmlError(res: http.ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/xml' });
  res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
}

/**
 * s3rver calls crypto.createCipheriv('des', 8-byte key, 8-byte iv) and the
 * matching decipher; every other algorithm passes through untouched.
 */
function installDesForS3rver(): void {
  const crypto = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto') & { __narpushDes?: true };
  if (crypto.__narpushDes) return;
  crypto.__narpushDes = true;
  const double = (b: Buffer): Buffer => Buffer.concat([b, b]);
  const { createCipheriv, createDecipheriv } = crypto;
  crypto.createCipheriv = ((algo: string, key: Buffer, iv: Buffer, opts?: unknown) =>
    algo === 'des' ? createCipheriv('aes-128-cbc', double(key), double(iv)) : createCipheriv(algo, key, iv, opts as never)) as typeof createCipheriv;
  crypto.createDecipheriv = ((algo: string, key: Buffer, iv: Buffer, opts?: unknown) =>
    algo === 'des' ? createDecipheriv('aes-128-cbc', double(key), double(iv)) : createDecipheriv(algo, key, iv, opts as never)) as typeof createDecipheriv;
}

export async function startS3rver(opts: { bucket?: string } = {}): Promise<S3rverHandle> {
  installDesForS3rver();
  const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
  const bucket = opts.bucket ?? 'narpush-test';
  const dir = await mkdtemp(path.join(tmpdir(), 'narpush-s3rver-'));
  const s3rver = new S3rver({ silent: true, directory: dir, vhostBuckets: false, configureBuckets: [{ name: bucket }] });
  await s3rver.configureBuckets();
  const app = s3rver.callback();
  // Where s3rver keeps multipart uploads of a bucket (FilesystemStore.getResourcePath(bucket, '', 'uploads')).
  const uploadsDir = (b: string): string => path.join(dir, b, '._S3rver_uploads');
  const requests: string[] = [];

  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const [, b, ...rest] = url.pathname.split('/');
    const uploadId = url.searchParams.get('uploadId');
    if (req.method === 'DELETE' && uploadId !== null && b && rest.length > 0) {
      req.resume();
      void (async () => {
        const target = path.join(uploadsDir(decodeURIComponent(b)), path.basename(uploadId));
        const exists = await readdir(target).then(() => true, () => false);
        if (!exists) return xmlError(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
        await rm(target, { recursive: true, force: true });
        res.writeHead(204);
        res.end();
      })().catch((e: unknown) => xmlError(res, 500, 'InternalError', String(e)));
      return;
    }
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const endpoint = `http://127.0.0.1:${port}`;

  return {
    port,
    endpoint,
    bucket,
    url: `s3://${bucket}?endpoint=${endpoint}&region=us-east-1`,
    httpUrl: `${endpoint}/${bucket}`,
    dir,
    requests,
    async pendingUploads() {
      return readdir(uploadsDir(bucket)).catch(() => [] as string[]);
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      s3rver.logger?.exceptions?.unhandle?.();
      s3rver.logger?.close?.();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An object's bytes and headers as stored, not decoded (fetch would undo a Content-Encoding). */
export function storedObject(url: string): Promise<{ status: number; encoding: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, encoding: res.headers['content-encoding'], body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}
