/**
 * Where a key or value sits in a TOML text, as line and column.
 *
 * smol-toml gives positions for syntax errors only; a schema error ("invalid
 * mode '0669'") must point at the line too, or a user with a long file has to
 * hunt for it. toml-eslint-parser reads the text a second time, into a tree
 * with offsets, and this records for every key path (`['vm', 'win10',
 * 'looking-glass', 'mode']`, array elements as numbers) the offset of its key
 * and of its value. It runs only on text smol-toml has already accepted.
 *
 * Lines and columns count from 1, columns in UTF-16 code units, exactly as
 * smol-toml's `TomlError` does, so both kinds of error agree.
 */

import { parseTOML, type AST } from 'toml-eslint-parser';

export type PathSegment = string | number;

export interface TomlPosition {
  readonly line: number;
  readonly column: number;
}

const BARE_KEY_ONLY_RE = /^[A-Za-z0-9_-]+$/;

function id(path: readonly PathSegment[]): string {
  return JSON.stringify(path);
}

function keyName(segment: AST.TOMLBare | AST.TOMLQuoted): string {
  return segment.type === 'TOMLBare' ? segment.name : segment.value;
}

/**
 * A key path as a user would write it: `vm."win 10".looking-glass.mode`,
 * array elements as `devices[1]`.
 */
export function formatTomlPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += (out === '' ? '' : '.') + (BARE_KEY_ONLY_RE.test(segment) ? segment : JSON.stringify(segment));
  }
  return out;
}

export class TomlLocator {
  readonly #lineStarts: number[] = [0];
  readonly #keys = new Map<string, number>();
  readonly #values = new Map<string, number>();

  /** `text` must be a document smol-toml parsed without error. */
  constructor(text: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.#lineStarts.push(i + 1);
    let program: AST.TOMLProgram;
    try {
      // TOML 1.1, as smol-toml reads it (newlines in inline tables, `\e`, `\xHH`).
      program = parseTOML(text, { tomlVersion: '1.1' });
    } catch {
      // Not expected for a text smol-toml accepted; every position is then line 1, column 1.
      return;
    }
    for (const node of program.body[0].body) {
      if (node.type === 'TOMLTable') this.#table(node);
      else this.#keyValue(node, []);
    }
  }

  /**
   * Where the key of `path` is written. A path not in the text (a missing
   * key) falls back to its nearest ancestor that is, and the empty path to
   * line 1, column 1.
   */
  keyPosition(path: readonly PathSegment[]): TomlPosition {
    return this.#find(path, this.#keys, this.#values);
  }

  /**
   * Where the value of `path` starts (for a table made by a header, the
   * header's `[`), with the same fallback as `keyPosition`.
   */
  valuePosition(path: readonly PathSegment[]): TomlPosition {
    return this.#find(path, this.#values, this.#keys);
  }

  /** Whether `path` is written in the text, as a key, a header or an array element. */
  has(path: readonly PathSegment[]): boolean {
    return this.#keys.has(id(path)) || this.#values.has(id(path));
  }

  #find(path: readonly PathSegment[], first: Map<string, number>, second: Map<string, number>): TomlPosition {
    const exact = first.get(id(path)) ?? second.get(id(path));
    if (exact !== undefined) return this.#position(exact);
    // An ancestor stands for a missing key: its header or value is where the key belongs.
    for (let n = path.length - 1; n > 0; n--) {
      const prefix = path.slice(0, n);
      const at = this.#values.get(id(prefix)) ?? this.#keys.get(id(prefix));
      if (at !== undefined) return this.#position(at);
    }
    return { line: 1, column: 1 };
  }

  #position(offset: number): TomlPosition {
    let lo = 0;
    let hi = this.#lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.#lineStarts[lo]! + 1 };
  }

  /** Record a position; `override` for the definition itself, first-wins for implicit parents. */
  #record(map: Map<string, number>, path: readonly PathSegment[], at: number, override: boolean): void {
    const key = id(path);
    if (override || !map.has(key)) map.set(key, at);
  }

  /**
   * A `[header]` or `[[header]]`: each key of the header at its segment, each
   * table it names at the header's `[` (an array of tables: its first
   * header, and each element at its own).
   */
  #table(table: AST.TOMLTable): void {
    const start = table.range[0];
    const isArray = table.kind === 'array';
    const segments = table.key.keys;
    // resolvedKey spells the element index after an array of tables: `[[a]]` is ['a', 0].
    const resolved = table.resolvedKey;
    const named = isArray ? resolved.length - 1 : resolved.length;
    const path: PathSegment[] = [];
    let n = 0;
    for (const part of resolved.slice(0, named)) {
      path.push(part);
      // The element of an enclosing array of tables, recorded by its own header.
      if (typeof part === 'number') continue;
      const segment = segments[n++]!;
      const last = n === segments.length;
      this.#record(this.#keys, path, segment.range[0], last);
      this.#record(this.#values, path, start, last && !isArray);
    }
    if (isArray) {
      path.push(resolved[named]!);
      this.#record(this.#keys, path, start, true);
      this.#record(this.#values, path, start, true);
    }
    for (const keyValue of table.body) this.#keyValue(keyValue, path);
  }

  #keyValue(node: AST.TOMLKeyValue, base: readonly PathSegment[]): void {
    const path = [...base];
    const segments = node.key.keys;
    segments.forEach((segment, n) => {
      path.push(keyName(segment));
      const last = n === segments.length - 1;
      this.#record(this.#keys, path, segment.range[0], last);
      // A dotted key's intermediate tables are "at" their first key.
      if (!last) this.#record(this.#values, path, segment.range[0], false);
    });
    this.#value(node.value, path);
  }

  #value(node: AST.TOMLContentNode, path: readonly PathSegment[]): void {
    this.#record(this.#values, path, node.range[0], true);
    if (node.type === 'TOMLArray') node.elements.forEach((element, n) => this.#value(element, [...path, n]));
    else if (node.type === 'TOMLInlineTable') for (const keyValue of node.body) this.#keyValue(keyValue, path);
  }
}
