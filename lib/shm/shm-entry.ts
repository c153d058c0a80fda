/**
 * The entry checks: how an entry of the shm root is looked at and opened so
 * that a root process is never tricked into changing a file someone else
 * chose (shm-file.ts says why that is the invariant here).
 *
 * - the entry is opened with O_NOFOLLOW (a symlink is refused, its target is
 *   only ever read with readlink) and O_NONBLOCK (a planted FIFO cannot block
 *   the open), and O_NOCTTY (a planted tty cannot become our terminal);
 *   libuv adds O_CLOEXEC to every open, Node does not expose the flag;
 * - what we opened is checked with fstat on the descriptor (regular file, one
 *   link, owned by a trusted uid), and the caller makes every change on that
 *   descriptor, never again by path, so swapping the entry after the check
 *   changes nothing;
 * - a new file is created with O_EXCL and mode 0600, so it is ours and never
 *   briefly readable by others; an existing file is opened without O_CREAT,
 *   which also keeps working under `fs.protected_regular`, where even root
 *   may not O_CREAT-open another user's file in a sticky directory.
 *
 * Only the last component of the root is checked (lstat); the directories
 * above it are root's own (`/dev`) and not in reach of other users.
 */

import { constants, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

import { UnsafePath, q } from '../errors.js';
import { userNameOf, type AccountLookupOptions } from './accounts.js';

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = constants;

const CREATE_FLAGS = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
const OPEN_FLAGS = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
/** Flags to open a file we are about to remove: read only, with the same refusals as for use. */
export const OPEN_FOR_REMOVE_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;

/** Mode of a file we just created, before it gets its final owner and mode. */
const CREATE_MODE = 0o600;

/*
 * How often to go round "create exclusively / open the existing one" when the
 * entry keeps appearing and vanishing between the two. Each round is a real
 * race with another process; three in a row means something is fighting us.
 */
const OPEN_ATTEMPTS = 3;

/** What kind of entry `lstat` found. */
export type ShmFileType = 'file' | 'directory' | 'symlink' | 'fifo' | 'socket' | 'character-device' | 'block-device' | 'unknown';

/** The root must be a real directory: not missing, not a symlink, not a file. */
export async function checkRoot(root: string): Promise<void> {
  let st: Stats;
  try {
    st = await fsp.lstat(root);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') {
      throw new UnsafePath(`Cannot use shared memory root ${q(root)}: it does not exist; mount a tmpfs there or fix the root, refusing`);
    }
    throw error;
  }
  if (st.isSymbolicLink()) {
    const target = await readLinkOrNull(root);
    throw new UnsafePath(
      `Cannot use shared memory root ${q(root)}: it is a symbolic link${target === null ? '' : ` to ${q(target)}`}; use the real directory, refusing`,
    );
  }
  if (!st.isDirectory()) {
    throw new UnsafePath(
      `Cannot use shared memory root ${q(root)}: it is a ${describeType(st)}, not a directory; use the real directory, refusing`,
    );
  }
}

/**
 * Throw UnsafePath unless `st` (from lstat or fstat) is a regular file with
 * one link, owned by a trusted uid. For a symlink, name where it points.
 */
export async function refuseUnacceptable(
  path: string,
  st: Stats,
  trusted: ReadonlySet<number>,
  verb: 'use' | 'remove',
  accounts: AccountLookupOptions,
): Promise<void> {
  const prefix = `Cannot ${verb} shared memory file ${q(path)}`;
  if (st.isSymbolicLink()) {
    const target = await readLinkOrNull(path);
    throw new UnsafePath(`${prefix}: it is a symbolic link${target === null ? '' : ` to ${q(target)}`}; remove the link, refusing`);
  }
  if (!st.isFile()) {
    throw new UnsafePath(`${prefix}: it is a ${describeType(st)}, not a regular file; remove it, refusing`);
  }
  if (st.nlink !== 1) {
    // A second name means someone else can reach (or owns the other name of)
    // the same inode: chowning or truncating it would change their file.
    throw new UnsafePath(`${prefix}: it has ${st.nlink} hard links, expected 1; remove it, refusing`);
  }
  if (!trusted.has(st.uid)) {
    // Most often QEMU made it, running as a user the daemon was not told about.
    const name = await userNameOf(st.uid, accounts);
    const owner = name === null ? `uid ${st.uid}` : `uid ${st.uid} (${q(name)})`;
    const user = name === null ? `uid ${st.uid}` : q(name);
    throw new UnsafePath(
      `${prefix}: it is owned by ${owner}, which is not trusted (${[...trusted].join(', ')}); ` +
        `if QEMU runs as ${user}, set qemu-user = "${name ?? st.uid}" in [daemon] of the configuration, else remove the file, refusing`,
    );
  }
}

