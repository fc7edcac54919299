/**
 * Buffers of one size that go round: handed out with the bytes a consumer
 * asked for, given back once it is done with them (a backend, once they are
 * written), and then filled again. A fresh buffer is not free: the kernel
 * zeroes each of its pages on first touch, which cost as much as a third of
 * zstd's own time on a large NAR's output (docs/performance.md).
 *
 * Giving back is optional: a buffer never given back is simply not reused.
 * Only what was handed out can be given back, once: anything else is ignored,
 * so a consumer's mistake never puts one buffer in two hands.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  /** What is handed out (a buffer or a view of part of it), to the buffer it is. */
  private readonly out = new WeakMap<Uint8Array, Buffer>();

  constructor(
    /** Bytes in every buffer. */
    readonly size: number,
    /** Given-back buffers kept for reuse at most (the rest are left to the GC). */
    private readonly keep: number,
  ) {}

  /** A buffer of `size` bytes: one given back, else a fresh one. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  /** `view` (`buffer` or a part of it, and the only one) is handed out: giving it back frees `buffer`. */
  handOut(view: Uint8Array, buffer: Buffer): void {
    this.out.set(view, buffer);
  }

  /** Done with `view`: its buffer may be filled again. Ignored unless handed out and not yet given back. */
  give(view: Uint8Array): void {
    const buffer = this.out.get(view);
    if (buffer === undefined) return;
    this.out.delete(view);
    if (this.free.length < this.keep) this.free.push(buffer);
  }
}
