/**
 * A full garbage collection once the daemon has been idle for a while.
 *
 * V8 collects its old generation when allocation asks for it; an idle
 * daemon allocates nothing, so the garbage of a burst of uploads (heap
 * pages many times the size of what stays live) is kept until the next
 * burst. One collection after the queue ran dry, delayed so that a busy
 * period never pays for it, gives those pages back. Node offers `gc` only
 * under --expose-gc; the flag is set at run time to fetch that one function.
 * Never runs more often than the queue runs dry, and never holds the
 * process alive.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** V8's full collection, or undefined where it cannot be had. */
export function fullGc(): (() => void) | undefined {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

export interface IdleCollector {
  /** The queue ran dry: collect `delayMs` from now (from the latest call, when called again before). */
  schedule(): void;
  cancel(): void;
}

export function idleCollector(delayMs: number, gc: (() => void) | undefined = fullGc()): IdleCollector {
  let timer: NodeJS.Timeout | undefined;
  return {
    schedule() {
      if (!gc) return;
      if (timer) timer.refresh();
      else
        timer = setTimeout(() => {
          timer = undefined;
          gc();
        }, delayMs).unref();
    },
    cancel() {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}
