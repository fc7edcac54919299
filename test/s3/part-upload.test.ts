// part-upload.ts against s3rver on loopback, with small parts so that many
// parts are cheap: what it sends (one PUT, or parts then Complete in order),
// how many parts are in flight and how many buffers exist, what every kind
// of failure leaves behind (nothing), and what it predicts when the final
// answer is lost. Requests go to the real server; a wrapper around `send`
// records them and, in some tests, fails one on purpose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as S3 from '@aws-sdk/client-s3';
import { PartUpload, type PartUploadParams } from '../../src/s3/part-upload.js';
import { multipartEtag, partsMatch, unquoteEtag } from '../../src/s3/multipart.js';
import { startS3rver, S3RVER_CREDENTIALS, type S3rverHandle } from '../helpers/s3rver.js';
import { chunked, lentChunks } from '../helpers/bodies.js';

const P = 64 * 1024; // s3rver takes parts of any size
let s3: S3rverHandle;
let client: S3.S3Client;

before(async () => {
  s3 = await startS3rver();
  client = new S3.S3Client({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    // The SDK annotates the credentials object it is given: a fresh copy each time.
    credentials: async () => ({ ...S3RVER_CREDENTIALS }),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1,
  });
});
after(async () => {
  client?.destroy();
  await s3?.stop();
});

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const md5hex = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** A command as sent: its class name and input. */
interface Sent {
  readonly name: string;
  readonly input: Record<string, unknown>;
}

interface Harness {
  readonly upload: PartUpload;
  readonly sent: Sent[];
  /** Most UploadPart requests in flight at once. */
  readonly maxInFlight: () => number;
  /** Distinct memory (ArrayBuffers) the parts' bodies were views of. */
  readonly buffers: Set<ArrayBufferLike>;
}

/**
 * A PartUpload on s3rver whose requests are recorded; `around` may wrap the
 * real send (delay it, fail it, fail after it).
 */
