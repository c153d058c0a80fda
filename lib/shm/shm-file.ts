/**
 * The shared-memory files of Looking Glass and Scream: create or repair them
 * with the right size, owner and mode, re-check them, remove them.
 *
 * This runs as root in a directory every user can write to (`/dev/shm`,
 * mode 1777), so the one invariant everything here serves is: a root process
 * is never tricked into changing a file someone else chose. Concretely:
 *
 * - the entry is opened with O_NOFOLLOW (a symlink is refused, its target is
 *   only ever read with readlink) and O_NONBLOCK (a planted FIFO cannot block
 *   the open), and O_NOCTTY (a planted tty cannot become our terminal);
 *   libuv adds O_CLOEXEC to every open, Node does not expose the flag;
 * - what we opened is checked with fstat on the descriptor (regular file, one
 *   link, owned by a trusted uid) and every change is made on that descriptor
 *   (fchown, fchmod, ftruncate), never again by path, so swapping the entry
 *   after the check changes nothing;
 * - a new file is created with O_EXCL and mode 0600, so it is ours and never
 *   briefly readable by others; an existing file is opened without O_CREAT,
 *   which also keeps working under `fs.protected_regular`, where even root
 *   may not O_CREAT-open another user's file in a sticky directory;
 * - all checks happen before the first change; a file we created is removed
 *   again if we fail, a file that existed gets its owner and mode restored.
 *
 * Only the last component of the root is checked (lstat); the directories
 * above it are root's own (`/dev`) and not in reach of other users.
 */

