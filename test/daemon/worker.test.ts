// The worker against a real queue: when a batch starts relative to the
// acknowledgement of the request that queued it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { WorkQueue } from '../../src/daemon/queue.js';
import { type PathOutcome, Worker } from '../../src/daemon/worker.js';
import { RecordingJournal, eventually, fakePath } from './fakes.js';

test('a batch starts only after the acknowledgement of the enqueue that woke the worker has gone out', async () => {
  const queue = new WorkQueue(new RecordingJournal(), { retry: { initialDelayMs: 10, maxDelayMs: 10 } });
  const events: string[] = [];
  const worker = new Worker(queue, {
    upload: async (paths) => {
      events.push(`upload ${paths.length}`);
      return new Map(paths.map((p) => [p, { kind: 'done' } as PathOutcome]));
    },
    log: () => {},
  });
  worker.start();
  await nextTurn(); // the worker waits for work
  for (const name of ['a', 'b']) {
    // As the daemon answers: the request's continuation runs several promise
    // hops after the journal write (intake, server), then writes the answer.
    await (async () => {
      await queue.enqueue([fakePath(name)]);
      for (let i = 0; i < 20; i++) await null;
      events.push('answered');
    })();
    await eventually(() => events.length % 2 === 0, 5000, 'the upload');
  }
  await worker.stop(0);
  assert.deepEqual(events, ['answered', 'upload 1', 'answered', 'upload 1']);
});
