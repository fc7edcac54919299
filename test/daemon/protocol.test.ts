// The daemon's request parsing and line framing: garbage, oversized lines
// and hostile paths are refused with a reason; nothing throws.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LineSplitter, MAX_PATHS_PER_REQUEST, encodeLine } from '../../src/daemon/protocol.js';
import { parseRequest } from '../../src/daemon/request.js';
import { parseStorePath } from '../../src/store/store-path.js';
import { hookRequests } from '../../src/daemon/hook.js';
import { formatLogEvent } from '../../src/daemon/log.js';
import { fakePath } from './fakes.js';

const HASH = 'sbldylj3clbkc0aqvjjzfa6slp4zdvlj';
const GOOD = `/nix/store/${HASH}-hello-2.12.1`;
const DRV = `/nix/store/${HASH}-hello-2.12.1.drv`;

function enqueue(line: string) {
  const r = parseRequest(line, '/nix/store');
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.request.op, 'enqueue');
  return r.request as Extract<typeof r.request, { op: 'enqueue' }>;
}

test('a well-formed enqueue request: paths parsed, duplicates folded', () => {
  const other = fakePath('other');
  const r = enqueue(JSON.stringify({ op: 'enqueue', paths: [GOOD, other, GOOD], drv: DRV }));
  assert.deepEqual(r.targets.map((p) => p.path), [GOOD, other]);
  assert.deepEqual(r.rejected, []);
  assert.equal(r.drv?.path, DRV);
});

test('Nix 2.8.0: empty OUT_PATHS means the outputs of DRV_PATH', () => {
  const r = enqueue(JSON.stringify({ op: 'enqueue', paths: [], drv: DRV }));
  assert.deepEqual(r.targets.map((p) => p.path), [DRV]);
  // and the hook builds exactly that request from the environment Nix 2.8.0 gives it
  assert.deepEqual(hookRequests({ OUT_PATHS: '', DRV_PATH: DRV }), [{ op: 'enqueue', paths: [], drv: DRV }]);
  assert.deepEqual(hookRequests({ OUT_PATHS: ` ${GOOD}  ${GOOD}-x `, DRV_PATH: DRV })[0]?.paths, [GOOD, `${GOOD}-x`]);
  assert.deepEqual(hookRequests({}), []);
});

test('a status request', () => {
  const r = parseRequest('{"op":"status"}', '/nix/store');
  assert.deepEqual(r, { ok: true, request: { op: 'status' } });
});

test('garbage is an error answer, never a throw', () => {
  const cases: [string, RegExp][] = [
    ['', /not JSON/],
    ['not json', /not JSON/],
    ['{"op":"enqueue"', /not JSON/],
    ['[]', /not a JSON object/],
    ['null', /not a JSON object/],
    ['42', /not a JSON object/],
    ['"enqueue"', /not a JSON object/],
    ['{}', /unknown op/],
    ['{"op":"delete","paths":[]}', /unknown op "delete"/],
    ['{"op":{"x":1}}', /unknown op/],
    ['{"op":"status","paths":[]}', /no fields besides/],
    [`{"op":"enqueue","paths":"${GOOD}"}`, /'paths' is not a list/],
    ['{"op":"enqueue","paths":[1,2]}', /other than strings/],
    [`{"op":"enqueue","paths":["${GOOD}"],"extra":true}`, /unknown field "extra"/],
    ['{"op":"enqueue","paths":[]}', /needs 'paths' or 'drv'/],
    ['{"op":"enqueue","drv":7}', /'drv' is not a string/],
    ['{"__proto__":{"op":"status"}}', /unknown op/],
  ];
  for (const [line, want] of cases) {
    const r = parseRequest(line, '/nix/store');
    assert.equal(r.ok, false, line);
    if (!r.ok) assert.match(r.error, want, line);
  }
});

test('too many paths in one request is refused as a whole', () => {
  const paths = Array.from({ length: MAX_PATHS_PER_REQUEST + 1 }, () => GOOD);
  const r = parseRequest(JSON.stringify({ op: 'enqueue', paths }), '/nix/store');
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.error, /limit is 4096/);
});

