/**
 * A Ceph RADOS Gateway for tests that need what s3rver lacks (listing
 * multipart uploads, LastModified renewed by a copy onto itself): started
 * with /work/shared/rgw/start.sh in a fresh RGW_DIR, stopped (only the
 * daemons it started) with stop.sh. `rgwAvailable` says whether this machine
 * can run one; tests skip, saying so, when it cannot.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { run } from './run.js';

const SCRIPTS = process.env.NARPUSH_RGW_SCRIPTS ?? '/work/shared/rgw';

export interface RgwHandle {
  readonly endpoint: string;
  readonly env: { readonly AWS_ACCESS_KEY_ID: string; readonly AWS_SECRET_ACCESS_KEY: string };
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** The narpush URL of `bucket` on this gateway. */
  url(bucket: string): string;
  stop(): Promise<void>;
}

export function rgwAvailable(): boolean {
  return existsSync(path.join(SCRIPTS, 'start.sh')) && existsSync('/usr/bin/radosgw') && existsSync('/usr/bin/ceph-mon');
}

export async function startRgw(): Promise<RgwHandle> {
  const parent = await mkdtemp(path.join(tmpdir(), 'rgw-gc-'));
  const dir = path.join(parent, 'cluster');
  const env = { ...process.env, RGW_DIR: dir };
  const started = await run('bash', [path.join(SCRIPTS, 'start.sh')], { env });
  if (started.code !== 0) {
    await run('bash', [path.join(SCRIPTS, 'stop.sh')], { env });
    await rm(parent, { recursive: true, force: true });
    throw new Error(`start.sh failed: ${started.stderr}`);
  }
  const vars = Object.fromEntries(
    (await readFile(path.join(dir, 'env'), 'utf8'))
      .split('\n')
      .map((l) => /^(?:export\s+)?(\w+)=["']?([^"']*)["']?$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
  const accessKeyId = vars.S3_ACCESS_KEY!;
  const secretAccessKey = vars.S3_SECRET_KEY!;
  const endpoint = vars.S3_ENDPOINT!;
  const region = vars.S3_REGION ?? 'us-east-1';
  return {
    endpoint,
    env: { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey },
    credentials: { accessKeyId, secretAccessKey },
    url: (bucket) => `s3://${bucket}?endpoint=${endpoint}&region=${region}&addressing-style=path`,
    async stop() {
      await run('bash', [path.join(SCRIPTS, 'stop.sh')], { env });
      await rm(parent, { recursive: true, force: true });
    },
  };
}
