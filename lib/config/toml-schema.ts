/**
 * valibot pieces for TOML tables, with the configuration's wording: `expected
 * a string, got integer 3`, `unknown key 'usr'; did you mean 'user'?`, and a
 * lib parser's InvalidArgs as the problem. The daemon's file (schema.ts) and
 * the agent's (lib/agent/agent-config.ts) are built from them, so both read
 * alike.
 */

import * as v from 'valibot';

import { InvalidArgs, q } from '../errors.js';
import { didYouMean } from '../names/did-you-mean.js';

/** How a TOML value is named in "expected X, got Y". */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return `string ${q(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  if (typeof value === 'number') return Number.isInteger(value) ? `integer ${value}` : `float ${value}`;
  if (typeof value === 'bigint') return `integer ${value}`;
  if (typeof value === 'boolean') return `boolean ${value}`;
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Date) return `datetime ${value.toISOString()}`;
  if (value !== null && typeof value === 'object') return 'a table';
  return String(value);
}

/** A TOML table: a plain object, not an array or a datetime (smol-toml's `TomlDate` is a `Date`). */
export function isTable(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date);
}

/** `Invalid mode ...` -> `invalid mode ...`: these messages follow a `path: `. */
export function lowerFirst(message: string): string {
  return /^[A-Z][a-z]/.test(message) ? message[0]!.toLowerCase() + message.slice(1) : message;
}

function str() {
  return v.string((issue) => `expected a string, got ${describeValue(issue.input)}`);
}

export function bool() {
  return v.boolean((issue) => `expected true or false, got ${describeValue(issue.input)}`);
}

export function list<T extends v.GenericSchema>(item: T) {
  return v.array(item, (issue) => `expected an array, got ${describeValue(issue.input)}`);
}

/** A string turned into `T` by one of lib's parsers; its InvalidArgs becomes the issue. */
export function parsed<T>(parse: (text: string) => T) {
  return v.pipe(
    str(),
    v.rawTransform<string, T>(({ dataset, addIssue, NEVER }) => {
      try {
        return parse(dataset.value);
      } catch (error) {
        if (!(error instanceof InvalidArgs)) throw error;
        addIssue({ message: lowerFirst(error.message) });
        return NEVER;
      }
    }),
  );
}

/** A table with exactly these keys: anything else is an unknown key, with a suggestion. */
export function table<const E extends v.ObjectEntries>(entries: E) {
  const known = Object.keys(entries);
  return v.pipe(
    v.custom<Record<string, unknown>>(isTable, (issue) => `expected a table, got ${describeValue(issue.input)}`),
    v.strictObject(entries, (issue) => {
      const key = String(issue.input);
      return `unknown key '${key}'${didYouMean(key, known)}`;
    }),
  );
}
