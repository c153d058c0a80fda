/**
 * Structured logging for the daemon (the transport; the entry itself is
 * journal-entry.ts): one journal entry per call, with
 * `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER` and our own fields
 * (`VFIO_DOMAIN`, `PCI_ADDRESS`, `MESSAGE_ID`, ...).
 *
 * Where entries go, decided once when the `Journal` is made:
 *
 * - `$JOURNAL_STREAM` (`DEVICE:INODE`) equals the device and inode of our
 *   stderr: systemd connected stderr to journald, so entries go as datagrams
 *   in journald's native protocol to `/run/systemd/journal/socket`, fields
 *   and all (systemd.exec(5), "JOURNAL_STREAM").
 * - Otherwise (run by hand, under another supervisor, or stderr redirected):
 *   text lines on stderr. Each line starts with `<N>`, the priority, which
 *   systemd and journald read as the level (`SyslogLevelPrefix=`); on a TTY
 *   the prefix is left out. Own fields follow the message as
 *   ` [KEY=value KEY='v a l']` so the sentence stays first and readable;
 *   `MESSAGE_ID`, `SYSLOG_IDENTIFIER` and `CODE_*` are left out there (they
 *   only help journal queries). A multi-line message gets the prefix on
 *   every line.
 *
 * Field names (journald's rule, `journal_field_valid()`): `A-Z`, `0-9` and
 * `_`, not starting with `_` (reserved for fields journald adds itself) or a
 * digit, at most 64 characters. A field with any other name is dropped, not
 * renamed (a renamed field would silently miss every query for it), and
 * reported once per name through `onError` as `InvalidArgs`. `MESSAGE` and
 * `PRIORITY` come from the arguments and cannot be given as fields;
 * `SYSLOG_IDENTIFIER` can, to override the default for one entry. `null` and
 * `undefined` values are skipped; numbers and bigints are written in decimal,
 * booleans as `true`/`false`.
 *
 * Size: an entry is one datagram, and one we cannot send whole would need a
 * memfd passed with SCM_RIGHTS, which `unix-dgram` cannot do. So an entry is
 * kept under `maxEntryBytes` (default 48 KiB, journald's default `LineMax=`
 * for stream lines): while it is larger, its longest value (in practice the
 * MESSAGE) is cut at a UTF-8 character boundary and ends with
 * ` [N bytes truncated]`. If journald still refuses a datagram (or is not
 * there), that entry goes to stderr as a text line instead, and the failure
 * is reported once through `onError`.
 *
 * Logging never throws on a send or write failure; only a priority outside
 * 0..7 (a programming error) throws `InvalidArgs`.
 */
import fs from 'node:fs';
import tty from 'node:tty';

import { InvalidArgs, q } from '../errors.js';
import {
  ARGUMENT_FIELDS,
  DEFAULT_IDENTIFIER,
  DEFAULT_MAX_ENTRY_BYTES,
  FIELD_NAME_MAX,
  LogPriority,
  MIN_MAX_ENTRY_BYTES,
  encodeEntry,
  fieldText,
  fitEntry,
  formatStderr,
  isPriority,
  isValidFieldName,
  type EntryField,
  type JournalFields,
  type Priority,
} from './journal-entry.js';
import { DatagramError, type DatagramSender } from './datagram.js';
import { sendDatagram } from './_internal/unix-datagram.js';

/** Where journald listens for native-protocol datagrams. */
const JOURNAL_SOCKET = '/run/systemd/journal/socket';

export interface JournalOptions {
  /** `SYSLOG_IDENTIFIER` of every entry. Default `'vfio-hookd'`. */
  identifier?: string;
  /** Where `JOURNAL_STREAM` is read. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** The descriptor whose device and inode are compared with `JOURNAL_STREAM`, and whose TTY-ness drops the `<N>` prefix. Default 2 (stderr). */
  stderrFd?: number;
  /** journald's native socket. Default `/run/systemd/journal/socket`. */
  socketPath?: string;
  /** Writes text to stderr (whole lines, each ending in `\n`). Default `process.stderr.write`. */
  write?: (text: string) => void;
  /** Whether stderr is a terminal (no `<N>` prefix then). Default `tty.isatty(stderrFd)`. */
  isTTY?: boolean;
  /** Entries above this priority (less important) are dropped. Default 6 (`info`): `debug()` is off. */
  maxPriority?: Priority;
  /** Largest datagram sent to journald; see the module comment. Default 48 KiB, at least 1024. */
  maxEntryBytes?: number;
  /**
   * Called once per problem: when sending to journald starts to fail
   * (`DatagramError`; again only after a success in between), and once per
   * invalid field name (`InvalidArgs`). The caller should not log these
   * through this same journal at a rate: they already went to stderr.
   * Default: none.
   */
  onError?: (error: Error) => void;
  /** How a datagram is sent. Default: a fresh AF_UNIX datagram socket per entry (`unix-dgram`). */
  send?: DatagramSender;
}

/** True when `journalStream` (`DEVICE:INODE`, decimal) names the file open at `fd`. */
function isJournalStream(journalStream: string | undefined, fd: number): boolean {
  const match = /^([0-9]+):([0-9]+)$/.exec(journalStream ?? '');
  if (match === null) return false;
  let st: fs.BigIntStats;
  try {
    st = fs.fstatSync(fd, { bigint: true });
  } catch {
    return false;
  }
  return st.dev === BigInt(match[1] ?? '') && st.ino === BigInt(match[2] ?? '');
}

export class Journal {
  readonly #identifier: string;
  readonly #socketPath: string;
  readonly #write: (text: string) => void;
  readonly #prefix: boolean;
  readonly #maxPriority: Priority;
  readonly #maxEntryBytes: number;
  readonly #onError: ((error: Error) => void) | undefined;
  readonly #send: DatagramSender;
  readonly #native: boolean;
  readonly #reportedNames = new Set<string>();
  #failing = false;

