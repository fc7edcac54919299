/**
 * `npm run bench`: every benchmark, one after the other, each in its own
 * process (so one's memory and JIT state do not colour the next). Each
 * prints its own table; nothing here judges the figures.
 *
 * Usage: npm run bench [-- NAME...]   NAME: dump-path, path-info, upload, large-nar, hook-latency, daemon-idle, daemon-soak
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const all = ['dump-path', 'path-info', 'upload', 'large-nar', 'hook-latency', 'daemon-idle', 'daemon-soak'];
const chosen = process.argv.slice(2).filter((a) => all.includes(a));
if (process.env.NODE_EXTRA_CA_CERTS) {
  console.log('note: NODE_EXTRA_CA_CERTS is set; it adds tens of ms to every node start (the README figures were run with `env -u NODE_EXTRA_CA_CERTS npm run bench`)');
}
let failed = 0;
for (const name of chosen.length > 0 ? chosen : all) {
  console.log(`\n=== ${name} ===`);
  const r = spawnSync(process.execPath, [path.join(here, `${name}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.log(`(${name} failed with ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exit(failed === 0 ? 0 : 1);
