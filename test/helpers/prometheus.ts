/**
 * A strict reader of the Prometheus text exposition format 0.0.4, for
 * tests: it throws, naming the line, on anything Prometheus would refuse or
 * that breaks the format's rules, and returns the metric families.
 *
 *   # HELP <name> <text, with \\ and \n escaped>
 *   # TYPE <name> counter|gauge|histogram|summary|untyped
 *   <name>[{<label>="<value, with \\ \" \n escaped>",...}] <float> [<int64 ms timestamp>]
 *
 * Checked: metric and label name grammar (no reserved `__` labels), label
 * value escapes, floats (Go's ParseFloat forms, NaN, +Inf, -Inf), at most one
 * HELP and one TYPE per family and TYPE before its samples, a family's lines
 * together, no repeated series, counters not negative; a histogram has
 * `_bucket` series with an `le` label, cumulative counts over increasing
 * bounds ending at +Inf, and `_count` equal to the +Inf bucket and `_sum`,
 * per label set.
 */

import { request } from 'node:http';

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
  readonly line: number;
}

export interface MetricFamily {
  readonly name: string;
  help?: string;
  type: MetricType;
  readonly samples: Sample[];
}

export class ExpositionError extends Error {
  constructor(
    readonly line: number,
    why: string,
  ) {
    super(`line ${line}: ${why}`);
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set<MetricType>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
// Go's strconv.ParseFloat: decimal or hex floats, with optional exponent; Inf/NaN spelled out.
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+)$/;
const INFINITY = /^[+-]?(?:inf|infinity)$/i;

export function parseFloatGo(s: string): number | undefined {
  if (/^nan$/i.test(s)) return NaN;
  if (INFINITY.test(s)) return s.startsWith('-') ? -Infinity : Infinity;
  if (!FLOAT.test(s)) return undefined;
  const n = /0[xX]/.test(s) ? hexFloat(s) : Number(s);
  return Number.isNaN(n) ? undefined : n;
}

function hexFloat(s: string): number {
  const m = /^([+-]?)0[xX]([0-9a-fA-F]*)\.?([0-9a-fA-F]*)[pP]([+-]?\d+)$/.exec(s)!;
  const mantissa = parseInt(`${m[2] || '0'}${m[3]}`, 16) / 16 ** m[3]!.length;
  return (m[1] === '-' ? -1 : 1) * mantissa * 2 ** Number(m[4]);
}

/** The family a sample belongs to: `x_bucket`, `x_sum`, `x_count` are of histogram or summary `x`. */
function familyOf(sample: string, families: ReadonlyMap<string, MetricFamily>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sample.endsWith(suffix)) continue;
    const base = sample.slice(0, -suffix.length);
    const f = families.get(base);
    if (f && (f.type === 'histogram' || (f.type === 'summary' && suffix !== '_bucket'))) return base;
  }
  return sample;
}

/** Parse `{a="x",b="y"}` starting at `s[0] === '{'`; returns the labels and the rest of the line. */
function parseLabels(s: string, line: number): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  const fail = (why: string): never => {
    throw new ExpositionError(line, why);
  };
  for (;;) {
    while (s[i] === ' ') i++;
    if (s[i] === '}') return { labels, rest: s.slice(i + 1) };
    const m = /^[^=\s}]*/.exec(s.slice(i))![0];
    if (!LABEL_NAME.test(m)) fail(`bad label name '${m}'`);
    if (m.startsWith('__')) fail(`label name '${m}' is reserved`);
    if (Object.hasOwn(labels, m)) fail(`label '${m}' repeated`);
    i += m.length;
    while (s[i] === ' ') i++;
    if (s[i] !== '=') fail(`'=' expected after label '${m}'`);
    i++;
    while (s[i] === ' ') i++;
    if (s[i] !== '"') fail(`label '${m}': value not quoted`);
    i++;
    let value = '';
    for (;;) {
      const c = s[i];
      if (c === undefined) fail(`label '${m}': unterminated value`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i + 1];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else fail(`label '${m}': bad escape '\\${e ?? ''}'`);
        i += 2;
        continue;
      }
      value += c;
      i++;
    }
    i++;
    labels[m] = value;
    while (s[i] === ' ') i++;
    if (s[i] === ',') {
      i++;
      continue;
    }
    if (s[i] !== '}') fail(`',' or '}' expected after label '${m}'`);
  }
}

function unescapeHelp(s: string, line: number): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') {
      out += s[i];
      continue;
    }
    const e = s[++i];
    if (e === '\\') out += '\\';
    else if (e === 'n') out += '\n';
    else throw new ExpositionError(line, `bad escape '\\${e ?? ''}' in a HELP line`);
  }
  return out;
}

function labelKey(labels: Readonly<Record<string, string>>, without?: string): string {
  return JSON.stringify(Object.entries(labels).filter(([k]) => k !== without).sort(([a], [b]) => (a < b ? -1 : 1)));
}

