/**
 * Concurrency limits. `Slots` hands out at most `n` holds at once, in the
 * order asked, for work whose hold spans several steps (an open liblzma
 * encoder); `createLimiter` wraps one async function call in a hold.
 */
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(n: number) {
    this.free = Math.max(1, Math.floor(n));
  }

  /** Wait for a hold; call the returned function once to give it back (later calls are ignored). */
  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

/** A concurrency limiter: at most `n` of the functions given to it run at once, in the order given. */
export type Limiter = <T>(fn: () => Promise<T>) => Promise<T>;

export function createLimiter(n: number): Limiter {
  const slots = new Slots(n);
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    const release = await slots.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  };
}
