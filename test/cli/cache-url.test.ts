// `--to` URLs: every parameter, Nix's defaults and meanings, and every way to get one wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { bucketNameProblem, parseCacheUrl, type S3CacheConfig, type FileCacheConfig } from '../../src/cli/cache-url.js';

const s3 = (url: string): S3CacheConfig => {
  const c = parseCacheUrl(url);
  assert.equal(c.kind, 's3');
  return c as S3CacheConfig;
};
const file = (url: string, cwd?: string): FileCacheConfig => {
  const c = parseCacheUrl(url, cwd === undefined ? {} : { cwd });
  assert.equal(c.kind, 'file');
  return c as FileCacheConfig;
};
const bad = (url: string, re: RegExp, cwd?: string): void => {
  assert.throws(
    () => parseCacheUrl(url, cwd === undefined ? {} : { cwd }),
    (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'BAD_CACHE_URL');
      assert.match(e.message, re);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    },
  );
};

test('file:// takes everything after the scheme as the directory, as Nix does', () => {
  const c = file('file:///srv/nix-cache');
  assert.equal(c.dir, '/srv/nix-cache');
  assert.equal(c.description, 'file:///srv/nix-cache');
  assert.deepEqual(c.params, { secretKeyFiles: [] });
  assert.equal(file('file:///srv/a/../cache/').dir, '/srv/cache');
  assert.equal(file('file:///srv/with%20space').dir, '/srv/with space');
  // Relative directories are relative to the caller's working directory, when it gives one.
  assert.equal(file('file://cache', '/home/u').dir, '/home/u/cache');
  assert.equal(file('file://./x/y', '/w').dir, '/w/x/y');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.params));
});