function harness(
  key: string,
  opts: Partial<PartUploadParams> & {
    around?: (s: Sent, real: () => Promise<unknown>) => Promise<unknown>;
  } = {},
): Harness {
  const sent: Sent[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let inFlight = 0;
  let max = 0;
  const upload = new PartUpload({
    sdk: S3,
    send: async (cmd) => {
      const c = cmd as { constructor: { name: string }; input: Record<string, unknown> };
      const s: Sent = { name: c.constructor.name.replace(/Command$/, ''), input: c.input };
      sent.push(s);
      const real = (): Promise<unknown> => client.send(cmd as Parameters<S3.S3Client['send']>[0]);
      if (s.name !== 'UploadPart') return opts.around ? opts.around(s, real) : real();
      buffers.add((s.input.Body as Buffer).buffer);
      max = Math.max(max, ++inFlight);
      try {
        return await (opts.around ? opts.around(s, real) : real());
      } finally {
        inFlight--;
      }
    },
    bucket: s3.bucket,
    key,
    contentType: 'application/x-nix-nar',
    partSize: P,
    queueSize: 2,
    checksums: false,
    what: `${key} to s3rver`,
    ...opts,
  });
  return { upload, sent, maxInFlight: () => max, buffers };
}

async function readBack(key: string): Promise<Buffer | undefined> {
  const r = await fetch(`${s3.httpUrl}/${key}`);
  return r.status === 200 ? Buffer.from(await r.arrayBuffer()) : undefined;
}

const names = (h: Harness): string[] => h.sent.map((s) => s.name);

for (const size of [0, 1, P - 1, P, P + 1, 2 * P, 3 * P + 7]) {
  test(`a body of ${size} bytes (part size ${P}): the right requests, and it reads back identical`, async () => {
    const key = `nar/size-${size}.nar`;
    const data = randomBytes(size);
    const h = harness(key);
    // Chunks up to 2.5 parts: one chunk can fill a part and spill into the next.
    await h.upload.run(lentChunks(data, (5 * P) >> 1));
    assert.equal(h.upload.bytes, size);
    assert.equal(h.upload.unsettled, undefined);
    const got = await readBack(key);
    assert.ok(got, 'the object exists');
    assert.equal(sha(got), sha(data));
    const parts = Math.ceil(size / P);
    if (parts <= 1) {
      assert.deepEqual(names(h), ['PutObject'], 'at most one part: one PUT');
      assert.equal(h.sent[0]!.input.ContentType, 'application/x-nix-nar');
    } else {
      assert.deepEqual(names(h), ['CreateMultipartUpload', ...Array<string>(parts).fill('UploadPart'), 'CompleteMultipartUpload']);
      assert.equal(h.sent[0]!.input.ContentType, 'application/x-nix-nar');
      const numbers = h.sent.filter((s) => s.name === 'UploadPart').map((s) => s.input.PartNumber as number);
      assert.deepEqual([...numbers].sort((a, b) => a - b), Array.from({ length: parts }, (_, i) => i + 1), 'each part sent once');
      const listed = (h.sent.at(-1)!.input.MultipartUpload as { Parts: { PartNumber: number; ETag: string }[] }).Parts;
      assert.deepEqual(listed.map((x) => x.PartNumber), Array.from({ length: parts }, (_, i) => i + 1), 'Complete lists the parts in order');
      for (const [i, x] of listed.entries()) assert.equal(unquoteEtag(x.ETag), md5hex(data.subarray(i * P, (i + 1) * P)));
    }
    assert.deepEqual(await s3.pendingUploads(), []);
  });
}

test('many parts with slow answers: at most queueSize in flight, queueSize + 1 buffers, reused without corrupting a byte', async () => {
  const key = 'nar/many-parts.nar';
  const data = randomBytes(40 * P + 123);
  const h = harness(key, {
    queueSize: 3,
    around: async (_s, real) => {
      await sleep(Math.floor(Math.random() * 6));
      return real();
    },
  });
  await h.upload.run(lentChunks(data, 3 * P));
  assert.equal(sha((await readBack(key))!), sha(data));
  assert.ok(h.maxInFlight() <= 3, `${h.maxInFlight()} parts in flight`);
  assert.ok(h.maxInFlight() >= 2, 'parts did go out in parallel');
  assert.ok(h.buffers.size <= 4, `${h.buffers.size} part buffers`);
});

/** A body that yields `data` and then, or after `failAfter` bytes, throws `error`; `stopped` records `return()`. */
function failingBody(data: Buffer, error: Error, failAfter = data.length): AsyncIterable<Uint8Array> & { stopped: boolean; pulled: number } {
  const body = {
    stopped: false,
    pulled: 0,
    async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
      let finished = false;
      try {
        for await (const c of chunked(data.subarray(0, failAfter), P / 4)) {
          body.pulled += c.byteLength;
          yield c;
        }
        finished = true;
      } finally {
        if (!finished) body.stopped = true;
      }
      throw error;
    },
  };
  return body;
}

for (const [label, size, failAfter] of [
  ['after its last byte, multipart', 3 * P + 5, 3 * P + 5],
  ['midway, multipart', 6 * P, 2 * P + 100],
  ['after its last byte, one part', P, P],
] as const) {
  test(`a body that throws ${label}: that error, no object, no upload left`, async () => {
    const key = `nar/body-error-${size}-${failAfter}.nar`;
    const boom = new Error('NAR_HASH_MISMATCH at the end');
    const h = harness(key);
    await assert.rejects(h.upload.run(failingBody(randomBytes(size), boom, failAfter)), (e) => e === boom);
    assert.equal(h.upload.bodyFailed, true);
    assert.equal(h.upload.bodyError, boom);
    assert.equal(await readBack(key), undefined);
    assert.deepEqual(await s3.pendingUploads(), []);
    assert.ok(!names(h).includes('CompleteMultipartUpload') && !names(h).includes('PutObject'), names(h).join(' '));
    if (names(h).includes('CreateMultipartUpload')) assert.equal(names(h).at(-1), 'AbortMultipartUpload');
    else assert.deepEqual(names(h), [], 'one part: nothing was sent');
  });
}

