/**
 * A journal entry as data: priorities, field-name rules, journald's native
 * encoding, the size cut, and the text form for stderr. Pure functions; where
 * an entry goes (journald's socket or stderr) is journal.ts's concern.
 */
import { q } from '../errors.js';

/** syslog(3) priorities, as journald's `PRIORITY=` field takes them. */
export const LogPriority = {
  emerg: 0,
  alert: 1,
  crit: 2,
  err: 3,
  warning: 4,
  notice: 5,
  info: 6,
  debug: 7,
} as const;

export type Priority = (typeof LogPriority)[keyof typeof LogPriority];

type FieldValue = string | number | bigint | boolean | null | undefined;

/** Own fields of an entry, by name; `null`/`undefined` values are skipped. */
export type JournalFields = Readonly<Record<string, FieldValue>>;

export const DEFAULT_IDENTIFIER = 'vfio-hookd';

/** journald's default `LineMax=`; see the module comment. */
export const DEFAULT_MAX_ENTRY_BYTES = 48 * 1024;

/** The smallest `maxEntryBytes` accepted: room for the fixed fields and a useful message. */
export const MIN_MAX_ENTRY_BYTES = 1024;

export const FIELD_NAME_MAX = 64;

/** Fields set from the arguments of `log()`; passing them in `fields` is refused. */
export const ARGUMENT_FIELDS: ReadonlySet<string> = new Set(['MESSAGE', 'PRIORITY']);

/** Fields that only help journal queries; not repeated on stderr lines. */
const QUERY_ONLY_FIELDS: ReadonlySet<string> = new Set(['MESSAGE_ID', 'SYSLOG_IDENTIFIER', 'CODE_FILE', 'CODE_LINE', 'CODE_FUNC']);

/** journald's rule for a field name we may send (see the module comment). */
export function isValidFieldName(name: string): boolean {
  return name.length > 0 && name.length <= FIELD_NAME_MAX && /^[A-Z][A-Z0-9_]*$/.test(name);
}

export interface EntryField {
  name: string;
  value: Buffer;
}

function fieldSize(field: EntryField): number {
  // KEY=value\n, or KEY\n<u64 le length>value\n for a value with a newline.
  return field.name.length + field.value.length + (field.value.includes(0x0a) ? 10 : 2);
}

/**
 * journald's native protocol: `KEY=value\n` per field, or, for a value that
 * contains a newline, `KEY\n`, its length as a 64-bit little-endian integer,
 * the value, and `\n`.
 */
export function encodeEntry(fields: ReadonlyArray<readonly [name: string, value: string | Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, raw] of fields) {
    const value = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    if (value.includes(0x0a)) {
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(value.length));
      parts.push(Buffer.from(`${name}\n`, 'utf8'), length, value, Buffer.from('\n'));
    } else {
      parts.push(Buffer.from(`${name}=`, 'utf8'), value, Buffer.from('\n'));
    }
  }
  return Buffer.concat(parts);
}

/** The longest prefix of `value` of at most `bytes` bytes that does not split a UTF-8 character. */
function utf8Prefix(value: Buffer, bytes: number): Buffer {
  let end = Math.max(0, Math.min(bytes, value.length));
  // Step back over continuation bytes (10xxxxxx) so the cut lands before a character's first byte.
  while (end > 0 && end < value.length && ((value[end] ?? 0) & 0xc0) === 0x80) end--;
  return value.subarray(0, end);
}

/** Cut the longest values until the encoded entry fits in `maxBytes` (see the module comment). Mutates `fields`. */
export function fitEntry(fields: EntryField[], maxBytes: number): void {
  let size = fields.reduce((sum, f) => sum + fieldSize(f), 0);
  while (size > maxBytes) {
    let longest: EntryField | undefined;
    for (const f of fields) if (longest === undefined || f.value.length > longest.value.length) longest = f;
    if (longest === undefined || longest.value.length === 0) return;
    // The marker's digits are bounded by those of the whole value, so the cut is never too small.
    const markerMax = ` [${longest.value.length} bytes truncated]`.length;
    const kept = utf8Prefix(longest.value, longest.value.length - (size - maxBytes) - markerMax);
    const marker = Buffer.from(` [${longest.value.length - kept.length} bytes truncated]`);
    const before = fieldSize(longest);
    longest.value = kept.length + marker.length < longest.value.length ? Buffer.concat([kept, marker]) : Buffer.alloc(0);
    size += fieldSize(longest) - before;
  }
}

export function fieldText(value: Exclude<FieldValue, null | undefined>): string {
  return typeof value === 'string' ? value : String(value);
}

/** A field value on a stderr line: bare when it is one plain token, else quoted with control characters made visible. */
function stderrValue(value: string): string {
  return /^[^\s'"=[\]\\\u0000-\u001f\u007f]+$/.test(value) ? value : q(value);
}

/**
 * The stderr form of an entry: the message, own fields as ` [KEY=value ...]`,
 * `<N>` before every line unless `prefix` is false, each line ending in `\n`.
 */
export function formatStderr(
  priority: Priority,
  message: string,
  fields: ReadonlyArray<readonly [string, string]>,
  prefix: boolean,
): string {
  const shown = fields.filter(([name]) => !QUERY_ONLY_FIELDS.has(name)).map(([name, value]) => `${name}=${stderrValue(value)}`);
  const text = shown.length > 0 ? `${message} [${shown.join(' ')}]` : message;
  const lead = prefix ? `<${priority}>` : '';
  return text
    .split('\n')
    .map((line) => `${lead}${line}\n`)
    .join('');
}

export function isPriority(value: unknown): value is Priority {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 7;
}
