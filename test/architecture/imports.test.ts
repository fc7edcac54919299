// The folder tree is the architecture: src/hash/ is a leaf, and no folder of
// src/ depends, however indirectly, on a folder that depends on it.
//
// Every src/**/*.ts file's imports are read from its text: static imports
// and re-exports, `import('…')` with a string literal, and
// `new URL('…', import.meta.url)` (how a worker thread's entry file is
// loaded). Type-only imports count: a cycle through types still means
// neither folder can be read, changed or tested without the other, and
// the layering is a design property, not only a runtime one.
//
// A file in src/ itself (src/errors.ts) counts as its own unit; src/errors.ts
// is the one module every layer may use, so it must import nothing from src/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';

// dist/test/architecture -> the repository root.
const root = fileURLToPath(new URL('../../../', import.meta.url));
const src = path.join(root, 'src');

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every module specifier in `text`, comments removed first. */
export function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
  const out: string[] = [];
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\bnew\s+URL\s*\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]!);
  return out;
}

/** src-relative path of the module `spec` names from `file`, or undefined when it is outside src/. */
function resolve(file: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const abs = path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts');
  const rel = path.relative(src, abs);
  return rel.startsWith('..') ? undefined : rel;
}

/** The folder of src/ a file belongs to (its first path segment), or the file itself at the top. */
function unit(rel: string): string {
  const parts = rel.split(path.sep);
  return parts.length > 1 ? `${parts[0]}/` : parts[0]!;
}

interface Edge {
  readonly from: string;
  readonly to: string;
}

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const file of walk(src)) {
    const from = path.relative(src, file);
    for (const spec of specifiers(readFileSync(file, 'utf8'))) {
      const to = resolve(file, spec);
      if (to !== undefined) out.push({ from, to });
    }
  }
  return out;
}

/** The strongly connected components with more than one node: each holds at least one cycle. */
function tangles(graph: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (n: string): void => {
    index.set(n, next);
    low.set(n, next++);
    stack.push(n);
    onStack.add(n);
    for (const m of graph.get(n) ?? []) {
      if (!index.has(m)) {
        visit(m);
        low.set(n, Math.min(low.get(n)!, low.get(m)!));
      } else if (onStack.has(m)) low.set(n, Math.min(low.get(n)!, index.get(m)!));
    }
    if (low.get(n) !== index.get(n)) return;
    const scc: string[] = [];
    for (;;) {
      const m = stack.pop()!;
      onStack.delete(m);
      scc.push(m);
      if (m === n) break;
    }
    if (scc.length > 1) out.push(scc.sort());
  };
  for (const n of [...graph.keys()].sort()) if (!index.has(n)) visit(n);
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** Each tangle with the imports that tie it, one line per pair of its nodes. */
function describe(found: string[][], all: readonly Edge[], key: (f: string) => string): string {
  const lines: string[] = [];
  for (const scc of found) {
    lines.push(`cycle among ${scc.join(', ')}:`);
    const members = new Set(scc);
    const pairs = new Map<string, string[]>();
    for (const e of all) {
      const a = key(e.from);
      const b = key(e.to);
      if (a === b || !members.has(a) || !members.has(b)) continue;
      const k = `${a} -> ${b}`;
      if (!pairs.has(k)) pairs.set(k, []);
      pairs.get(k)!.push(`${e.from} imports ${e.to}`);
    }
    for (const [k, via] of [...pairs].sort()) lines.push(`  ${k}   (${via.join('; ')})`);
  }
  return lines.join('\n');
}

function graphOf(all: readonly Edge[], key: (f: string) => string): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  for (const e of all) {
    const a = key(e.from);
    const b = key(e.to);
    if (a === b) continue;
    if (!g.has(a)) g.set(a, new Set());
    g.get(a)!.add(b);
  }
  return g;
}

test('the import reader sees every form of import', () => {
  const text = [
    "import { a } from './a.js';",
    "import type { B } from '../b/b.js';",
    'import {\n  c,\n  type D,\n} from "./c.js";',
    "import * as e from './e.js';",
    "import './side-effect.js';",
    "export { f } from './f.js';",
    "export * from './g.js';",
    "const h = await import('./h.js');",
    "type I = typeof import('./i.js');",
    "new Worker(new URL('./j.js', import.meta.url));",
    "// import { no } from './commented.js';",
    "/* import { no } from './commented2.js'; */",
  ].join('\n');
  assert.deepEqual(specifiers(text).sort(), ['../b/b.js', './a.js', './c.js', './e.js', './f.js', './g.js', './h.js', './i.js', './j.js', './side-effect.js'].sort());
});

test('the cycle finder finds every cycle', () => {
  const g = new Map([
    ['a/', new Set(['b/'])],
    ['b/', new Set(['c/'])],
    ['c/', new Set(['a/', 'd/'])],
    ['d/', new Set(['e/'])],
    ['e/', new Set(['d/'])],
  ]);
  assert.deepEqual(tangles(g), [['a/', 'b/', 'c/'], ['d/', 'e/']]);
  assert.deepEqual(tangles(new Map([['a/', new Set(['b/'])]])), []);
});

test('no import cycle between the folders of src/', () => {
  const all = edges();
  assert.ok(all.length > 100, `read ${all.length} imports: the reader is broken`);
  const found = tangles(graphOf(all, unit));
  assert.equal(found.length, 0, `import cycles between folders of src/:\n${describe(found, all, unit)}`);
});

test('no import cycle between the files of src/', () => {
  const all = edges();
  const found = tangles(graphOf(all, (f) => f));
  assert.equal(found.length, 0, `import cycles between files of src/:\n${describe(found, all, (f) => f)}`);
});

test('src/hash/ is a leaf: node builtins, its own files and src/errors.ts only', () => {
  const builtins = new Set(builtinModules);
  const bad: string[] = [];
  for (const file of walk(path.join(src, 'hash'))) {
    for (const spec of specifiers(readFileSync(file, 'utf8'))) {
      const to = resolve(file, spec);
      const ok = to === undefined ? spec.startsWith('node:') || builtins.has(spec) : to.startsWith(`hash${path.sep}`) || to === 'errors.ts';
      if (!ok) bad.push(`${path.relative(src, file)} imports ${spec}`);
    }
  }
  assert.deepEqual(bad, []);
});

test('src/errors.ts imports only the registry of codes, and the registry nothing from src/', () => {
  const errors = path.join(src, 'errors.ts');
  const fromErrors = specifiers(readFileSync(errors, 'utf8')).filter((s) => resolve(errors, s) !== undefined);
  assert.deepEqual([...new Set(fromErrors)], ['./error-codes.js']);
  const codes = path.join(src, 'error-codes.ts');
  const fromCodes = specifiers(readFileSync(codes, 'utf8')).filter((s) => resolve(codes, s) !== undefined);
  assert.deepEqual(fromCodes, []);
});