test('a part that fails: that error, reading stops, the producer is told, the upload is aborted', async () => {
  const key = 'nar/part-fails.nar';
  const data = randomBytes(50 * P);
  const refused = Object.assign(new Error('part 2 refused'), { name: 'InternalError' });
  const h = harness(key, {
    around: async (s, real) => {
      if (s.input.PartNumber === 2) throw refused;
      return real();
    },
  });
  const body = failingBody(data, new Error('never reached'));
  await assert.rejects(h.upload.run(body), (e) => e === refused);
  assert.equal(h.upload.bodyFailed, false);
  assert.ok(body.stopped, 'the producer was told to stop');
  assert.ok(h.upload.bytes < 10 * P, `reading stopped (${h.upload.bytes} bytes read)`);
  assert.equal(names(h).at(-1), 'AbortMultipartUpload');
  assert.ok(!names(h).includes('CompleteMultipartUpload'));
  assert.equal(await readBack(key), undefined);
  assert.deepEqual(await s3.pendingUploads(), []);
});

test('an abort signal while waiting for the body: UPLOAD_ABORTED, parts in flight waited for, upload aborted', async () => {
  const key = 'nar/signal.nar';
  const ac = new AbortController();
  let partsDone = 0;
  const h = harness(key, {
    signal: ac.signal,
    around: async (s, real) => {
      const r = await real();
      if (s.name === 'UploadPart') partsDone++;
      return r;
    },
  });
  async function* stalls(): AsyncGenerator<Uint8Array> {
    yield randomBytes(2 * P + 1);
    await new Promise(() => {});
  }
  const p = h.upload.run(stalls());
  for (const t0 = Date.now(); !names(h).includes('UploadPart'); await sleep(2)) assert.ok(Date.now() - t0 < 5000, 'a part went out');
  ac.abort(new Error('^C'));
  await assert.rejects(p, { code: 'UPLOAD_ABORTED' });
  assert.equal(partsDone, names(h).filter((n) => n === 'UploadPart').length, 'no part still in flight');
  assert.equal(names(h).at(-1), 'AbortMultipartUpload');
  assert.deepEqual(await s3.pendingUploads(), []);
});

/** `command` takes effect on the server, but its answer is lost on the way back (a reset). */
function loseAnswerTo(command: string): (s: Sent, real: () => Promise<unknown>) => Promise<unknown> {
  return async (s, real) => {
    const r = await real();
    if (s.name === command) throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    return r;
  };
}

test('a lost answer to Complete: the object it made is predicted (s3rver: read back as our parts)', async () => {
  const key = 'nar/lost-complete.nar';
  const data = randomBytes(4 * P + 99);
  const h = harness(key, { around: loseAnswerTo('CompleteMultipartUpload') });
  await assert.rejects(h.upload.run(chunked(data, P)), { code: 'ECONNRESET' });
  const u = h.upload.unsettled!;
  assert.equal(u.size, data.length);
  assert.equal(u.parts!.length, 5);
  const partEtags = h.sent.filter((s) => s.name === 'CompleteMultipartUpload').flatMap((s) =>
    (s.input.MultipartUpload as { Parts: { ETag: string }[] }).Parts.map((x) => x.ETag),
  );
  assert.equal(u.etag, multipartEtag(partEtags));
  // s3rver gives a multipart object md5(body), not the multipart form.
  const head = await client.send(new S3.HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
  assert.equal(unquoteEtag(head.ETag), md5hex(data));
  const out = await client.send(new S3.GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  assert.equal(await partsMatch(out.Body as AsyncIterable<Uint8Array>, u.parts!), true);
  assert.equal(names(h).at(-1), 'AbortMultipartUpload', 'the upload was aborted (a no-op: it is complete)');
});

test('a lost answer to a single PutObject: the ETag predicted is the one the server gives', async () => {
  const key = 'nar/lost-put.nar';
  const data = randomBytes(P - 3);
  const h = harness(key, { around: loseAnswerTo('PutObject') });
  await assert.rejects(h.upload.run(chunked(data, P)), { code: 'ECONNRESET' });
  const head = await client.send(new S3.HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
  assert.deepEqual(h.upload.unsettled, { size: data.length, etag: unquoteEtag(head.ETag) });
});
