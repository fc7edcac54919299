/**
 * Ceph's RADOS Gateway on loopback for the integration tests: a production
 * S3 server beside s3rver (see rgw/README.md for what it does differently).
 * One throwaway cluster per test file (~3 s to start), one bucket readable
 * anonymously so that Nix can substitute from it over plain HTTP.
 *
 * The packages are a requirement of the suite, like Nix: without them the
 * tests that need radosgw fail, saying what to install.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, PutBucketPolicyCommand, S3Client } from '@aws-sdk/client-s3';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const run = promisify(execFile);
// dist/test/helpers -> test/helpers/rgw (the scripts are not compiled).
const SCRIPTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'helpers', 'rgw');

export interface RgwHandle {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** The narpush `--to` URL for the bucket. */
  readonly url: string;
  /** Plain HTTP view of the bucket (anonymous GET), usable as a Nix substituter. */
  readonly httpUrl: string;
  /** AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for a child process. */
  readonly env: Readonly<Record<string, string>>;
  /** The same, for an SDK client or a backend in this process. */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** An SDK client for the bucket, for checks beside narpush. */
  readonly client: S3Client;
  stop(): Promise<void>;
}

export async function radosgwAvailable(): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v radosgw && command -v ceph-mon && command -v ceph-osd && command -v ceph']);
    return true;
  } catch {
    return false;
  }
}

export async function startRgw(opts: { bucket?: string; memstoreBytes?: number } = {}): Promise<RgwHandle> {
  if (!(await radosgwAvailable())) {
    throw new Error('radosgw is not installed: apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common (see .ci/run)');
  }
  const top = await mkdtemp(path.join(tmpdir(), 'narpush-rgw-'));
  const dir = path.join(top, 'cluster');
  const env = { ...process.env, RGW_DIR: dir, MEMSTORE_BYTES: String(opts.memstoreBytes ?? 1 << 30) };
  const stop = async (): Promise<void> => {
    await run(path.join(SCRIPTS, 'stop.sh'), [], { env }).catch(() => {});
    await rm(top, { recursive: true, force: true });
  };
  try {
    await run(path.join(SCRIPTS, 'start.sh'), [], { env, timeout: 120_000 });
  } catch (e) {
    const log = await readFile(path.join(dir, 'log', 'rgw.out'), 'utf8').catch(() => '');
    await stop();
    throw new Error(`radosgw did not start: ${(e as Error).message}${log ? `\n${log.slice(-2000)}` : ''}`);
  }
  const vars = Object.fromEntries(
    (await readFile(path.join(dir, 'env'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  const endpoint = vars.S3_ENDPOINT!;
  const bucket = opts.bucket ?? 'narpush-test';
  const client = new S3Client({
    endpoint,
    region: vars.S3_REGION ?? 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: vars.S3_ACCESS_KEY!, secretAccessKey: vars.S3_SECRET_KEY! },
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    const policy = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/*`] }],
    };
    await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify(policy) }));
  } catch (e) {
    client.destroy();
    await stop();
    throw e;
  }
  return {
    endpoint,
    port: Number(new URL(endpoint).port),
    bucket,
    url: `s3://${bucket}?endpoint=${endpoint}&region=${vars.S3_REGION ?? 'us-east-1'}`,
    httpUrl: `${endpoint}/${bucket}`,
    env: { AWS_ACCESS_KEY_ID: vars.S3_ACCESS_KEY!, AWS_SECRET_ACCESS_KEY: vars.S3_SECRET_KEY! },
    credentials: { accessKeyId: vars.S3_ACCESS_KEY!, secretAccessKey: vars.S3_SECRET_KEY! },
    client,
    async stop() {
      client.destroy();
      await stop();
    },
  };
}
