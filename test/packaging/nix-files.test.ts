/**
 * Packaging checks that need no nixpkgs: every .nix file parses; the pure
 * helpers in nix/lib.nix agree with the CLI they describe; the daemon
 * command line the NixOS module and contrib/ generate is accepted by the
 * real `narpush daemon`, which then uploads what the generated hook hands
 * it; and the systemd units (contrib/ and the module's, rendered) pass
 * `systemd-analyze verify`. flake.nix and the module are evaluated against
 * test/packaging/stub-nixpkgs.nix, a builtins-only model of nixpkgs.
 *
 * The flake itself (buildNpmPackage, the VM tests) needs nixpkgs and is
 * not built here.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile, chmod, access } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, runOk, narpush, REPO_ROOT, NARPUSH_BIN } from '../helpers/run.js';
import { nixEnv, nixBuildExpr, requireNix } from '../helpers/nix.js';
import { DEFAULT_SOCKET, DEFAULT_STATE_DIR } from '../../src/daemon/hook.js';
import { DEFAULT_JOBS } from '../../src/cli/upload-settings.js';
import { compressionLevel } from '../../src/cache/compression.js';
import { parseListenAddress } from '../../src/daemon/listen-address.js';
import { DEFAULT_UPSTREAM_KEYS } from '../../src/cache/upstream.js';

const NIX_LIB = path.join(REPO_ROOT, 'nix', 'lib.nix');
const STUB = path.join(REPO_ROOT, 'test', 'packaging', 'stub-nixpkgs.nix');
const CONTRIB = path.join(REPO_ROOT, 'contrib');

/** Evaluate a Nix expression strictly and return it as JSON. */
async function nixEval(expr: string): Promise<unknown> {
  await requireNix();
  const r = await runOk('nix-instantiate', ['--eval', '--strict', '--json', '-E', expr], { env: nixEnv() });
  return JSON.parse(r.stdout.toString('utf8'));
}

const nixStr = (s: string): string => JSON.stringify(s).replace(/\$\{/g, '\\${');

/** Tracked and new (not ignored) files of the checkout; walks the tree where there is no git. */
async function repoNixFiles(): Promise<string[]> {
  const git = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard', '--', '*.nix']).catch(() => undefined);
  if (git && git.code === 0) {
    return [...new Set(git.stdout.toString('utf8').split('\0').filter(Boolean))]
      .filter((f) => existsSync(path.join(REPO_ROOT, f)))
      .sort();
  }
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(path.join(REPO_ROOT, dir), { withFileTypes: true })) {
      if (['node_modules', 'dist', '.git'].includes(e.name)) continue;
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) await walk(rel);
      else if (e.name.endsWith('.nix')) out.push(rel);
    }
  };
  await walk('');
  return out.sort();
}

async function parses(file: string): Promise<{ ok: boolean; stderr: string }> {
  const r = await run('nix-instantiate', ['--parse', file], { env: nixEnv() });
  return { ok: r.code === 0, stderr: r.stderr };
}

/** Split a systemd Exec line into words (quotes and backslash escapes, as systemd does for these units). */
function systemdWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  }
  return words;
}

/** The value of `key` in a unit file, with `\` line continuations joined. */
function unitValue(text: string, key: string): string {
  const joined = text.replace(/\\\n\s*/g, ' ');
  const line = joined.split('\n').find((l) => l.startsWith(`${key}=`));
  assert.ok(line, `${key}= not found`);
  return line.slice(key.length + 1).trim();
}

/** The long flags `narpush <command> --help` lists. */
async function helpFlags(command: string): Promise<Set<string>> {
  const r = await narpush([command, '--help']);
  assert.equal(r.code, 0, `narpush ${command} --help failed: ${r.stderr}`);
  return new Set(r.stdout.toString('utf8').match(/--[a-z][a-z-]*/g) ?? []);
}

/** Start `bin/narpush <args>` and wait until `narpush status` answers on `socket`. */
async function startDaemon(args: readonly string[], socket: string): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [NARPUSH_BIN, ...args], { env: nixEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the daemon exited ${child.exitCode}: ${log}`);
    const r = await narpush(['status', '--socket', socket, '--json']);
    if (r.code === 0) return { child, log: () => log };
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the daemon did not answer on ${socket} within 30 s: ${log}`);
    }
    await new Promise((r2) => setTimeout(r2, 200));
  }
}