export function parseExposition(text: string): Map<string, MetricFamily> {
  const families = new Map<string, MetricFamily>();
  const seriesSeen = new Set<string>();
  const finished = new Set<string>();
  let current: string | undefined;
  if (text !== '' && !text.endsWith('\n')) throw new ExpositionError(text.split('\n').length, 'the last line has no newline');
  const lines = text.split('\n');
  lines.pop();
  const enter = (name: string, n: number): MetricFamily => {
    if (current !== name) {
      if (finished.has(name)) throw new ExpositionError(n, `lines of '${name}' are not together`);
      if (current !== undefined) finished.add(current);
      current = name;
    }
    let f = families.get(name);
    if (!f) {
      f = { name, type: 'untyped', samples: [] };
      families.set(name, f);
    }
    return f;
  };
  const types = new Set<string>();
  lines.forEach((raw, idx) => {
    const n = idx + 1;
    if (raw.trim() === '') return;
    if (raw.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(raw);
      if (!m) return; // an ordinary comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) throw new ExpositionError(n, `bad metric name '${name}'`);
      const f = enter(name!, n);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new ExpositionError(n, `second HELP for '${name}'`);
        f.help = unescapeHelp(rest, n);
      } else {
        if (types.has(name!)) throw new ExpositionError(n, `second TYPE for '${name}'`);
        if (f.samples.length > 0) throw new ExpositionError(n, `TYPE of '${name}' after its samples`);
        if (!TYPES.has(rest.trim() as MetricType)) throw new ExpositionError(n, `unknown type '${rest.trim()}'`);
        types.add(name!);
        f.type = rest.trim() as MetricType;
      }
      return;
    }
    const nm = /^[^\s{]*/.exec(raw)![0];
    if (!METRIC_NAME.test(nm)) throw new ExpositionError(n, `bad metric name '${nm}'`);
    let rest = raw.slice(nm.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, n));
    const fields = rest.trim().split(/\s+/);
    if (!/^\s/.test(rest) || fields.length < 1 || fields.length > 2 || fields[0] === '') {
      throw new ExpositionError(n, `'${raw}' is not 'name[{labels}] value [timestamp]'`);
    }
    const value = parseFloatGo(fields[0]!);
    if (value === undefined) throw new ExpositionError(n, `'${fields[0]}' is not a number`);
    if (fields[1] !== undefined && !/^-?\d{1,19}$/.test(fields[1])) throw new ExpositionError(n, `bad timestamp '${fields[1]}'`);
    const f = enter(familyOf(nm, families), n);
    const series = `${nm}${labelKey(labels)}`;
    if (seriesSeen.has(series)) throw new ExpositionError(n, `series ${nm}${JSON.stringify(labels)} repeated`);
    seriesSeen.add(series);
    if (f.type === 'counter' && !(value >= 0)) throw new ExpositionError(n, `counter '${nm}' is ${fields[0]}`);
    if (f.type === 'histogram' && nm === `${f.name}_bucket` && labels.le === undefined) throw new ExpositionError(n, `bucket without 'le'`);
    if (f.type === 'histogram' && nm === f.name) throw new ExpositionError(n, `histogram '${nm}' has a plain sample`);
    f.samples.push({ name: nm, labels, value, line: n });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families;
}

function checkHistogram(f: MetricFamily): void {
  const groups = new Map<string, { buckets: { le: number; value: number; line: number }[]; sum?: Sample; count?: Sample }>();
  const group = (s: Sample) => {
    const k = labelKey(s.labels, 'le');
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { buckets: [] }));
    return g;
  };
  for (const s of f.samples) {
    const g = group(s);
    if (s.name.endsWith('_bucket')) {
      const le = parseFloatGo(s.labels.le!);
      if (le === undefined || Number.isNaN(le)) throw new ExpositionError(s.line, `le="${s.labels.le}" is not a number`);
      g.buckets.push({ le, value: s.value, line: s.line });
    } else if (s.name.endsWith('_sum')) g.sum = s;
    else g.count = s;
  }
  for (const g of groups.values()) {
    const at = g.buckets[0]?.line ?? g.count?.line ?? g.sum?.line ?? 0;
    if (g.buckets.length === 0) throw new ExpositionError(at, `histogram '${f.name}' has no buckets`);
    for (let i = 1; i < g.buckets.length; i++) {
      const [a, b] = [g.buckets[i - 1]!, g.buckets[i]!];
      if (!(b.le > a.le)) throw new ExpositionError(b.line, `'${f.name}' buckets not in increasing le order`);
      if (b.value < a.value) throw new ExpositionError(b.line, `'${f.name}' bucket counts not cumulative`);
    }
    const last = g.buckets[g.buckets.length - 1]!;
    if (last.le !== Infinity) throw new ExpositionError(last.line, `histogram '${f.name}' has no le="+Inf" bucket`);
    if (!g.count) throw new ExpositionError(at, `histogram '${f.name}' has no _count`);
    if (!g.sum) throw new ExpositionError(at, `histogram '${f.name}' has no _sum`);
    if (g.count.value !== last.value) throw new ExpositionError(g.count.line, `'${f.name}_count' ${g.count.value} is not the +Inf bucket's ${last.value}`);
  }
}

/** The value of one series; throws when it is missing. */
export function sampleValue(families: ReadonlyMap<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && labelKey(s.labels) === labelKey(labels)) return s.value;
    }
  }
  throw new Error(`no series ${name}${JSON.stringify(labels)}`);
}

/** GET `url` without keep-alive: the status and the body as text. */
export function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`no answer from ${url}`)));
    req.end();
  });
}
