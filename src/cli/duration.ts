/**
 * Durations as users type them: a whole or decimal number and a unit, e.g.
 * `30d`, `12h`, `90m`, `45s`, `2w` (several may follow each other: `1d12h`).
 * Parsed at the edge into milliseconds; a bad one is a one-line BAD_OPTION
 * error naming the flag.
 */
import { NarpushError } from '../errors.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

export function parseDuration(flag: string, text: string): number {
  const s = text.trim();
  const part = /(\d+(?:\.\d+)?)([smhdw])/gy;
  let ms = 0;
  let end = 0;
  for (let m = part.exec(s); m; m = part.exec(s)) {
    ms += Number(m[1]) * UNIT_MS[m[2]!]!;
    end = part.lastIndex;
  }
  if (s.length === 0 || end !== s.length || !Number.isFinite(ms)) {
    throw new NarpushError('BAD_OPTION', `${flag} takes a duration such as 30d, 12h, 90m or 45s, not '${text}'`);
  }
  return Math.round(ms);
}
