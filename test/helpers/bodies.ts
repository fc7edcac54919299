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
