/**
 * User and group names to numeric ids, for the owner and group of the
 * shared-memory files (`user = "alex"`, `group = "qemu-libvirtd"`).
 *
 * Node has no getpwnam(3), so we ask `getent`, which goes through NSS and so
 * also sees LDAP, sssd and systemd's dynamic users; only when getent is not
 * installed do we read `<etcRoot>/passwd` and `<etcRoot>/group` ourselves.
 * Numeric ids are taken as they are, like chown(1) does for an id that is no
 * name: the file may legitimately belong to an id with no entry.
 */

import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { InvalidArgs, InvalidConfig, Timeout, q } from '../errors.js';

export interface AccountLookupOptions {
  /** Directory holding `passwd` and `group`, read only when getent is not installed. Default `'/etc'`. */
  readonly etcRoot?: string;
  /**
   * The getent executable, found through `PATH` unless absolute; `null` reads
   * the files under `etcRoot` only. Default `'getent'`.
   */
  readonly getent?: string | null;
  /** How long getent may take (a hung LDAP server must not hang us), in ms. Default `5000`. */
  readonly timeoutMs?: number;
}

type Database = 'passwd' | 'group';

const MAX_ID = 0xfffffffe;
const MAX_NAME_LENGTH = 256;
const DEFAULT_TIMEOUT_MS = 5000;

/**
 * The uid of a user name, or a numeric uid as is.
 *
 * @throws InvalidArgs for something that cannot be a user name.
 * @throws InvalidConfig for a name not in the passwd database.
 * @throws Timeout when getent does not answer in time.
 */
export async function resolveUid(user: string, options: AccountLookupOptions = {}): Promise<number> {
  return resolve('passwd', user, options);
}

/**
 * The gid of a group name, or a numeric gid as is.
 *
 * @throws InvalidArgs for something that cannot be a group name.
 * @throws InvalidConfig for a name not in the group database.
 * @throws Timeout when getent does not answer in time.
 */
export async function resolveGid(group: string, options: AccountLookupOptions = {}): Promise<number> {
  return resolve('group', group, options);
}

/**
 * The primary gid of a user (the gid field of its passwd entry). For a
 * numeric uid, which has no entry to read, the same number is taken.
 *
 * @throws as resolveUid.
 */
export async function resolvePrimaryGid(user: string, options: AccountLookupOptions = {}): Promise<number> {
  return resolve('passwd', user, options, 3);
}

/**
 * The uids of several user names, those that resolve, with one lookup: one
 * getent child for all of them (`getent passwd -- A B C` prints the entries
 * it finds and exits 2 if any is missing), where resolveUid would fork one
 * each. Used at the daemon's start for the QEMU user names of every
 * distribution, of which one at most exists. A name that cannot be a user
 * name, or that is not in the database, is left out; numeric ids are taken
 * as they are.
 *
 * @throws Timeout when getent does not answer in time, Error when it fails otherwise.
 */
export async function resolveUids(users: readonly string[], options: AccountLookupOptions = {}): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  const names: string[] = [];
  for (const user of users) {
    if (typeof user === 'string' && /^[0-9]+$/.test(user)) {
      if (Number(user) <= MAX_ID) found.set(user, Number(user));
      continue;
    }
    try {
      checkAccountName('user', user);
      names.push(user);
    } catch {
      // Not a name: it resolves to nothing.
    }
  }
  if (names.length === 0) return found;
  const getent = options.getent === undefined ? 'getent' : options.getent;
  const lines = getent !== null ? await lookUpAllWithGetent(getent, 'passwd', names, options.timeoutMs ?? DEFAULT_TIMEOUT_MS) : undefined;
  const wanted = new Set(names);
  const entries =
    lines ??
    (await Promise.all(names.map((name) => lookUpInFile(join(options.etcRoot ?? '/etc', 'passwd'), name)))).filter(
      (line): line is string => line !== null,
    );
  for (const line of entries) {
    // passwd: name:password:uid:gid:...; only an entry whose name is one asked for counts.
    const [name, , uid] = line.split(':');
    if (name !== undefined && wanted.has(name) && uid !== undefined && /^[0-9]+$/.test(uid) && Number(uid) <= MAX_ID) {
      found.set(name, Number(uid));
    }
  }
  return found;
}

/**
 * The user name of a uid, for messages ("owned by uid 301 ('qemu-libvirtd')"),
 * or `null` when it has none, or it cannot be looked up: a message never
 * fails for want of a name.
 */