import { constants, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';

import { InvalidArgs, InvalidConfig, UnsafePath, q } from '../errors.js';
import { validateShmName } from './shm-name.js';
import { formatSize } from './size.js';

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = constants;

const CREATE_FLAGS = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
const OPEN_FLAGS = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
const OPEN_FOR_REMOVE_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;

/** Mode of a file we just created, before it gets its final owner and mode. */
const CREATE_MODE = 0o600;

/*
 * How often to go round "create exclusively / open the existing one" when the
 * entry keeps appearing and vanishing between the two. Each round is a real
 * race with another process; three in a row means something is fighting us.
 */
const OPEN_ATTEMPTS = 3;

/** Largest uid/gid; (uid_t)-1 = 4294967295 means "no change" to chown and is not an id. */
const MAX_ID = 0xfffffffe;

/** What a shared-memory file should look like. */
export interface ShmFileSpec {
  /** Directory holding the file, injected; the real one is `/dev/shm`. Must be absolute and a real directory, not a symlink. */
  readonly root: string;
  /** Plain file name, checked with `validateShmName` (libvirt's `<shmem name=...>`). */
  readonly name: string;
  /** Size in bytes, a positive safe integer. */
  readonly size: number;
  /** Owner uid. */
  readonly uid: number;
  /** Group gid. */
  readonly gid: number;
  /** Permission bits, 0 to 0o777 (no set-id or sticky bits), e.g. `0o660`. */
  readonly mode: number;
}

export interface EnsureShmFileOptions {
  /**
   * Whether a file of another size may be truncated to `spec.size`. Default
   * `true`. With `false`, a size mismatch throws `InvalidConfig` and nothing
   * at all is changed (not even owner or mode): use it to re-check a file
   * QEMU already has mapped, where shrinking would SIGBUS the guest. A missing
   * file is still created.
   */
  readonly allowResize?: boolean;
  /**
   * Uids that may own an existing file we adopt and repair. Default
   * `[0, spec.uid]`. QEMU creates a missing file as its own user, so pass
   * the qemu uid too where that is expected. A file owned by anyone else is
   * refused, never taken over.
   */
  readonly trustedOwners?: readonly number[];
}

/** Owner, group, permission bits and size of a file. */
export interface ShmFileState {
  readonly uid: number;
  readonly gid: number;
  /** Permission bits (`st_mode & 0o7777`). */
  readonly mode: number;
  readonly size: number;
}

export interface EnsureShmFileResult {
  readonly path: string;
  /** `created`: it did not exist. `repaired`: it existed and was changed. `unchanged`: it existed and was right. */
  readonly action: 'created' | 'repaired' | 'unchanged';
  /**
   * One entry per change made to an existing file, for the journal:
   * `owner 1000:1000 -> 1000:64055`, `mode 0644 -> 0660`, `size 2M -> 32M`.
   * Empty for `created` (see `after`) and `unchanged`.
   */
  readonly changes: readonly string[];
  /** The file as found; absent when it was created. */
  readonly before?: ShmFileState;
  /** The file as left. */
  readonly after: ShmFileState;
}

/** Which file to remove; a full `ShmFileSpec` fits. */
export interface ShmFileRef {
  /** Directory holding the file, as in `ShmFileSpec.root`. */
  readonly root: string;
  /** Plain file name, as in `ShmFileSpec.name`. */
  readonly name: string;
  /** The intended owner; trusted by default, as in `ShmFileSpec.uid`. */
  readonly uid: number;
}

export interface RemoveShmFileOptions {
  /** Uids that may own the file we remove. Default `[0, ref.uid]`, as for `ensureShmFile`. */
  readonly trustedOwners?: readonly number[];
}

export interface RemoveShmFileResult {
  readonly path: string;
  /** `removed`: it was there and is gone. `absent`: there was nothing to remove. */
  readonly action: 'removed' | 'absent';
  /** The file as it was before removal; absent with `absent`. */
  readonly before?: ShmFileState;
}

export type ShmFileType =
  | 'file'
  | 'directory'
  | 'symlink'
  | 'fifo'
  | 'socket'
  | 'character-device'
  | 'block-device'
  | 'unknown';

/** What is at `<root>/<name>`, as `lstat` sees it (links are not followed). */
export interface ShmFileInfo extends ShmFileState {
  readonly path: string;
  readonly type: ShmFileType;
  readonly nlink: number;
  /** Where a symlink points; only for `type: 'symlink'`. */
  readonly linkTarget?: string;
}

/**
 * Make `<root>/<name>` a regular file of `size` bytes owned by `uid:gid` with
 * `mode`, creating it if missing and repairing it if not. Contents of a file
 * of the right size are kept.
 *
 * @throws InvalidArgs for a bad spec or option, before anything is touched.
 * @throws UnsafePath when the root is not a real directory, or the entry is
 *   a symlink, not a regular file, has other hard links, or is owned by an
 *   untrusted uid (nothing is changed, a symlink's target is never touched).
 * @throws InvalidConfig when `allowResize` is false and the size differs
 *   (nothing is changed).
 */
export async function ensureShmFile(
  spec: ShmFileSpec,
  options: EnsureShmFileOptions = {},
): Promise<EnsureShmFileResult> {
  const path = checkSpec(spec);
  const trusted = checkTrustedOwners(options.trustedOwners, spec.uid, spec.name);
  if (options.allowResize !== undefined && typeof options.allowResize !== 'boolean') {
    throw new InvalidArgs(`Invalid allowResize ${q(options.allowResize)}: must be true or false`);
  }
  const allowResize = options.allowResize ?? true;

  await checkRoot(spec.root);
  const { handle, created } = await openOrCreate(path, trusted);
  try {
    return created
      ? await finishCreated(handle, path, spec)
      : await repairExisting(handle, path, spec, trusted, allowResize);
  } finally {
    await handle.close();
  }
}

/**
 * Remove `<root>/<name>` if it is a regular file we would accept (one link,
 * owned by a trusted uid); do nothing if it is missing.
 *
 * The entry is lstat'ed, then opened with O_NOFOLLOW and fstat'ed, and only
 * unlinked when both name the same inode, so a file swapped in between is
 * refused. What remains is the moment between that check and unlink(2); only
 * a trusted owner can replace the entry then (the sticky bit stops everyone
 * else), and unlink never follows a symlink, so the worst case is removing a
 * name that owner just made.
 *
 * @throws InvalidArgs for a bad ref or option, before anything is touched.
 * @throws UnsafePath when the root or the entry is not one we would accept.
 */
export async function removeShmFile(
  ref: ShmFileRef,
  options: RemoveShmFileOptions = {},
): Promise<RemoveShmFileResult> {
  const path = checkLocation(ref.root, ref.name);
  checkId('uid', ref.uid, ref.name);
  const trusted = checkTrustedOwners(options.trustedOwners, ref.uid, ref.name);

  await checkRoot(ref.root);
  let seen: Stats;
  try {
    seen = await fsp.lstat(path);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { path, action: 'absent' };
    throw error;
  }
  await refuseUnacceptable(path, seen, trusted, 'remove');

  let handle: FileHandle;
  try {
    handle = await fsp.open(path, OPEN_FOR_REMOVE_FLAGS);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { path, action: 'absent' };
    if (isWrongTypeOnOpen(error)) await refuseChanged(path, trusted, 'remove');
    throw error;
  }
  try {
    const st = await handle.stat();
    if (st.dev !== seen.dev || st.ino !== seen.ino) {
      throw new UnsafePath(
        `Cannot remove shared memory file ${q(path)}: it was replaced while being checked; try again, refusing`,
      );
    }
    await refuseUnacceptable(path, st, trusted, 'remove');
    try {
      await fsp.unlink(path);
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return { path, action: 'absent' };
      throw error;
    }
    return { path, action: 'removed', before: stateOf(st) };
  } finally {
    await handle.close();
  }
}

/**
 * What is at `<root>/<name>` now, without following links or opening
 * anything, or `null` when nothing is there (or the root is missing).
 *
 * @throws InvalidArgs for a bad root or name.
 */
export async function inspectShmFile(root: string, name: string): Promise<ShmFileInfo | null> {
  const path = checkLocation(root, name);
  let st: Stats;
  try {
    st = await fsp.lstat(path);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw error;
  }
  const info: ShmFileInfo = { path, type: typeOf(st), nlink: st.nlink, ...stateOf(st) };
  if (!st.isSymbolicLink()) return info;
  const linkTarget = await readLinkOrNull(path);
  return linkTarget === null ? info : { ...info, linkTarget };
}

// --- validation (no side effects) ---

function checkSpec(spec: ShmFileSpec): string {
  if (typeof spec !== 'object' || spec === null) {
    throw new InvalidArgs(`Invalid shared memory file spec ${q(spec)}: expected an object`);
  }
  const path = checkLocation(spec.root, spec.name);
  if (!Number.isSafeInteger(spec.size) || spec.size <= 0) {
    throw new InvalidArgs(
      `Invalid size ${q(spec.size)} for shared memory file ${q(spec.name)}: must be a whole number of bytes greater than zero`,
    );
  }
  checkId('uid', spec.uid, spec.name);
  checkId('gid', spec.gid, spec.name);
  if (!Number.isInteger(spec.mode) || spec.mode < 0 || spec.mode > 0o777) {
    const shown = Number.isInteger(spec.mode) && spec.mode >= 0 ? formatMode(spec.mode) : spec.mode;
    throw new InvalidArgs(
      `Invalid mode ${q(shown)} for shared memory file ${q(spec.name)}: must be permission bits from 0000 to 0777, e.g. 0660`,
    );
  }
  return path;
}

/** Check root and name and return the joined path. */
function checkLocation(root: string, name: string): string {
  if (typeof root !== 'string' || !isAbsolute(root) || root.includes('\0')) {
    throw new InvalidArgs(`Invalid shared memory root ${q(root)}: must be an absolute path such as '/dev/shm'`);
  }
  validateShmName(name);
  return join(root, name);
}

function checkId(kind: 'uid' | 'gid', id: number, name: string): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) {
    throw new InvalidArgs(
      `Invalid ${kind} ${q(id)} for shared memory file ${q(name)}: must be a whole number from 0 to ${MAX_ID}`,
    );
  }
}