test('file:// errors', () => {
  bad('file://', /no directory/);
  bad('file://?compression=xz', /no directory/);
  bad('file://relative/dir', /'relative\/dir' is a relative path: write file:\/\/\/absolute\/dir/);
  bad('file:///srv/cache#frag', /no #fragment/);
  bad('file:///srv/%zz', /bad percent-encoding/);
  bad('file:///srv/%00x', /NUL/);
  bad('/srv/cache', /a cache directory is written file:\/\/\/srv\/cache/);
  bad('file:///srv/cache?region=eu-west-1', /parameter 'region' only applies to s3:\/\/ caches/);
  bad('file:///srv/cache?endpoint=x', /only applies to s3/);
});

test('s3:// defaults follow Nix: us-east-1, https, virtual-hosted addressing on AWS', () => {
  const c = s3('s3://my-bucket');
  assert.deepEqual(
    { ...c },
    {
      kind: 's3',
      bucket: 'my-bucket',
      region: 'us-east-1',
      scheme: 'https',
      addressingStyle: 'auto',
      forcePathStyle: false,
      params: { secretKeyFiles: [] },
      description: 's3://my-bucket (in us-east-1)',
    },
  );
  assert.equal(s3('s3://my-bucket/').bucket, 'my-bucket');
  // Dotted names cannot use virtual hosts under TLS: auto falls back to path-style.
  assert.equal(s3('s3://cache.example.org').forcePathStyle, true);
});

test('s3:// endpoint: with or without a scheme; path-style unless told otherwise', () => {
  const minio = s3('s3://nix?endpoint=http://127.0.0.1:9000&region=us-east-1&profile=ci');
  assert.equal(minio.endpoint, 'http://127.0.0.1:9000');
  assert.equal(minio.scheme, 'http');
  assert.equal(minio.forcePathStyle, true);
  assert.equal(minio.profile, 'ci');
  assert.equal(minio.description, 's3://nix (at http://127.0.0.1:9000, profile ci)');
  // A bare authority takes `scheme`, https by default (Nix's ParsedURL::Authority case).
  assert.equal(s3('s3://nix?endpoint=minio.local:9000').endpoint, 'https://minio.local:9000');
  const plain = s3('s3://nix?endpoint=minio.local:9000&scheme=http');
  assert.equal(plain.endpoint, 'http://minio.local:9000');
  assert.equal(plain.scheme, 'http');
  assert.equal(s3('s3://nix?endpoint=https://s3.example.com/').endpoint, 'https://s3.example.com');
  assert.equal(s3('s3://nix?endpoint=[::1]:9000&scheme=http').endpoint, 'http://[::1]:9000');
  assert.equal(s3('s3://nix?endpoint=http%3A%2F%2F127.0.0.1%3A9000').endpoint, 'http://127.0.0.1:9000');
  assert.equal(s3('s3://nix?endpoint=http://h:1&addressing-style=virtual').forcePathStyle, false);
  assert.equal(s3('s3://nix?addressing-style=path').forcePathStyle, true);
  assert.equal(s3('s3://nix?addressing-style=virtual').forcePathStyle, false);
  assert.equal(s3('s3://nix?scheme=http').scheme, 'http');
  assert.equal(s3('s3://nix?region=eu-central-1').description, 's3://nix (in eu-central-1)');
});

test('s3:// upload parameters', () => {
  const c = s3(
    's3://nix?storage-class=STANDARD_IA&multipart-upload=true&multipart-chunk-size=16777216' +
      '&narinfo-compression=none&ls-compression=none',
  );
  assert.equal(c.storageClass, 'STANDARD_IA');
  assert.equal(c.multipartUpload, true);
  assert.equal(c.minPartSize, 16 * 1024 * 1024);
  assert.equal(s3('s3://nix?buffer-size=5242880').minPartSize, 5 * 1024 * 1024);
  assert.equal(s3('s3://nix?multipart-upload=false').multipartUpload, false);
});

test('s3:// timeouts: connect-timeout and idle-timeout in seconds', () => {
  const c = s3('s3://nix?connect-timeout=5&idle-timeout=0.5');
  assert.equal(c.connectTimeoutMs, 5000);
  assert.equal(c.idleTimeoutMs, 500);
  assert.equal(s3('s3://nix').idleTimeoutMs, undefined);
  for (const v of ['0', '-1', 'abc', '1e3', '3601', '']) {
    assert.throws(() => parseCacheUrl(`s3://nix?idle-timeout=${v}`), {
      code: 'BAD_CACHE_URL',
      message: new RegExp(`parameter 'idle-timeout' must be a number of seconds from 0.1 to 3600, not '${v}'|parameter 'idle-timeout' needs a value`),
    });
  }
  assert.throws(() => parseCacheUrl('file:///c?connect-timeout=1'), /parameter 'connect-timeout' only applies to s3:\/\/ caches/);
});

test('s3:// checksum: when-required (the default, unset) or when-supported', () => {
  assert.equal(s3('s3://nix').checksum, undefined);
  assert.equal(s3('s3://nix?checksum=when-required').checksum, 'when-required');
  assert.equal(s3('s3://nix?checksum=when-supported').checksum, 'when-supported');
  for (const v of ['WHEN_SUPPORTED', 'always', 'crc32', '']) {
    assert.throws(() => parseCacheUrl(`s3://nix?checksum=${v}`), {
      code: 'BAD_CACHE_URL',
      message: /checksum '.*' is not one of when-required, when-supported|parameter 'checksum' needs a value/,
    });
  }
  assert.throws(() => parseCacheUrl('file:///c?checksum=when-required'), /parameter 'checksum' only applies to s3:\/\/ caches/);
});

test('binary-cache parameters shared by file:// and s3://', () => {
  for (const base of ['file:///c?', 's3://nix?']) {
    const c = parseCacheUrl(
      `${base}compression=zstd&compression-level=19&parallel-compression=true&secret-key=/k/a.sec` +
        '&secret-keys=/k/b.sec,/k/c.sec&want-mass-query=1&priority=30&write-nar-listing=no',
    );
    assert.deepEqual(c.params, {
      compression: 'zstd',
      compressionLevel: 19,
      parallelCompression: true,
      secretKeyFiles: ['/k/a.sec', '/k/b.sec', '/k/c.sec'],
      wantMassQuery: true,
      priority: 30,
      writeNarListing: false,
    });
    assert.equal(parseCacheUrl(`${base}write-nar-listing=true`).params.writeNarListing, true);
    assert.equal(parseCacheUrl(base.slice(0, -1)).params.writeNarListing, undefined, 'off unless given, as in Nix');
  }
  const p = parseCacheUrl('file:///c?compression=none&want-mass-query=false&parallel-compression=no&priority=0').params;
  assert.deepEqual(p, { compression: 'none', secretKeyFiles: [], wantMassQuery: false, parallelCompression: false, priority: 0 });
  // -1 is Nix's "the method's default".
  assert.equal(parseCacheUrl('file:///c?compression-level=-1').params.compressionLevel, undefined);
  assert.equal(parseCacheUrl('file:///c?compression=xz&compression-level=9').params.compressionLevel, 9);
  assert.equal(parseCacheUrl('file:///c?compression-level=3').params.compressionLevel, 3);
});

test('bad parameters', () => {
  bad('s3://nix?colour=blue', /unknown parameter 'colour' for a s3:\/\/ cache/);
  bad('s3://nix?a%0Ab=1', /unknown parameter 'a\\x0ab'/); // still one line
  bad('file:///c?colour=blue', /unknown parameter 'colour' for a file:\/\/ cache/);
  bad('s3://nix?index-debug-info=true', /'index-debug-info' is not supported by narpush/);
  assert.equal(s3('s3://nix?log-compression=br').logCompression, 'br');
  assert.equal(s3('s3://nix?log-compression=none').logCompression, undefined);
  assert.equal(s3('s3://nix').logCompression, undefined);
  bad('s3://nix?log-compression=xz', /log-compression 'xz' is not one of none, br/);
  bad('file:///c?log-compression=none', /'log-compression' only applies to s3:\/\/ caches/);
  bad('s3://nix?multipart-threshold=100', /not supported/);
  bad('s3://nix?compression=bzip2', /compression 'bzip2' is not supported by narpush \(use xz, zstd, none\)/);
  for (const name of ['narinfo-compression', 'ls-compression', 'log-compression'] as const) {
    const field = ({ 'narinfo-compression': 'narinfoCompression', 'ls-compression': 'lsCompression', 'log-compression': 'logCompression' } as const)[name];
    assert.equal(s3(`s3://nix?${name}=br`)[field], 'br', name);
    assert.equal(s3(`s3://nix?${name}=none`)[field], undefined, name);
    assert.equal(s3(`s3://nix?${name}=`)[field], undefined, `${name}: empty is Nix's default, none`);
    assert.equal(s3('s3://nix')[field], undefined, name);
    for (const other of ['xz', 'zstd', 'gzip', 'bzip2', 'BR']) bad(`s3://nix?${name}=${other}`, new RegExp(`${name} '${other}' is not one of none, br`));
  }
  bad('file:///c?write-nar-listing=maybe', /parameter 'write-nar-listing' must be true or false/);
  bad('file:///c?ls-compression=none', /'ls-compression' only applies to s3:\/\/ caches/);
  bad('s3://nix?compression-level=high', /must be an integer/);
  bad('s3://nix?compression=xz&compression-level=12', /between 0 and 9/);
  bad('s3://nix?compression=zstd&compression-level=0', /between 1 and 22/);
  bad('s3://nix?compression=none&compression-level=3', /compression-level/);
  bad('s3://nix?compression-level=-2', /between -1 and 22/);
  bad('s3://nix?priority=-1', /between 0 and/);
  bad('s3://nix?priority=1.5', /integer/);
  bad('s3://nix?want-mass-query=maybe', /must be true or false, not 'maybe'/);
  bad('s3://nix?want-mass-query', /needs a value/);
  bad('s3://nix?priority=1&priority=2', /given twice/);
  bad('s3://nix?secret-key=', /'secret-key' is empty/);
  bad('s3://nix?region=EU_WEST', /region 'EU_WEST' is not a region name/);
  bad('s3://nix?scheme=ftp', /scheme must be http or https, not 'ftp'/);
  bad('s3://nix?addressing-style=dns', /addressing-style must be auto, path or virtual/);
  bad('s3://my.dotted.bucket?addressing-style=virtual', /cannot be used with the dotted bucket name/);
  bad('s3://nix?storage-class=COLD', /storage-class 'COLD' is not one of/);
  bad('s3://nix?multipart-chunk-size=1048576', /between 5242880 and 5368709120/);
  bad('s3://nix?multipart-chunk-size=5242880&buffer-size=5242880', /not both/);
  bad('s3://nix?multipart-upload=2', /true or false/);
  bad('s3://nix?profile=has space', /profile 'has space' is not a profile name/);
  bad('s3://nix?endpoint=', /'endpoint' is empty/);
  bad('s3://nix?endpoint=ftp://h', /endpoint scheme 'ftp' must be http or https/);
  bad('s3://nix?endpoint=http://h:9000/base', /without a path or query/);
  bad('s3://nix?endpoint=http://h:99999', /not a valid URL/);
  bad('s3://nix?endpoint=h:0', /not host\[:port\]/);
  bad('s3://nix?endpoint=bad_host!', /not host\[:port\]/);
  bad('s3://nix?endpoint=http://h&scheme=https', /scheme=https contradicts the endpoint/);
});

test('credentials never appear in the error or the description', () => {
  bad('s3://nix?endpoint=http://AKIAXXX:supersecret@h:9000', /must not contain credentials/);
  bad('s3://AKIAXXX:supersecret@nix', /credentials do not belong in the URL/);
  for (const url of ['s3://nix?endpoint=http://AKIAXXX:supersecret@h:9000', 's3://AKIAXXX:supersecret@nix', 'http://u:supersecret@h/']) {
    assert.throws(() => parseCacheUrl(url), (e: Error) => !/supersecret/.test(e.message));
  }
});

test('bad schemes and shapes', () => {
  bad('http://cache.example.org', /unknown scheme 'http': narpush writes to file:\/\/ and s3:\/\/ caches/);
  bad('ssh://host', /unknown scheme 'ssh'/);
  bad('s3:/nix', /expected file:\/\/<dir> or s3:\/\/<bucket>/);
  bad('', /expected/);
  bad('s3://', /no bucket name/);
  bad('s3://nix/prefix', /a key prefix is not supported/);
  bad('s3://nix\n?region=x', /control characters/);
});

test('bucket names follow S3 rules', () => {
  for (const [name, re] of [
    ['ab', /3 to 63/],
    ['a'.repeat(64), /3 to 63/],
    ['My-Bucket', /lowercase letters/],
    ['my_bucket', /lowercase letters/],
    ['-bucket', /begin and end/],
    ['bucket-', /begin and end/],
    ['my..bucket', /two adjacent dots/],
    ['192.168.5.4', /IP address/],
    ['xn--bucket', /must not start with 'xn--'/],
    ['sthree-bucket', /must not start with 'sthree-'/],
    ['bucket-s3alias', /must not end with '-s3alias'/],
    ['bucket--ol-s3', /must not end with '--ol-s3'/],
  ] as const) {
    bad(`s3://${name}`, re);
  }
  for (const name of ['abc', 'a'.repeat(63), 'nix-cache.example.org', '1bucket9', 'a-b.c-d']) {
    assert.equal(bucketNameProblem(name), undefined, name);
  }
  // Property: whatever is accepted satisfies the rules, checked independently here.
  fc.assert(
    fc.property(fc.stringMatching(/^[a-z0-9.\-_A-Z]{1,70}$/), (name) => {
      const ok = bucketNameProblem(name) === undefined;
      const rules =
        name.length >= 3 &&
        name.length <= 63 &&
        /^[a-z0-9]/.test(name) &&
        /[a-z0-9]$/.test(name) &&
        /^[a-z0-9.-]+$/.test(name) &&
        !name.includes('..') &&
        !/^\d+\.\d+\.\d+\.\d+$/.test(name) &&
        !/^(xn--|sthree-|amzn-s3-demo-)/.test(name) &&
        !/(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$/.test(name);
      assert.equal(ok, rules, name);
    }),
  );
});