export async function userNameOf(uid: number, options: AccountLookupOptions = {}): Promise<string | null> {
  if (!Number.isInteger(uid) || uid < 0 || uid > MAX_ID) return null;
  try {
    const getent = options.getent === undefined ? 'getent' : options.getent;
    let line: string | null | undefined;
    // getent passwd takes a number as a uid, not a name.
    if (getent !== null) line = await lookUpWithGetent(getent, 'passwd', String(uid), options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    if (line === undefined) line = await lookUpInFile(join(options.etcRoot ?? '/etc', 'passwd'), String(uid), 2);
    const name = line?.split(':')[0];
    return name === undefined || name === '' ? null : name;
  } catch {
    return null;
  }
}

async function resolve(db: Database, name: string, options: AccountLookupOptions, field = 2): Promise<number> {
  const kind = db === 'passwd' ? 'user' : 'group';
  if (typeof name === 'string' && /^[0-9]+$/.test(name)) {
    const id = Number(name);
    if (id > MAX_ID) {
      throw new InvalidArgs(`Invalid ${kind} id ${q(name)}: must be at most ${MAX_ID}`);
    }
    return id;
  }
  checkAccountName(kind, name);

  const getent = options.getent === undefined ? 'getent' : options.getent;
  let line: string | null | undefined;
  if (getent !== null) line = await lookUpWithGetent(getent, db, name, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  // undefined: getent is not installed, so read the file.
  if (line === undefined) line = await lookUpInFile(join(options.etcRoot ?? '/etc', db), name);
  if (line === null) {
    throw new InvalidConfig(`Unknown ${kind} ${q(name)}: not in the ${db} database; check the name in '${kind} ='`);
  }
  // passwd: name:password:uid:gid:...   group: name:password:gid:members
  const id = line.split(':')[field];
  if (id === undefined || !/^[0-9]+$/.test(id) || Number(id) > MAX_ID) {
    throw new InvalidConfig(`Cannot resolve ${kind} ${q(name)}: malformed ${db} entry ${q(line)}`);
  }
  return Number(id);
}

/**
 * Refuse what cannot be a name before it reaches getent or a file scan: a
 * leading `-` would be read as an option, `:` and newlines would split
 * entries.
 */
export function checkAccountName(kind: 'user' | 'group', name: string): void {
  const problem =
    typeof name !== 'string'
      ? 'must be a string'
      : name === ''
        ? 'must not be empty'
        : name.length > MAX_NAME_LENGTH
          ? `longer than ${MAX_NAME_LENGTH} characters`
          : name.startsWith('-')
            ? "must not start with '-'"
            : /[:/\s\u0000-\u001f\u007f]/.test(name)
              ? "must not contain ':', '/', spaces or control characters"
              : null;
  if (problem !== null) throw new InvalidArgs(`Invalid ${kind} name ${q(name)}: ${problem}`);
}

/**
 * The matching line from getent, `null` when the key is unknown (exit 2), or
 * `undefined` when getent itself is not installed.
 */
async function lookUpWithGetent(getent: string, db: Database, name: string, timeoutMs: number): Promise<string | null | undefined> {
  const lines = await lookUpAllWithGetent(getent, db, [name], timeoutMs);
  return lines === undefined ? undefined : (lines[0] ?? null);
}

/**
 * The lines getent finds for `keys` in `db` (exit 2, some or all unknown,
 * leaves them out), or `undefined` when getent is not installed.
 */
function lookUpAllWithGetent(getent: string, db: Database, keys: readonly string[], timeoutMs: number): Promise<string[] | undefined> {
  return new Promise((resolvePromise, reject) => {
    const what = keys.map(q).join(', ');
    // No shell; `--` ends options even though checkAccountName already refused a leading '-'.
    execFile(getent, [db, '--', ...keys], { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout) => {
      if (error === null || error.code === 2) resolvePromise(stdout.split('\n').filter((line) => line !== ''));
      else if (error.code === 'ENOENT') resolvePromise(undefined);
      else if (error.killed) {
        reject(new Timeout(`Looking up ${what} in ${db} timed out after ${timeoutMs} ms; check the name service (nsswitch.conf)`));
      } else {
        reject(new Error(`Looking up ${what} in ${db} failed: ${getent} exited with ${String(error.code ?? error.signal)}`));
      }
    });
  });
}

/** The line whose `field` (0: the name, 2: the id) is `key` in a passwd or group file, or `null`. */
async function lookUpInFile(file: string, key: string, field = 0): Promise<string | null> {
  const text = await readFile(file, 'utf8');
  for (const line of text.split('\n')) {
    // Comments and NIS compat lines (`+name`, `-name`, `+@netgroup`) are not entries.
    if (line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    if (line.split(':')[field] === key) return line;
  }
  return null;
}