test('hostile paths are rejected one by one, with a reason; good ones in the same request are kept', () => {
  const hostile = [
    '/etc/passwd',
    `/nix/store/${HASH}-x/../../../etc/shadow`,
    `/nix/store/../store/${HASH}-hello`,
    `/nix/store/${HASH}-..`,
    `/nix/store/${HASH}-hello/`,
    `/nix/store/${HASH}-hello/bin/sh`,
    `nix/store/${HASH}-hello`,
    `/nix/store/${HASH}-hel\u0000lo`,
    `/nix/store/${HASH}-hel\nlo`,
    `/nix/storex/${HASH}-hello`,
    `/nix/store/${'e'.repeat(32)}-hello`,
    `/nix/store/${HASH}-${'a'.repeat(5000)}`,
    '',
  ];
  const r = enqueue(JSON.stringify({ op: 'enqueue', paths: [...hostile, GOOD] }));
  assert.deepEqual(r.targets.map((p) => p.path), [GOOD]);
  assert.equal(r.rejected.length, hostile.length);
  for (const x of r.rejected) assert.match(x.reason, /not a store path of \/nix\/store|longer than/);
  // A drv that is not a .drv, or not a store path, is rejected too.
  const d = enqueue(JSON.stringify({ op: 'enqueue', paths: [], drv: GOOD }));
  assert.deepEqual(d.targets, []);
  assert.match(d.rejected[0]!.reason, /not a derivation/);
});

test('property: whatever the line, parseRequest answers and every accepted path is a store path', () => {
  const arbPath = fc.oneof(
    fc.string(),
    fc.constant(GOOD),
    fc.constantFrom('/', '..', '/nix/store/', `/nix/store/${HASH}-`, `/nix/store/${HASH}-a/..`),
    fc.string().map((s) => `/nix/store/${HASH}-${s}`),
  );
  const arbLine = fc.oneof(
    fc.string(),
    fc.json(),
    fc.record({ op: fc.constantFrom('enqueue', 'status', 'x'), paths: fc.array(arbPath, { maxLength: 8 }), drv: fc.option(arbPath) }).map((o) =>
      JSON.stringify(o),
    ),
  );
  fc.assert(
    fc.property(arbLine, (line) => {
      const r = parseRequest(line, '/nix/store');
      if (!r.ok || r.request.op !== 'enqueue') return;
      for (const t of r.request.targets) {
        // The referee: the strict store path parser accepts it as it is.
        assert.equal(parseStorePath(t.path).path, t.path);
        assert.ok(!t.path.includes('..') || t.name.includes('..'));
      }
    }),
    { numRuns: 2000 },
  );
});

test('LineSplitter: lines come out whole however the bytes are cut', () => {
  fc.assert(
    fc.property(fc.array(fc.string({ unit: 'binary' }).filter((s) => !s.includes('\n')), { maxLength: 10 }), fc.array(fc.nat(40)), (lines, cuts) => {
      const bytes = Buffer.from(lines.map((l) => `${l}\n`).join(''));
      const s = new LineSplitter(1 << 20);
      const out: string[] = [];
      let off = 0;
      for (const c of cuts) {
        out.push(...s.push(bytes.subarray(off, off + c)));
        off = Math.min(bytes.length, off + c);
      }
      out.push(...s.push(bytes.subarray(off)));
      assert.deepEqual(out, lines.map((l) => Buffer.from(l).toString('utf8')));
      assert.equal(s.pending, 0);
    }),
  );
});

test('LineSplitter: never holds more than the cap of an unfinished line', () => {
  const s = new LineSplitter(100);
  assert.deepEqual(s.push(Buffer.from('a'.repeat(60))), []);
  assert.equal(s.pending, 60);
  assert.deepEqual(s.push(Buffer.from('b'.repeat(41))), []);
  assert.ok(s.overflowed);
  assert.equal(s.pending, 0);
  assert.deepEqual(s.push(Buffer.from('\n{"op":"status"}\n')), [], 'nothing after an overflow');

  const t = new LineSplitter(10);
  assert.deepEqual(t.push(Buffer.from('0123456789\nabc')), ['0123456789'], 'exactly the cap is fine');
  assert.deepEqual(t.push(Buffer.from('x'.repeat(8))), []);
  assert.ok(t.overflowed, 'a line that grows past the cap across chunks');
});

test('encodeLine: one line, even for strings with newlines', () => {
  const line = encodeLine({ ok: false, error: 'a\nb' });
  assert.equal(line.indexOf('\n'), line.length - 1);
  assert.deepEqual(JSON.parse(line), { ok: false, error: 'a\nb' });
});

test('log lines: one line whatever a client sent, in the documented shapes', () => {
  const forged = formatLogEvent({ event: 'rejected', subject: '/etc/x\nnarpush daemon: uploaded /nix/store/fake', detail: 'bad\r\u0000' });
  assert.equal(forged.split('\n').length, 1);
  assert.equal(forged, 'narpush daemon: rejected /etc/x\\x0anarpush daemon: uploaded /nix/store/fake: bad\\x0d\\x00');
  assert.equal(formatLogEvent({ event: 'queued', subject: GOOD, detail: '(from the socket)' }), `narpush daemon: queued ${GOOD} (from the socket)`);
  assert.equal(formatLogEvent({ event: 'stopped', detail: '0 path(s) left' }), 'narpush daemon: stopped: 0 path(s) left');
});
