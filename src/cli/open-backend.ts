/**
 * Opens the backend a parsed `--to` URL names: the one place that knows every
 * backend, so that none of them (nor the upload pipeline) knows the others.
 * Each is imported only when opened: the S3 SDK stays unloaded for file://.
 */
import type { CacheBackend } from '../cache/backend.js';
import type { S3BackendOptions } from '../s3/s3-backend.js';
import type { CacheConfig } from './cache-url.js';

export interface OpenBackendOptions {
  /** Options for s3:// only (credentials, retries, timeouts, concurrency). */
  readonly s3?: S3BackendOptions;
}

/** Open the backend a parsed `--to` URL names. Does no network or filesystem I/O itself. */
export async function openCacheBackend(config: CacheConfig, opts: OpenBackendOptions = {}): Promise<CacheBackend> {
  if (config.kind === 'file') {
    const { FileBackend } = await import('../cache/file-backend.js');
    return new FileBackend(config.dir);
  }
  const { openS3Backend } = await import('../s3/s3-backend.js');
  return openS3Backend(config, opts.s3);
}
