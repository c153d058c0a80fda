/**
 * Durations in the configuration: `write-timeout = "10s"`.
 *
 * A whole number and one unit, `ms`, `s`, `m` or `h`: `500ms`, `10s`, `2m`.
 * No bare numbers (is `10` seconds or milliseconds?), no fractions, no
 * combined forms: a value that needs them is more likely a mistake.
 */

import { InvalidArgs, q } from '../errors.js';

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_RE = /^([0-9]+)(ms|s|m|h)$/;

/**
 * Parse a duration into milliseconds, a positive safe integer.
 *
 * @throws InvalidArgs for anything else, naming the accepted form.
 */
export function parseDuration(text: string): number {
  const match = typeof text === 'string' ? DURATION_RE.exec(text) : null;
  if (!match) {
    throw new InvalidArgs(`Invalid duration ${q(text)}: expected a whole number and a unit (ms, s, m, h), e.g. '10s', '500ms' or '2m'`);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  if (ms === 0) throw new InvalidArgs(`Invalid duration ${q(text)}: must be greater than zero`);
  if (!Number.isSafeInteger(ms)) throw new InvalidArgs(`Invalid duration ${q(text)}: too long`);
  return ms;
}

/** `10000` -> `10s`, `90000` -> `90s`, `120000` -> `2m`: the largest unit that divides exactly. */
export function formatDuration(ms: number): string {
  if (ms % UNIT_MS['h']! === 0) return `${ms / UNIT_MS['h']!}h`;
  if (ms % UNIT_MS['m']! === 0) return `${ms / UNIT_MS['m']!}m`;
  if (ms % UNIT_MS['s']! === 0) return `${ms / UNIT_MS['s']!}s`;
  return `${ms}ms`;
}
