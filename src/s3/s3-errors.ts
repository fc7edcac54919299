/**
 * S3 failures as NarpushErrors whose one-line message says what to fix:
 * "bucket 'x' does not exist at …", "access denied …: check the credentials
 * of profile 'p'". The SDK error stays attached as `cause` for --debug.
 *
 * Codes: S3_NO_SUCH_BUCKET, S3_ACCESS_DENIED, S3_BAD_CREDENTIALS,
 * S3_NO_CREDENTIALS, S3_WRONG_REGION, S3_UNAVAILABLE (transient failures that
 * outlasted every retry), S3_ERROR (anything else). Pure; never includes a
 * secret (SDK messages can quote the access key id, so they are not copied
 * for credential errors).
 */
import { type ErrorCode, NarpushError, isNarpushError } from '../errors.js';
import { classifyFailure } from './retry.js';

export interface S3ErrorContext {
  /** What we were doing, e.g. "upload nar/abc.nar.xz". */
  readonly op: string;
  readonly bucket: string;
  /** `http://127.0.0.1:9000` or `AWS region eu-west-1`. */
  readonly where: string;
  readonly region: string;
  readonly profile?: string;
  /** The timeouts in force, to name the one that expired. */
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
}

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; attempts?: number };
  $response?: { headers?: Record<string, string> };
}

function credentialsHint(ctx: S3ErrorContext): string {
  return ctx.profile !== undefined
    ? `the credentials of profile '${ctx.profile}'`
    : 'the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role)';
}

function seconds(ms: number | undefined): string {
  return ms === undefined ? '' : ` ${Number((ms / 1000).toFixed(3))} s`;
}

function networkReason(e: SdkError, ctx: S3ErrorContext): string {
  const code = e.code ?? '';
  // The SDK's own wording (@smithy/node-http-handler) is the only way to tell its two timeouts apart.
  if (e.name === 'TimeoutError' && /did not establish a connection/.test(e.message ?? '')) {
    return `timed out: no connection within${seconds(ctx.connectTimeoutMs)} (connect-timeout)`;
  }
  if (e.name === 'TimeoutError' && /timed out after \d+ ms of inactivity/.test(e.message ?? '')) {
    return `timed out: no data for${seconds(ctx.idleTimeoutMs)} (idle-timeout)`;
  }
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ECONNRESET' || /socket hang up/i.test(e.message ?? '')) return 'connection reset';
  if (e.name === 'TimeoutError' || code === 'ETIMEDOUT') return 'timed out';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host not found';
  const status = e.$metadata?.httpStatusCode;
  const label = e.name && e.name !== 'Error' ? e.name : code || 'error';
  return status !== undefined ? `${status} ${label}` : `${label}: ${oneLine(e.message ?? '')}`;
}

function oneLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

/** Turn whatever an S3 call threw into a NarpushError (NarpushErrors pass through). */
export function s3Error(error: unknown, ctx: S3ErrorContext): NarpushError {
  if (isNarpushError(error)) return error;
  const e = (error ?? {}) as SdkError;
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  const attempts = e.$metadata?.attempts;
  const mk = (code: ErrorCode, msg: string): NarpushError => new NarpushError(code, msg, { cause: error });

  switch (name) {
    case 'NoSuchBucket':
      return mk('S3_NO_SUCH_BUCKET', `bucket '${ctx.bucket}' does not exist at ${ctx.where}: create it or fix the bucket name`);
    case 'InvalidAccessKeyId':
      return mk('S3_BAD_CREDENTIALS', `${ctx.where} does not know the access key id: check ${credentialsHint(ctx)}`);
    case 'SignatureDoesNotMatch':
      return mk('S3_BAD_CREDENTIALS', `${ctx.where} rejected the request signature: check the secret key in ${credentialsHint(ctx)}`);
    case 'ExpiredToken':
    case 'InvalidToken':
      return mk('S3_BAD_CREDENTIALS', `the session token was refused by ${ctx.where}: refresh ${credentialsHint(ctx)}`);
    case 'CredentialsProviderError':
      return mk(
        'S3_NO_CREDENTIALS',
        ctx.profile !== undefined
          ? `no AWS credentials for profile '${ctx.profile}': check ~/.aws/credentials and ~/.aws/config`
          : 'no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile=NAME to the s3:// URL',
      );
    case 'PermanentRedirect':
    case 'AuthorizationHeaderMalformed': {
      const actual = e.$response?.headers?.['x-amz-bucket-region'];
      const hint = actual ? `it is in '${actual}': add region=${actual} to the s3:// URL` : 'add region=<its region> to the s3:// URL';
      return mk('S3_WRONG_REGION', `bucket '${ctx.bucket}' is not in region '${ctx.region}': ${hint}`);
    }
  }
  if (name === 'AccessDenied' || name === 'AllAccessDisabled' || name === 'Forbidden' || status === 403) {
    return mk(
      'S3_ACCESS_DENIED',
      `access denied: cannot ${ctx.op} in bucket '${ctx.bucket}' at ${ctx.where}: check ${credentialsHint(ctx)} and the bucket policy` +
        // S3 answers 403 rather than 404 for a missing key when the caller may not list the bucket.
        (ctx.op.startsWith('check ') ? ' (checking for a missing object also needs s3:ListBucket)' : ''),
    );
  }
  if (status === 301) {
    return mk('S3_WRONG_REGION', `bucket '${ctx.bucket}' is not in region '${ctx.region}': add region=<its region> to the s3:// URL`);
  }
  if (classifyFailure(error) !== 'permanent') {
    const tries = attempts !== undefined && attempts > 1 ? ` after ${attempts} attempts` : '';
    return mk('S3_UNAVAILABLE', `cannot ${ctx.op} at ${ctx.where}${tries}: ${networkReason(e, ctx)}`);
  }
  return mk('S3_ERROR', `cannot ${ctx.op} in bucket '${ctx.bucket}' at ${ctx.where}: ${networkReason(e, ctx)}`);
}
