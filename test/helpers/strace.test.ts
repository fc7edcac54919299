// The strace log reader that the fsync tests (daemon-nix, hook-roots-nix)
// rely on, on logs of the shapes `strace -f` writes: a call another thread
// interrupted is split into "<unfinished ...>" and "<... call resumed>".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirSyncedAt } from './strace.js';

const AUTO = '/nix/var/nix/gcroots/auto';

test('dirSyncedAt: an open and an fsync each on one line, or split across two by another thread', () => {
  const whole = [
    `100 openat(AT_FDCWD, "${AUTO}", O_RDONLY|O_CLOEXEC) = 26`,
    '100 fsync(26) = 0',
    '100 close(26) = 0',
  ];
  assert.equal(dirSyncedAt(whole, AUTO), 1);
  // Both split (as when the links' directory is synced while Nix registers them).
  const split = [
    `101 openat(AT_FDCWD, "${AUTO}", O_RDONLY|O_CLOEXEC <unfinished ...>`,
    '102 openat(AT_FDCWD, "/state/gcroots", O_RDONLY|O_CLOEXEC) = 26',
    '101 <... openat resumed>) = 27',
    '103 fsync(27 <unfinished ...>',
    '102 fsync(26) = 0',
    '103 <... fsync resumed>) = 0',
  ];
  assert.equal(dirSyncedAt(split, AUTO), 5);
  assert.equal(dirSyncedAt(split, '/state/gcroots'), 4);
});

test('dirSyncedAt: -1 for an fsync that failed, one of another descriptor, one before the open returned, or none', () => {
  const failed = [`100 openat(AT_FDCWD, "${AUTO}", O_RDONLY) = 26`, '101 fsync(26 <unfinished ...>', '101 <... fsync resumed>) = -1 EIO (Input/output error)'];
  assert.equal(dirSyncedAt(failed, AUTO), -1);
  const other = [`100 openat(AT_FDCWD, "${AUTO}", O_RDONLY) = 26`, '100 fsync(27) = 0'];
  assert.equal(dirSyncedAt(other, AUTO), -1);
  const early = [`100 openat(AT_FDCWD, "${AUTO}", O_RDONLY <unfinished ...>`, '101 fsync(26) = 0', '100 <... openat resumed>) = 26'];
  assert.equal(dirSyncedAt(early, AUTO), -1, 'a descriptor number synced before this open returned is another file');
  const missing = [`100 openat(AT_FDCWD, "${AUTO}", O_RDONLY) = -1 ENOENT (No such file or directory)`];
  assert.equal(dirSyncedAt(missing, AUTO), -1);
  assert.equal(dirSyncedAt([], AUTO), -1);
});