/**
 * The entry changed type between our lstat and open (the open failed with
 * ELOOP, EISDIR, ...): look again and refuse with what is there now.
 */
export async function refuseChanged(
  path: string,
  trusted: ReadonlySet<number>,
  verb: 'use' | 'remove',
  accounts: AccountLookupOptions,
): Promise<never> {
  let st: Stats | null = null;
  try {
    st = await fsp.lstat(path);
  } catch {
    // vanished again; fall through to the generic refusal
  }
  if (st !== null) await refuseUnacceptable(path, st, trusted, verb, accounts);
  throw new UnsafePath(`Cannot ${verb} shared memory file ${q(path)}: it changed while being checked; try again, refusing`);
}

interface Opened {
  readonly handle: FileHandle;
  readonly created: boolean;
}

/**
 * Open `path` read-write, creating it if missing, and say exactly whether we
 * created it: O_EXCL first (only we can have made a file it creates), and on
 * EEXIST an open without O_CREAT; if the entry vanished in between, go round
 * again. An existing entry is lstat'ed before it is opened, so a symlink,
 * FIFO, socket or device node is refused without ever being opened; the
 * fstat after the open is still the check that counts.
 */
export async function openOrCreate(path: string, trusted: ReadonlySet<number>, accounts: AccountLookupOptions): Promise<Opened> {
  for (let attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
    try {
      return { handle: await fsp.open(path, CREATE_FLAGS, CREATE_MODE), created: true };
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error;
    }

    let seen: Stats;
    try {
      seen = await fsp.lstat(path);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') continue;
      throw error;
    }
    await refuseUnacceptable(path, seen, trusted, 'use', accounts);

    try {
      return { handle: await fsp.open(path, OPEN_FLAGS), created: false };
    } catch (error) {
      if (errorCode(error) === 'ENOENT') continue;
      if (isWrongTypeOnOpen(error)) await refuseChanged(path, trusted, 'use', accounts);
      throw error;
    }
  }
  throw new UnsafePath(
    `Cannot use shared memory file ${q(path)}: it kept appearing and disappearing while being opened; check what else writes to the shm root, refusing`,
  );
}

/** The kind of entry `st` describes. */
export function typeOf(st: Stats): ShmFileType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character-device';
  if (st.isBlockDevice()) return 'block-device';
  return 'unknown';
}

function describeType(st: Stats): string {
  const names: Record<ShmFileType, string> = {
    file: 'regular file',
    directory: 'directory',
    symlink: 'symbolic link',
    fifo: 'FIFO',
    socket: 'socket',
    'character-device': 'character device',
    'block-device': 'block device',
    unknown: 'file of unknown type',
  };
  return names[typeOf(st)];
}

/** A symlink's text, or null when it cannot be read (for messages only). */
export async function readLinkOrNull(path: string): Promise<string | null> {
  try {
    return await fsp.readlink(path);
  } catch {
    return null;
  }
}

/** open(2) errors that mean the entry is not (or no longer) a regular file. */
export function isWrongTypeOnOpen(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ELOOP' || code === 'EISDIR' || code === 'ENXIO' || code === 'ENODEV';
}

/** The errno name of a failed file system call (`ENOENT`), if it has one. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return undefined;
}