function checkTrustedOwners(list: readonly number[] | undefined, uid: number, name: string): ReadonlySet<number> {
  if (list === undefined) return new Set([0, uid]);
  if (!Array.isArray(list)) {
    throw new InvalidArgs(`Invalid trustedOwners ${q(list)}: expected an array of uids`);
  }
  for (const owner of list) checkId('uid', owner, name);
  return new Set(list);
}

// --- checks on the file system ---

/** The root must be a real directory: not missing, not a symlink, not a file. */
async function checkRoot(root: string): Promise<void> {
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
async function refuseUnacceptable(
  path: string,
  st: Stats,
  trusted: ReadonlySet<number>,
  verb: 'use' | 'remove',
): Promise<void> {
  const prefix = `Cannot ${verb} shared memory file ${q(path)}`;
  if (st.isSymbolicLink()) {
    const target = await readLinkOrNull(path);
    throw new UnsafePath(
      `${prefix}: it is a symbolic link${target === null ? '' : ` to ${q(target)}`}; remove the link, refusing`,
    );
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
    throw new UnsafePath(
      `${prefix}: it is owned by uid ${st.uid}, which is not trusted (${[...trusted].join(', ')}); remove it, refusing`,
    );
  }
}

/**
 * The entry changed type between our lstat and open (the open failed with
 * ELOOP, EISDIR, ...): look again and refuse with what is there now.
 */
async function refuseChanged(path: string, trusted: ReadonlySet<number>, verb: 'use' | 'remove'): Promise<never> {
  let st: Stats | null = null;
  try {
    st = await fsp.lstat(path);
  } catch {
    // vanished again; fall through to the generic refusal
  }
  if (st !== null) await refuseUnacceptable(path, st, trusted, verb);
  throw new UnsafePath(`Cannot ${verb} shared memory file ${q(path)}: it changed while being checked; try again, refusing`);
}

// --- ensure: open, then create or repair ---

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
async function openOrCreate(path: string, trusted: ReadonlySet<number>): Promise<Opened> {
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
    await refuseUnacceptable(path, seen, trusted, 'use');

    try {
      return { handle: await fsp.open(path, OPEN_FLAGS), created: false };
    } catch (error) {
      if (errorCode(error) === 'ENOENT') continue;
      if (isWrongTypeOnOpen(error)) await refuseChanged(path, trusted, 'use');
      throw error;
    }
  }
  throw new UnsafePath(
    `Cannot use shared memory file ${q(path)}: it kept appearing and disappearing while being opened; check what else writes to the shm root, refusing`,
  );
}

