/** Upload bodies for backend tests: data cut into random chunks, and a producer that stalls. */

/** `data` in chunks of 1..maxChunk bytes, sizes drawn from `random`. */
export async function* chunked(data: Buffer, maxChunk = 64 * 1024, random: () => number = Math.random): AsyncGenerator<Uint8Array> {
  let off = 0;
  while (off < data.length) {
    const n = Math.min(data.length - off, 1 + Math.floor(random() * maxChunk));
    yield data.subarray(off, off + n);
    off += n;
  }
}

/** A producer that hands out one chunk, then stalls; `returned` records being told to stop. */
export function stallingBody(first: Uint8Array): AsyncIterable<Uint8Array> & { returned: boolean } {
  let sent = false;
  const body = {
    returned: false,
    [Symbol.asyncIterator]: () => ({
      next: (): Promise<IteratorResult<Uint8Array>> => {
        if (sent) return new Promise(() => {});
        sent = true;
        return Promise.resolve({ done: false, value: first });
      },
      return: (): Promise<IteratorResult<Uint8Array>> => {
        body.returned = true;
        return Promise.resolve({ done: true, value: undefined });
      },
    }),
  };
  return body;
}

/**
 * `data` in chunks of 1..maxChunk bytes, each lent: a view of one scratch
 * buffer that is scribbled over as soon as the next chunk is asked for, as a
 * producer that reuses its buffers does. A consumer that keeps a chunk
 * instead of copying it before asking for the next sends garbage.
 */
export async function* lentChunks(data: Buffer, maxChunk = 64 * 1024, random: () => number = Math.random): AsyncGenerator<Uint8Array> {
  const scratch = Buffer.alloc(maxChunk);
  let off = 0;
  while (off < data.length) {
    const n = Math.min(data.length - off, 1 + Math.floor(random() * maxChunk));
    data.copy(scratch, 0, off, off + n);
    yield scratch.subarray(0, n);
    scratch.fill(0xa5);
    off += n;
  }
}