  /** Throws `InvalidArgs` for a `maxPriority` outside 0..7 or a `maxEntryBytes` below 1024; looks at stderr once, here. */
  constructor(options: JournalOptions = {}) {
    const maxPriority = options.maxPriority ?? LogPriority.info;
    if (!isPriority(maxPriority)) throw new InvalidArgs(`Invalid log priority ${q(maxPriority)}: use 0 to 7, refusing`);
    const maxEntryBytes = options.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES;
    if (!Number.isSafeInteger(maxEntryBytes) || maxEntryBytes < MIN_MAX_ENTRY_BYTES) {
      throw new InvalidArgs(`Invalid journal entry size limit ${q(maxEntryBytes)}: use at least ${MIN_MAX_ENTRY_BYTES} bytes, refusing`);
    }
    const stderrFd = options.stderrFd ?? 2;
    this.#identifier = options.identifier ?? DEFAULT_IDENTIFIER;
    this.#socketPath = options.socketPath ?? JOURNAL_SOCKET;
    this.#write = options.write ?? ((text) => void process.stderr.write(text));
    this.#prefix = !(options.isTTY ?? tty.isatty(stderrFd));
    this.#maxPriority = maxPriority;
    this.#maxEntryBytes = maxEntryBytes;
    this.#onError = options.onError;
    this.#send = options.send ?? sendDatagram;
    this.#native = isJournalStream((options.env ?? process.env)['JOURNAL_STREAM'], stderrFd);
  }

  /** `'journal'` when entries go to journald's native socket, `'stderr'` when they are text lines. */
  get target(): 'journal' | 'stderr' {
    return this.#native ? 'journal' : 'stderr';
  }

  /** Log one entry: `message` is one sentence; `fields` are our own (see the module comment for names and values). */
  log(priority: Priority, message: string, fields: JournalFields = {}): void {
    if (!isPriority(priority)) throw new InvalidArgs(`Invalid log priority ${q(priority)}: use 0 to 7, refusing`);
    if (priority > this.#maxPriority) return;

    let identifier = this.#identifier;
    const own: Array<[string, string]> = [];
    for (const [name, value] of Object.entries(fields)) {
      if (value === null || value === undefined) continue;
      if (!isValidFieldName(name) || ARGUMENT_FIELDS.has(name)) {
        this.#invalidName(name);
        continue;
      }
      if (name === 'SYSLOG_IDENTIFIER') identifier = fieldText(value);
      else own.push([name, fieldText(value)]);
    }

    if (this.#native && this.#sendNative(priority, message, identifier, own)) return;
    this.#writeStderr(formatStderr(priority, message, own, this.#prefix));
  }

  emerg(message: string, fields?: JournalFields): void {
    this.log(LogPriority.emerg, message, fields);
  }

  alert(message: string, fields?: JournalFields): void {
    this.log(LogPriority.alert, message, fields);
  }

  crit(message: string, fields?: JournalFields): void {
    this.log(LogPriority.crit, message, fields);
  }

  error(message: string, fields?: JournalFields): void {
    this.log(LogPriority.err, message, fields);
  }

  warning(message: string, fields?: JournalFields): void {
    this.log(LogPriority.warning, message, fields);
  }

  notice(message: string, fields?: JournalFields): void {
    this.log(LogPriority.notice, message, fields);
  }

  info(message: string, fields?: JournalFields): void {
    this.log(LogPriority.info, message, fields);
  }

  debug(message: string, fields?: JournalFields): void {
    this.log(LogPriority.debug, message, fields);
  }

  /** Send one entry to journald; false when it could not be sent (the caller then writes it to stderr). */
  #sendNative(priority: Priority, message: string, identifier: string, own: ReadonlyArray<readonly [string, string]>): boolean {
    const fields: EntryField[] = [
      { name: 'MESSAGE', value: Buffer.from(message, 'utf8') },
      { name: 'PRIORITY', value: Buffer.from(String(priority)) },
      { name: 'SYSLOG_IDENTIFIER', value: Buffer.from(identifier, 'utf8') },
      ...own.map(([name, value]) => ({ name, value: Buffer.from(value, 'utf8') })),
    ];
    fitEntry(fields, this.#maxEntryBytes);
    try {
      this.#send(this.#socketPath, encodeEntry(fields.map((f) => [f.name, f.value] as const)));
      this.#failing = false;
      return true;
    } catch (error) {
      if (!this.#failing) {
        this.#failing = true;
        const code = error instanceof DatagramError ? error.code : 'EIO';
        const reason = error instanceof Error ? error.message : String(error);
        this.#report(
          new DatagramError(`Cannot send a journal entry to ${q(this.#socketPath)}: ${reason}, writing it to stderr instead`, code, {
            cause: error,
          }),
        );
      }
      return false;
    }
  }

  #invalidName(name: string): void {
    if (this.#reportedNames.has(name)) return;
    this.#reportedNames.add(name);
    const why = ARGUMENT_FIELDS.has(name)
      ? 'it is set from the arguments of log()'
      : `use A-Z, 0-9 and '_', not starting with '_' or a digit, at most ${FIELD_NAME_MAX} characters`;
    this.#report(new InvalidArgs(`Invalid journal field name ${q(name)}: ${why}, ignoring`));
  }

  #writeStderr(text: string): void {
    try {
      this.#write(text);
    } catch {
      // Nowhere left to say it; logging must not take the daemon down.
    }
  }

  #report(error: Error): void {
    try {
      this.#onError?.(error);
    } catch {
      // The caller's handler failing must not turn a logging problem into a crash.
    }
  }
}