/** Give a file we just created its owner, mode and size; remove it if that fails. */
async function finishCreated(handle: FileHandle, path: string, spec: ShmFileSpec): Promise<EnsureShmFileResult> {
  const identity = await handle.stat();
  try {
    // Size first, while the file is still root's and 0600; then hand it over.
    await handle.truncate(spec.size);
    await handle.chown(spec.uid, spec.gid);
    // After chown: chown clears set-id bits, and fchmod ignores the umask.
    await handle.chmod(spec.mode);
    return { path, action: 'created', changes: [], after: stateOf(await handle.stat()) };
  } catch (error) {
    await unlinkIfSame(path, identity);
    throw error;
  }
}

/**
 * Check an existing file on its descriptor, then change what differs: owner,
 * mode, size, in that order. Nothing is changed before every check passed;
 * if a change fails, the owner and mode are put back.
 */
async function repairExisting(
  handle: FileHandle,
  path: string,
  spec: ShmFileSpec,
  trusted: ReadonlySet<number>,
  allowResize: boolean,
): Promise<EnsureShmFileResult> {
  const st = await handle.stat();
  await refuseUnacceptable(path, st, trusted, 'use');
  const before = stateOf(st);

  const ownerDiffers = before.uid !== spec.uid || before.gid !== spec.gid;
  const modeDiffers = before.mode !== spec.mode;
  const sizeDiffers = before.size !== spec.size;
  if (sizeDiffers && !allowResize) {
    throw new InvalidConfig(
      `Cannot resize shared memory file ${q(path)}: it is ${formatSize(before.size)}, the configuration says ${formatSize(spec.size)}, ` +
        `and shrinking a file the VM has mapped would crash the guest; make the configured size match the domain's <shmem> size, refusing`,
    );
  }

  const changes: string[] = [];
  try {
    if (ownerDiffers) {
      await handle.chown(spec.uid, spec.gid);
      changes.push(`owner ${before.uid}:${before.gid} -> ${spec.uid}:${spec.gid}`);
    }
    // Also after a chown: it may have cleared set-id bits the spec does not have anyway,
    // and the mode must end exactly as specified.
    if (modeDiffers) {
      await handle.chmod(spec.mode);
      changes.push(`mode ${formatMode(before.mode)} -> ${formatMode(spec.mode)}`);
    }
    if (sizeDiffers) {
      // Never reached for a file of the right size: its contents are kept.
      await handle.truncate(spec.size);
      changes.push(`size ${formatSize(before.size)} -> ${formatSize(spec.size)}`);
    }
  } catch (error) {
    await restore(handle, before, ownerDiffers, modeDiffers);
    throw error;
  }

  const after = stateOf(await handle.stat());
  return { path, action: changes.length > 0 ? 'repaired' : 'unchanged', changes, before, after };
}

/**
 * Best effort: put owner and mode back after a failed repair. Owner first,
 * because chown clears set-id bits the original mode may have had. Errors
 * here are dropped; the caller rethrows the error that made us restore.
 */
async function restore(handle: FileHandle, before: ShmFileState, owner: boolean, mode: boolean): Promise<void> {
  try {
    if (owner) await handle.chown(before.uid, before.gid);
    if (owner || mode) await handle.chmod(before.mode);
  } catch {
    // nothing more we can do; the original error says what went wrong
  }
}

/** Unlink `path` only if it is still the inode we created; never throws. */
async function unlinkIfSame(path: string, identity: Stats): Promise<void> {
  try {
    const now = await fsp.lstat(path);
    if (now.dev === identity.dev && now.ino === identity.ino) await fsp.unlink(path);
  } catch {
    // gone already, or not ours to remove
  }
}

// --- small helpers ---

function stateOf(st: Stats): ShmFileState {
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, size: st.size };
}

function formatMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function typeOf(st: Stats): ShmFileType {
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

async function readLinkOrNull(path: string): Promise<string | null> {
  try {
    return await fsp.readlink(path);
  } catch {
    return null;
  }
}

/** open(2) errors that mean the entry is not (or no longer) a regular file. */
function isWrongTypeOnOpen(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ELOOP' || code === 'EISDIR' || code === 'ENXIO' || code === 'ENODEV';
}

function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return undefined;
}
