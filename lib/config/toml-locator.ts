/**
 * Where a key or value sits in a TOML text, as line and column.
 *
 * smol-toml gives positions for syntax errors only; a schema error ("invalid
 * mode '0669'") must point at the line too, or a user with a long file has to
 * hunt for it. This is a small scanner, not a second parser: it runs only on
 * text smol-toml has already accepted, and records for every key path
 * (`['vm', 'win10', 'looking-glass', 'mode']`, array elements as numbers) the
 * offset of its key and of its value. It understands table headers (quoted
 * keys too: `[vm."win 10"]`), arrays of tables, dotted keys, inline tables,
 * arrays, all four string forms and comments.
 *
 * Lines and columns count from 1, columns in UTF-16 code units, exactly as
 * smol-toml's `TomlError` does, so both kinds of error agree.
 */

export type PathSegment = string | number;

export interface TomlPosition {
  readonly line: number;
  readonly column: number;
}

interface KeySegment {
  readonly name: string;
  readonly at: number;
}

const BARE_KEY_RE = /[A-Za-z0-9_-]+/y;
const BARE_KEY_ONLY_RE = /^[A-Za-z0-9_-]+$/;

const ESCAPES: Readonly<Record<string, string>> = {
  b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', e: '\u001b', '"': '"', '\\': '\\',
};

function id(path: readonly PathSegment[]): string {
  return JSON.stringify(path);
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
  readonly #text: string;
  readonly #lineStarts: number[] = [0];
  readonly #keys = new Map<string, number>();
  readonly #values = new Map<string, number>();
  #i = 0;

  /** `text` must be a document smol-toml parsed without error. */
  constructor(text: string) {
    this.#text = text;
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.#lineStarts.push(i + 1);
    this.#scanDocument();
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

  #scanDocument(): void {
    const text = this.#text;
    const arrayCounts = new Map<string, number>();
    let table: PathSegment[] = [];
    for (;;) {
      this.#skipBlank(true);
      if (this.#i >= text.length) return;
      const before = this.#i;
      if (text[this.#i] === '[') {
        const start = this.#i;
        const isArray = text[this.#i + 1] === '[';
        this.#i += isArray ? 2 : 1;
        const segments = this.#readKey();
        this.#skipBlank(false);
        this.#i += isArray ? 2 : 1; // `]` or `]]`
        let path: PathSegment[] = [];
        segments.forEach((segment, n) => {
          path = [...path, segment.name];
          const last = n === segments.length - 1;
          this.#record(this.#keys, path, segment.at, last);
          this.#record(this.#values, path, start, last && !isArray);
        });
        if (isArray) {
          const count = arrayCounts.get(id(path)) ?? 0;
          arrayCounts.set(id(path), count + 1);
          path = [...path, count];
          this.#record(this.#keys, path, start, true);
          this.#record(this.#values, path, start, true);
        }
        table = path;
      } else {
        this.#readKeyValue(table);
      }
      if (this.#i === before) return; // cannot happen on valid TOML; never loop forever
    }
  }

  #readKeyValue(base: readonly PathSegment[]): void {
    const segments = this.#readKey();
    let path = [...base];
    segments.forEach((segment, n) => {
      path = [...path, segment.name];
      const last = n === segments.length - 1;
      this.#record(this.#keys, path, segment.at, last);
      // A dotted key's intermediate tables are "at" their first key.
      if (!last) this.#record(this.#values, path, segment.at, false);
    });
    this.#skipBlank(false);
    if (this.#text[this.#i] === '=') this.#i++;
    this.#skipBlank(false);
    this.#readValue(path);
  }

  #readValue(path: readonly PathSegment[]): void {
    const text = this.#text;
    this.#record(this.#values, path, this.#i, true);
    const c = text[this.#i];
    if (c === '"' || c === "'") {
      this.#skipString();
    } else if (c === '[') {
      this.#i++;
      for (let n = 0; ; n++) {
        this.#skipBlank(true);
        if (this.#i >= text.length) return;
        if (text[this.#i] === ']') {
          this.#i++;
          return;
        }
        this.#readValue([...path, n]);
        this.#skipBlank(true);
        if (text[this.#i] === ',') this.#i++;
      }
    } else if (c === '{') {
      this.#i++;
      for (;;) {
        this.#skipBlank(true); // TOML 1.1 allows newlines in inline tables
        if (this.#i >= text.length) return;
        if (text[this.#i] === '}') {
          this.#i++;
          return;
        }
        this.#readKeyValue(path);
        this.#skipBlank(true);
        if (text[this.#i] === ',') this.#i++;
      }
    } else {
      // Numbers, booleans, dates (which may contain a space): up to a delimiter.
      while (this.#i < text.length && !',]}#\r\n'.includes(text[this.#i]!)) this.#i++;
    }
  }

  #readKey(): KeySegment[] {
    const text = this.#text;
    const segments: KeySegment[] = [];
    for (;;) {
      this.#skipBlank(false);
      const at = this.#i;
      const c = text[at];
      let name: string;
      if (c === '"') name = this.#readBasicString();
      else if (c === "'") {
        const end = text.indexOf("'", at + 1);
        name = text.slice(at + 1, end);
        this.#i = end + 1;
      } else {
        BARE_KEY_RE.lastIndex = at;
        const match = BARE_KEY_RE.exec(text);
        name = match?.[0] ?? '';
        this.#i = at + name.length;
      }
      segments.push({ name, at });
      this.#skipBlank(false);
      if (text[this.#i] !== '.' || this.#i === at) return segments;
      this.#i++;
    }
  }

  /** A single-line basic string at the cursor, escapes decoded. */
  #readBasicString(): string {
    const text = this.#text;
    let out = '';
    this.#i++;
    while (this.#i < text.length && text[this.#i] !== '"') {
      const c = text[this.#i]!;
      if (c !== '\\') {
        out += c;
        this.#i++;
        continue;
      }
      const e = text[this.#i + 1]!;
      const width = e === 'u' ? 4 : e === 'U' ? 8 : e === 'x' ? 2 : 0;
      if (width > 0) {
        out += String.fromCodePoint(Number.parseInt(text.slice(this.#i + 2, this.#i + 2 + width), 16));
        this.#i += 2 + width;
      } else {
        out += ESCAPES[e] ?? e;
        this.#i += 2;
      }
    }
    this.#i++;
    return out;
  }

  #skipString(): void {
    const text = this.#text;
    const quote = text[this.#i]!;
    const escapes = quote === '"';
    if (text.startsWith(quote.repeat(3), this.#i)) {
      this.#i += 3;
      while (this.#i < text.length) {
        if (escapes && text[this.#i] === '\\') this.#i += 2;
        else if (text.startsWith(quote.repeat(3), this.#i)) {
          this.#i += 3;
          // Up to two quotes right before the delimiter belong to the content.
          for (let extra = 0; extra < 2 && text[this.#i] === quote; extra++) this.#i++;
          return;
        } else this.#i++;
      }
      return;
    }
    this.#i++;
    while (this.#i < text.length && text[this.#i] !== quote) this.#i += escapes && text[this.#i] === '\\' ? 2 : 1;
    this.#i++;
  }

  /** Spaces, tabs and comments; newlines too when `newlines`. */
  #skipBlank(newlines: boolean): void {
    const text = this.#text;
    while (this.#i < text.length) {
      const c = text[this.#i]!;
      if (c === ' ' || c === '\t' || (newlines && (c === '\n' || c === '\r'))) this.#i++;
      else if (c === '#') {
        while (this.#i < text.length && text[this.#i] !== '\n' && text[this.#i] !== '\r') this.#i++;
      } else return;
    }
  }
}