async function stopDaemon(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

async function waitFor(file: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await access(file);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${file} did not appear within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

describe('every .nix file in the repository parses', () => {
  it('finds the packaging files and parses each with nix-instantiate --parse', async () => {
    await requireNix();
    const files = await repoNixFiles();
    for (const f of ['flake.nix', 'nix/package.nix', 'nix/module.nix', 'nix/lib.nix', 'nix/tests/vm-test.nix']) {
      assert.ok(files.includes(f), `${f} is missing from ${files.join(', ')}`);
    }
    const failures: string[] = [];
    for (const f of files) {
      const r = await parses(path.join(REPO_ROOT, f));
      if (!r.ok) failures.push(`${f}: ${r.stderr.trim()}`);
    }
    assert.deepEqual(failures, []);
  });

  it('the same check rejects a file with a syntax error', async () => {
    await requireNix();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'narpush-nix-parse-'));
    try {
      const good = path.join(dir, 'good.nix');
      const bad = path.join(dir, 'bad.nix');
      await writeFile(good, '{ a = 1; b = [ "x" ]; }\n');
      await writeFile(bad, '{ a = 1; b = [ "x" ; }\n');
      assert.equal((await parses(good)).ok, true);
      const r = await parses(bad);
      assert.equal(r.ok, false);
      assert.match(r.stderr, /syntax error/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('nix/lib.nix agrees with the CLI', () => {
  it('has the defaults of the hook and the daemon', async () => {
    const d = (await nixEval(`(import ${NIX_LIB}).defaults`)) as Record<string, unknown>;
    assert.equal(d.socketPath, DEFAULT_SOCKET);
    assert.equal(d.stateDir, DEFAULT_STATE_DIR);
    assert.equal(d.jobs, DEFAULT_JOBS);
    assert.equal(d.compression, 'xz');
    assert.deepEqual(d.upstreamKeys, DEFAULT_UPSTREAM_KEYS);
  });

  it('upstream: the default key list, keys and caches as flags, --no-upstream-keys for caches alone, and --no-upstream when both lists are empty', async () => {
    const argsOf = async (extra: string): Promise<string[]> =>
      (await nixEval(`(import ${NIX_LIB}).daemonArgs { uploadTo = "s3://b"; ${extra} }`)) as string[];
    const pairs = (args: string[], flag: string): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
    const def = await argsOf('');
    assert.deepEqual(pairs(def, '--upstream-key'), ['cache.nixos.org-1']);
    assert.ok(!def.includes('--no-upstream'));
    const both = await argsOf('upstreamKeys = [ "a-1" "b-1" ]; upstreamCaches = [ "https://cache.nixos.org" "file:///srv/c" ];');
    assert.deepEqual(pairs(both, '--upstream-key'), ['a-1', 'b-1']);
    assert.deepEqual(pairs(both, '--upstream'), ['https://cache.nixos.org', 'file:///srv/c']);
    assert.ok(!both.includes('--no-upstream-keys'));
    const off = await argsOf('upstreamKeys = [ ];');
    assert.ok(off.includes('--no-upstream'));
    assert.ok(!off.includes('--upstream-key') && !off.includes('--no-upstream-keys'));
    const cachesOnly = await argsOf('upstreamKeys = [ ]; upstreamCaches = [ "https://cache.nixos.org" ];');
    assert.ok(cachesOnly.includes('--no-upstream-keys'));
    assert.ok(!cachesOnly.includes('--upstream-key') && !cachesOnly.includes('--no-upstream'));
    assert.deepEqual(pairs(cachesOnly, '--upstream'), ['https://cache.nixos.org']);
    const flags = await helpFlags('daemon');
    for (const a of [...both, ...off, ...cachesOnly].filter((x) => x.startsWith('--'))) assert.ok(flags.has(a), `${a} is not a flag of narpush daemon`);
  });

  it('has the compression level ranges the CLI accepts', async () => {
    const levels = (await nixEval(`(import ${NIX_LIB}).compressionLevels`)) as Record<'xz' | 'zstd', { min: number; max: number }>;
    for (const method of ['xz', 'zstd'] as const) {
      const { min, max } = levels[method];
      assert.equal(compressionLevel(method, min), min);
      assert.equal(compressionLevel(method, max), max);
      assert.throws(() => compressionLevel(method, min - 1));
      assert.throws(() => compressionLevel(method, max + 1));
    }
  });

  it('passes only flags that `narpush daemon --help` lists', async () => {
    const args = (await nixEval(
      `(import ${NIX_LIB}).daemonArgs { uploadTo = "s3://b"; secretKeyFiles = [ "/k" ]; compressionLevel = 3; metricsListen = "127.0.0.1:9101"; buildLogs = true; }`,
    )) as string[];
    assert.equal(args[0], 'daemon');
    assert.ok(args.includes('--build-logs'));
    assert.equal(args[args.indexOf('--metrics-listen') + 1], '127.0.0.1:9101');
    const flags = await helpFlags('daemon');
    for (const a of args.filter((x) => x.startsWith('--'))) assert.ok(flags.has(a), `${a} is not a flag of narpush daemon`);
  });

  it('quotes systemd words so that systemd reads them back unchanged', async () => {
    const samples = ['plain', 'with space', 'a"quote', 'back\\slash', '100%', '$HOME', 's3://b?region=x&endpoint=http://m:9000'];
    const quoted = (await nixEval(`map (import ${NIX_LIB}).systemdArg (builtins.fromJSON ${nixStr(JSON.stringify(samples))})`)) as string[];
    // systemd: inside double quotes \x escapes x; %% is % and $$ is $.
    const back = quoted.map((q) => systemdWords(q)[0]!.replace(/%%/g, '%').replace(/\$\$/g, '$'));
    assert.deepEqual(back, samples);
  });

  it('isListenAddress accepts every form the CLI accepts and refuses the wrong forms it refuses', async () => {
    const samples = ['127.0.0.1:9101', '[::1]:9101', '[::]:0', 'localhost:80', 'metrics.example.org:9101', '0.0.0.0:65535',
      '::1:9101', '127.0.0.1', '[::1]', ':9101', 'a b:1', '127.0.0.1:http', '[::1]:x', ''];
    const nix = (await nixEval(`map (import ${NIX_LIB}).isListenAddress (builtins.fromJSON ${nixStr(JSON.stringify(samples))})`)) as boolean[];
    const cli = samples.map((x) => parseListenAddress(x).ok);
    assert.deepEqual(nix, cli);
  });

  it('recovers the file:// directory and the StateDirectory name', async () => {
    const r = (await nixEval(`let l = import ${NIX_LIB}; in [
      (l.fileCacheDir "file:///srv/nix-cache?compression=zstd") (l.fileCacheDir "s3://bucket")
      (l.stateDirectoryName "/var/lib/narpush") (l.stateDirectoryName "/var/lib/a/b/") (l.stateDirectoryName "/srv/state")
    ]`)) as (string | null)[];
    assert.deepEqual(r, ['/srv/nix-cache', null, 'narpush', 'a/b', null]);
  });

  it('gives every lockfile entry the registry URL npm itself fetched it from', async () => {
    const lockFile = path.join(REPO_ROOT, 'package-lock.json');
    const lock = JSON.parse(await readFile(lockFile, 'utf8')) as { packages: Record<string, { integrity?: string }> };
    const fixed = (await nixEval(
      `builtins.mapAttrs (k: v: v.resolved or null) ((import ${NIX_LIB}).npmLockWithResolved (builtins.fromJSON (builtins.readFile ${lockFile}))).packages`,
    )) as Record<string, string | null>;
    const keys = Object.keys(lock.packages).filter((k) => k !== '');
    assert.ok(keys.length > 10);
    for (const k of keys) assert.match(fixed[k] ?? '', /^https:\/\/registry\.npmjs\.org\/.+\.tgz$/, k);

    // The referee: npm's own cache, filled by `npm ci`, records each tarball's URL and integrity.
    const cacheDir = (await run('npm', ['config', 'get', 'cache'])).stdout.toString('utf8').trim();
    const known = new Map<string, string>();
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else {
          for (const line of (await readFile(p, 'utf8')).split('\n')) {
            const m = /^[0-9a-f]+\t(\{.*\})$/.exec(line);
            if (!m) continue;
            const entry = JSON.parse(m[1]!) as { key?: string; integrity?: string };
            const url = entry.key?.replace(/^make-fetch-happen:request-cache:/, '');
            if (url?.endsWith('.tgz') && entry.integrity) known.set(url, entry.integrity);
          }
        }
      }
    };
    await walk(path.join(cacheDir, '_cacache', 'index-v5'));
    let compared = 0;
    for (const k of keys) {
      const integrity = known.get(fixed[k]!);
      if (integrity === undefined) continue;
      assert.equal(integrity, lock.packages[k]!.integrity, `${k}: ${fixed[k]}`);
      compared++;
    }
    assert.ok(compared > 0, `npm's cache (${cacheDir}) has none of the lockfile's tarballs: was this checkout installed with npm ci?`);
  });
});

describe('the module, contrib/ and the CLI fit together', () => {
  let dir: string;
  let secretKey: string;
  before(async () => {
    await requireNix();
    dir = await mkdtemp(path.join(os.tmpdir(), 'narpush-packaging-'));
    secretKey = path.join(dir, 'secret.key');
    await runOk('nix-store', ['--generate-binary-cache-key', 'packaging-test-1', secretKey, path.join(dir, 'public.key')], { env: nixEnv() });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("the module's daemon command line starts the daemon, and the generated hook hands it a build", async () => {
    const socket = path.join(dir, 'm.sock');
    const state = path.join(dir, 'm-state');
    const cache = path.join(dir, 'm-cache');
    const args = (await nixEval(`(import ${NIX_LIB}).daemonArgs {
      uploadTo = ${nixStr(`file://${cache}`)}; secretKeyFiles = [ ${nixStr(secretKey)} ];
      socketPath = ${nixStr(socket)}; stateDir = ${nixStr(state)}; jobs = 2; compression = "zstd"; compressionLevel = 5;
      metricsListen = "127.0.0.1:0"; extraArgs = [ "--retry-delay" "1" ];
    }`)) as string[];
    const { child, log } = await startDaemon(args, socket);
    try {
      // The wrapper as the module writes it (user root: no setpriv here), run as nix-daemon would.
      const script = path.join(dir, 'hook.sh');
      const text = (await nixEval(`(import ${NIX_LIB}).hookScript {
        shell = "/bin/sh"; hook = ${nixStr(path.join(REPO_ROOT, 'bin', 'narpush-hook'))}; setpriv = "/usr/bin/setpriv";
        socketPath = ${nixStr(socket)}; stateDir = ${nixStr(state)}; user = "root"; group = "root";
      }`)) as string;
      await writeFile(script, text);
      await chmod(script, 0o755);
      const [out] = await nixBuildExpr(`lib.mk { name = "packaging-hook"; script = "echo packaged > $out"; salt = "${path.basename(dir)}"; }`);
      const hook = await run(script, [], { env: { PATH: process.env.PATH, OUT_PATHS: out!, DRV_PATH: '' } });
      assert.equal(hook.code, 0, hook.stderr);
      assert.equal(hook.stderr, '', 'the hook was answered by the daemon, so it has nothing to say');
      const narinfo = path.join(cache, `${path.basename(out!).slice(0, 32)}.narinfo`);
      await waitFor(narinfo, 30_000);
      const text2 = await readFile(narinfo, 'utf8');
      assert.match(text2, /^Compression: zstd$/m);
      assert.match(text2, /^Sig: packaging-test-1:/m);
      const metrics = /metrics at (http:\/\/127\.0\.0\.1:\d+)\/metrics/.exec(log());
      assert.ok(metrics, log());
      const health = await fetch(`${metrics[1]}/healthz`);
      assert.equal(health.status, 200);
      assert.equal(await health.text(), 'ok\n');
    } finally {
      const code = await stopDaemon(child);
      assert.equal(code, 0, log());
    }
  });

  it('the setpriv line of the hook wrapper is valid util-linux syntax', async (t) => {
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
    if (!setpriv || process.getuid?.() !== 0) return t.skip('needs setpriv and root');
    const group = (await runOk('id', ['-gn', 'nobody'])).stdout.toString().trim();
    const text = (await nixEval(`(import ${NIX_LIB}).hookScript {
      shell = "/bin/sh"; hook = "/usr/bin/id"; setpriv = ${nixStr(setpriv)}; user = "nobody"; group = ${nixStr(group)};
    }`)) as string;
    assert.match(text, /--reuid='nobody' --regid='[^']+' --clear-groups/);
    const script = path.join(dir, 'setpriv-hook.sh');
    await writeFile(script, text);
    await chmod(script, 0o755);
    const r = await run(script, []);
    assert.equal(r.code, 0, r.stderr);
    // `id` run by the wrapper: the user and group the module gives, and no supplementary groups.
    const uid = (await runOk('id', ['-u', 'nobody'])).stdout.toString().trim();
    const gid = (await runOk('id', ['-g', 'nobody'])).stdout.toString().trim();
    assert.match(r.stdout.toString().trim(), new RegExp(`^uid=${uid}\\(nobody\\) gid=${gid}\\([^)]+\\) groups=${gid}\\([^)]+\\)$`));
  });

  it("contrib's hook wrapper is the module's, for the contrib paths", async () => {
    const contrib = await readFile(path.join(CONTRIB, 'nix', 'narpush-post-build-hook'), 'utf8');
    const generated = (await nixEval(`(import ${NIX_LIB}).hookScript {
      shell = "/bin/sh"; hook = "/usr/local/bin/narpush-hook"; setpriv = "/usr/bin/setpriv";
    }`)) as string;
    const code = (s: string): string[] =>
      s.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).map((l) => l.replace(/'/g, ''));
    assert.deepEqual(code(contrib), code(generated));
    assert.match(await readFile(path.join(CONTRIB, 'nix', 'nix.conf.snippet'), 'utf8'), /^post-build-hook = \/usr\/local\/bin\/narpush-post-build-hook$/m);
  });

  it("contrib's narpush.service runs the daemon with flags the CLI has", async () => {
    const unit = await readFile(path.join(CONTRIB, 'systemd', 'narpush.service'), 'utf8');
    const words = systemdWords(unitValue(unit, 'ExecStart'));
    assert.equal(words[0], '/usr/local/bin/narpush');
    assert.equal(words[1], 'daemon');
    const flags = await helpFlags('daemon');
    for (const w of words.filter((x) => x.startsWith('--'))) assert.ok(flags.has(w), `${w} is not a flag of narpush daemon`);
    assert.equal(words[words.indexOf('--socket') + 1], DEFAULT_SOCKET);
    assert.equal(words[words.indexOf('--state-dir') + 1], DEFAULT_STATE_DIR);
    assert.equal(unitValue(unit, 'LoadCredential'), 'secret-key:/etc/narpush/secret.key');
    assert.equal(words[words.indexOf('--secret-key-file') + 1], '%d/secret-key');
    const socketUnit = await readFile(path.join(CONTRIB, 'systemd', 'narpush.socket'), 'utf8');
    assert.equal(unitValue(socketUnit, 'ListenStream'), DEFAULT_SOCKET);
    assert.equal(unitValue(socketUnit, 'SocketMode'), '0660');

    // Run it, with the machine's paths moved into a temp dir.
    const socket = path.join(dir, 'c.sock');
    const map = new Map<string, string>([
      ['%d/secret-key', secretKey],
      [DEFAULT_SOCKET, socket],
      [DEFAULT_STATE_DIR, path.join(dir, 'c-state')],
    ]);
    const args = words.slice(1).map((w) => (w.startsWith('s3://') ? `file://${path.join(dir, 'c-cache')}` : (map.get(w) ?? w)));
    const { child, log } = await startDaemon(args, socket);
    assert.equal(await stopDaemon(child), 0, log());
  });

  it('systemd-analyze verify accepts the contrib units and the units the module generates', async (t) => {
    const probe = await run('systemd-analyze', ['--version']).catch(() => undefined);
    if (!probe || probe.code !== 0) return t.skip('systemd-analyze is not installed');
    const units = path.join(dir, 'units');
    await runOk('mkdir', ['-p', units]);
    // contrib/, with the CLI's path replaced by one that exists here.
    for (const name of ['narpush.service', 'narpush.socket', 'narpush-gc.service', 'narpush-gc.timer']) {
      const text = await readFile(path.join(CONTRIB, 'systemd', name), 'utf8');
      await writeFile(path.join(units, `contrib-${name}`), text.replaceAll('/usr/local/bin/narpush', '/bin/true').replace('Service=narpush.service', 'Service=contrib-narpush.service').replace(/Requires=narpush.socket/, 'Requires=contrib-narpush.socket'));
    }
    // The module, evaluated against the nixpkgs stand-in and rendered as NixOS renders units.
    const m = (await nixEval(`let
        s = import ${STUB} { };
        m = s.evalModule ${path.join(REPO_ROOT, 'nix', 'module.nix')} {
          enable = true; uploadTo = "file:///srv/cache"; secretKeyFile = "/etc/narpush/key"; environmentFile = "/etc/narpush/env";
        };
      in { service = m.config.systemd.services.narpush.serviceConfig; socket = m.config.systemd.sockets.narpush.socketConfig; }`)) as Record<
      'service' | 'socket',
      Record<string, unknown>
    >;
    const render = (section: string, cfg: Record<string, unknown>): string => {
      const lines = [`[${section}]`];
      for (const [k, v0] of Object.entries(cfg)) {
        let v = v0;
        if (v && typeof v === 'object' && (v as { _type?: string })._type === 'if') {
          const c = v as { condition: boolean; content: unknown };
          if (!c.condition) continue;
          v = c.content;
        }
        for (const x of Array.isArray(v) ? v : [v]) lines.push(`${k}=${typeof x === 'boolean' ? (x ? 'true' : 'false') : String(x)}`);
      }
      return `${lines.join('\n')}\n`;
    };
    const service = { ...m.service, ExecStart: `/bin/true ${String(m.service.ExecStart).split(' ').slice(1).join(' ')}` };
    await writeFile(path.join(units, 'module-narpush.service'), render('Service', service));
    await writeFile(path.join(units, 'module-narpush.socket'), render('Socket', { ...m.socket, Service: 'module-narpush.service' }));
    const names = ['contrib-narpush.socket', 'contrib-narpush.service', 'contrib-narpush-gc.service', 'contrib-narpush-gc.timer', 'module-narpush.socket', 'module-narpush.service'];
    const r = await run('systemd-analyze', ['verify', '--man=no', ...names.map((n) => `./${n}`)], { cwd: units });
    // verify exits 0 on unknown keys and bad values: what it says is the verdict.
    const complaints = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/Failed to .*(connect|bus)/i.test(l));
    assert.deepEqual(complaints, [], r.stderr);
    assert.equal(r.code, 0);
  });
});

describe('flake.nix and the module, evaluated against a nixpkgs stand-in', () => {
  const flakeExpr = (sel: string): string => `let
      s = import ${STUB} { };
      f = (import ${path.join(REPO_ROOT, 'flake.nix')}).outputs { self = f; nixpkgs = s.nixpkgs; };
    in ${sel}`;

  it('has the outputs issue 7 asks for, VM checks on Linux only', async () => {
    const r = (await nixEval(
      flakeExpr(`{
        top = builtins.attrNames f;
        inputs = (import ${path.join(REPO_ROOT, 'flake.nix')}).inputs.nixpkgs.url;
        linuxChecks = builtins.attrNames f.checks.x86_64-linux;
        darwinChecks = builtins.attrNames f.checks.aarch64-darwin;
        pname = f.packages.x86_64-linux.default._args.pname;
        version = f.packages.x86_64-linux.default._args.version;
        app = f.apps.x86_64-linux.default.program;
        hookApp = f.apps.x86_64-linux.narpush-hook.program;
        node = f.packages.x86_64-linux.default._args.nodejs.name;
        overlay = builtins.attrNames (f.overlays.default s.pkgs s.pkgs);
      }`),
    )) as Record<string, unknown>;
    const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
    for (const k of ['packages', 'apps', 'devShells', 'formatter', 'overlays', 'nixosModules', 'checks']) {
      assert.ok((r.top as string[]).includes(k), k);
    }
    assert.match(r.inputs as string, /^github:NixOS\/nixpkgs\//);
    assert.deepEqual(r.linuxChecks, ['package', 'test-suite', 'vm-test']);
    assert.deepEqual(r.darwinChecks, ['package']);
    assert.equal(r.pname, pkg.name);
    assert.equal(r.version, pkg.version);
    assert.match(r.app as string, /\/bin\/narpush$/);
    assert.match(r.hookApp as string, /\/bin\/narpush-hook$/);
    assert.deepEqual(r.overlay, ['narpush']);
  });

  const moduleExpr = (settings: string, sel: string): string => `let
      s = import ${STUB} { };
      m = s.evalModule ${path.join(REPO_ROOT, 'nix', 'module.nix')} (${settings});
    in ${sel}`;
  const failed = async (settings: string): Promise<string[]> =>
    (await nixEval(moduleExpr(settings, 'map (a: a.message) (builtins.filter (a: !a.assertion) m.config.assertions)'))) as string[];

  it('accepts a good configuration and wires socket, hook and service together', async () => {
    assert.deepEqual(await failed('{ enable = true; uploadTo = "s3://cache?region=eu-west-1"; secretKeyFile = "/run/keys/k"; }'), []);
    const r = (await nixEval(
      moduleExpr(
        '{ enable = true; uploadTo = "s3://cache"; secretKeyFile = "/run/keys/k"; environmentFile = "/run/keys/env"; compression = "zstd"; compressionLevel = 19; }',
        `{ exec = m.config.systemd.services.narpush.serviceConfig.ExecStart; cred = m.config.systemd.services.narpush.serviceConfig.LoadCredential;
           env = m.config.systemd.services.narpush.serviceConfig.EnvironmentFile; listen = m.config.systemd.sockets.narpush.socketConfig.ListenStream;
           hookEnv = m.config.systemd.services.narpush.environment; hook = m.config.nix.settings.post-build-hook;
           users = builtins.attrNames m.config.users.users.content; tmpfiles = m.config.systemd.tmpfiles.rules; enabled = m.enabled; }`,
      ),
    )) as Record<string, unknown>;
    const words = systemdWords(r.exec as string);
    assert.deepEqual(words.slice(1, 4), ['daemon', '--to', 's3://cache']);
    assert.equal(words[words.indexOf('--compression-level') + 1], '19');
    assert.equal(words[words.indexOf('--secret-key-file') + 1], '%d/secret-key');
    assert.deepEqual(r.cred, ['secret-key:/run/keys/k']);
    assert.deepEqual(r.env, ['/run/keys/env']);
    assert.equal(r.listen, DEFAULT_SOCKET);
    assert.equal((r.hookEnv as Record<string, string>).NIX_REMOTE, 'daemon');
    assert.match(r.hook as string, /narpush-post-build-hook$/);
    assert.deepEqual(r.users, ['narpush']);
    assert.ok((r.tmpfiles as string[]).some((l) => l.startsWith(`d ${DEFAULT_STATE_DIR}/spool 0700 narpush narpush`)));
    assert.ok((r.tmpfiles as string[]).some((l) => l.startsWith(`d ${DEFAULT_STATE_DIR}/gcroots 0700 narpush narpush`)), 'GC roots of queued paths');
    assert.equal(r.enabled, true);
  });

  it('buildLogs: off by default, else --build-logs with bzip2 on the service PATH', async () => {
    const sel = `{ exec = m.config.systemd.services.narpush.serviceConfig.ExecStart; path = map toString m.config.systemd.services.narpush.path; }`;
    const off = (await nixEval(moduleExpr('{ enable = true; uploadTo = "s3://cache"; }', sel))) as { exec: string; path: string[] };
    assert.ok(!systemdWords(off.exec).includes('--build-logs'), off.exec);
    const on = (await nixEval(moduleExpr('{ enable = true; uploadTo = "s3://cache"; buildLogs = true; }', sel))) as typeof off;
    assert.ok(systemdWords(on.exec).includes('--build-logs'), on.exec);
    assert.ok(on.path.some((p) => /bzip2/.test(p)), on.path.join(' '));
  });

  it('metricsListen: off by default, else --metrics-listen, over address families the service may use', async () => {
    const sel = `{ exec = m.config.systemd.services.narpush.serviceConfig.ExecStart; families = m.config.systemd.services.narpush.serviceConfig.RestrictAddressFamilies; }`;
    const off = (await nixEval(moduleExpr('{ enable = true; uploadTo = "s3://cache"; }', sel))) as { exec: string; families: string[] };
    assert.ok(!systemdWords(off.exec).includes('--metrics-listen'), off.exec);
    for (const listen of ['127.0.0.1:9101', '[::1]:9101']) {
      const on = (await nixEval(moduleExpr(`{ enable = true; uploadTo = "s3://cache"; metricsListen = ${nixStr(listen)}; }`, sel))) as typeof off;
      const words = systemdWords(on.exec);
      assert.equal(words[words.indexOf('--metrics-listen') + 1], listen);
      assert.equal(parseListenAddress(listen).ok, true);
    }
    // The endpoint is a TCP socket: IPv4 and IPv6 must stay allowed.
    for (const family of ['AF_INET', 'AF_INET6']) assert.ok(off.families.includes(family), family);
    assert.deepEqual(await failed('{ enable = true; uploadTo = "s3://c"; metricsListen = "[::1]:9101"; }'), []);
  });

  it('gc: a timer and a oneshot service whose command line the real narpush gc accepts', async () => {
    const sel = `{ off = m.config.systemd.services.narpush-gc.condition; svc = m.config.systemd.services.narpush-gc.content.serviceConfig;
      timer = m.config.systemd.timers.narpush-gc.content.timerConfig; exec = m.config.systemd.services.narpush.serviceConfig.ExecStart; }`;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'narpush-module-gc-'));
    try {
      await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
      const settings = `{ enable = true; uploadTo = "file://${dir}"; narinfoRefreshAge = "2d"; gc = { enable = true; keepSince = "14d"; dates = "Sun 03:00"; keep = [ "/nix/store/00000000000000000000000000000000-pinned" ]; }; }`;
      const r = (await nixEval(moduleExpr(settings, sel))) as { off: boolean; svc: Record<string, unknown>; timer: Record<string, unknown>; exec: string };
      assert.equal(r.off, true);
      assert.equal(r.timer.OnCalendar, 'Sun 03:00');
      assert.equal(r.svc.Type, 'oneshot');
      const words = systemdWords(r.svc.ExecStart as string);
      assert.deepEqual(words.slice(1), ['gc', '--cache', `file://${dir}`, '--keep-since', '14d', '--keep', '/nix/store/00000000000000000000000000000000-pinned']);
      const daemon = systemdWords(r.exec);
      assert.equal(daemon[daemon.indexOf('--narinfo-refresh-age') + 1], '2d');
      const ran = await narpush(words.slice(1));
      assert.equal(ran.code, 0, ran.stderr);
      const disabled = (await nixEval(moduleExpr('{ enable = true; uploadTo = "s3://c"; }', 'm.config.systemd.timers.narpush-gc.condition'))) as boolean;
      assert.equal(disabled, false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad combinations with a message', async () => {
    const cases: [string, RegExp][] = [
      ['{ enable = true; uploadTo = "https://cache.example.org"; }', /uploadTo must be an s3:\/\/bucket/],
      ['{ enable = true; uploadTo = "s3://c"; secretKeyFile = "/nix/store/00000000000000000000000000000000-key"; }', /outside the Nix store/],
      ['{ enable = true; uploadTo = "s3://c"; secretKeyFile = "relative/key"; }', /absolute path/],
      ['{ enable = true; uploadTo = "s3://c"; environmentFile = "/nix/store/00000000000000000000000000000000-env"; }', /environmentFile/],
      ['{ enable = true; uploadTo = "s3://c?secret-key=/k"; }', /secretKeyFile, not secret-key=/],
      ['{ enable = true; uploadTo = "s3://c"; compression = "none"; compressionLevel = 3; }', /makes no sense/],
      ['{ enable = true; uploadTo = "s3://c"; compression = "xz"; compressionLevel = 12; }', /out of range for xz/],
      ['{ enable = true; uploadTo = "s3://c"; socketPath = "narpush.sock"; }', /absolute paths/],
      ['{ enable = true; uploadTo = "file:///nix/var/cache"; }', /outside \/nix/],
      ['{ enable = true; uploadTo = "s3://c"; metricsListen = "::1:9101"; }', /metricsListen must be HOST:PORT/],
      ['{ enable = true; uploadTo = "s3://c"; metricsListen = "9101"; }', /metricsListen must be HOST:PORT/],
    ];
    for (const [settings, why] of cases) {
      const messages = await failed(settings);
      assert.equal(messages.length, 1, `${settings}: ${messages.join(' | ')}`);
      assert.match(messages[0]!, why);
    }
  });
});
