// A node:test reporter for scripts/run-tests.mjs: writes one JSON line with
// the runner's own closing counts (`tests`, `pass`, `fail`, ... as the spec
// and TAP reporters print them) and the failed tests of each file, so that
// the counts of several runner invocations can be added up.
export default async function* summaryReporter(source) {
  const counts = {};
  const failures = {};
  for await (const event of source) {
    if (event.type === 'test:diagnostic' && event.data.nesting === 0) {
      const m = /^(\w+) (\d+(?:\.\d+)?)$/.exec(event.data.message);
      if (m) counts[m[1]] = Number(m[2]);
    } else if (event.type === 'test:fail') {
      // A suite fails because a test in it did: count the test only.
      if (event.data.details?.type === 'suite' || event.data.details?.error?.failureType === 'subtestsFailed') continue;
      const file = event.data.file ?? event.data.name;
      failures[file] = (failures[file] ?? 0) + 1;
    }
  }
  yield `${JSON.stringify({ counts, failures })}\n`;
}
