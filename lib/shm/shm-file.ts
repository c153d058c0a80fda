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
 *   again if we fail, a file that existed gets its size, owner and mode
 *   restored.
 *
 * The file's memory is really reserved, not just its size set: ftruncate
 * alone makes a sparse file, which succeeds on a full (or too small) tmpfs,
 * and QEMU would then die of SIGBUS at the guest's first frame. Node has no
 * posix_fallocate, so the space is reserved by writing through the
 * descriptor (tmpfs allocates a page when it is first written): zeros into
 * a file we created, the bytes read back into an existing one, so its
 * contents are kept. Before writing, the free space of the shm root
 * (statfs) is compared with what is missing, so a file that cannot fit is
 * refused without filling the host's /dev/shm even for a moment; a write
 * that still runs out of space (someone else filled it meanwhile) undoes
 * the same way.
 *
 * Only the last component of the root is checked (lstat); the directories
 * above it are root's own (`/dev`) and not in reach of other users.
 */

import { constants, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';

import { InvalidArgs, InvalidConfig, UnsafePath, q } from '../errors.js';
import { userNameOf, type AccountLookupOptions } from './accounts.js';
import { shmModeProblem } from './shm-mode.js';
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

/** Bytes written at a time while reserving a file's space. */
const RESERVE_CHUNK = 1024 * 1024;

/** st_blocks counts 512-byte units, whatever the file system's block size. */
const BLOCK_UNIT = 512;

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
  /**
   * Permission bits, 0 to 0o777 (no set-id or sticky bits), e.g. `0o660`;
   * without write for others and without execute bits (see shm-mode.ts).
   */
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
  /** How the uid of an untrusted owner is named in the refusal. Default: getent, see accounts.ts. */
  readonly accounts?: AccountLookupOptions;
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
   * `owner 1000:1000 -> 1000:64055`, `mode 0644 -> 0660`, `size 2M -> 32M`,
   * `reserved 32M` (a sparse file's memory was reserved).
   * Empty for `created` (see `after`) and `unchanged`.
   */
  readonly changes: readonly string[];
  /**
   * Problems that did not stop it, each ending in ', ignoring': a sparse
   * file whose space is not reserved because `allowResize` is false (QEMU
   * may have it mapped). Usually empty.
   */
  readonly warnings: readonly string[];
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
  /** How the uid of an untrusted owner is named in the refusal. Default: getent, see accounts.ts. */
  readonly accounts?: AccountLookupOptions;
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
 * `mode`, its whole size backed by memory, creating it if missing and
 * repairing it if not. Contents of an existing file are kept (up to `size`).
 *
 * @throws InvalidArgs for a bad spec or option, before anything is touched.
 * @throws UnsafePath when the root is not a real directory, or the entry is
 *   a symlink, not a regular file, has other hard links, or is owned by an
 *   untrusted uid (nothing is changed, a symlink's target is never touched).
 * @throws InvalidConfig when `allowResize` is false and the size differs
 *   (nothing is changed), or when the shm root has too little free space
 *   for the file (a created file is removed, an existing one put back).
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

  const accounts = options.accounts ?? {};

  await checkRoot(spec.root);
  const { handle, created } = await openOrCreate(path, trusted, accounts);
  try {
    return created
      ? await finishCreated(handle, path, spec)
      : await repairExisting(handle, path, spec, trusted, allowResize, accounts);
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
  const accounts = options.accounts ?? {};

  await checkRoot(ref.root);
  let seen: Stats;
  try {
    seen = await fsp.lstat(path);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { path, action: 'absent' };
    throw error;
  }
  await refuseUnacceptable(path, seen, trusted, 'remove', accounts);

  let handle: FileHandle;
  try {
    handle = await fsp.open(path, OPEN_FOR_REMOVE_FLAGS);
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return { path, action: 'absent' };
    if (isWrongTypeOnOpen(error)) await refuseChanged(path, trusted, 'remove', accounts);
    throw error;
  }
  try {
    const st = await handle.stat();
    if (st.dev !== seen.dev || st.ino !== seen.ino) {
      throw new UnsafePath(
        `Cannot remove shared memory file ${q(path)}: it was replaced while being checked; try again, refusing`,
      );
    }
    await refuseUnacceptable(path, st, trusted, 'remove', accounts);
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
  const problem = shmModeProblem(spec.mode);
  if (problem !== null) throw new InvalidArgs(`Invalid mode ${q(formatMode(spec.mode))} for shared memory file ${q(spec.name)}: ${problem}`);
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
  accounts: AccountLookupOptions,
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
async function refuseChanged(
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
async function openOrCreate(path: string, trusted: ReadonlySet<number>, accounts: AccountLookupOptions): Promise<Opened> {
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

/** Give a file we just created its size, memory, owner and mode; remove it if that fails. */
async function finishCreated(handle: FileHandle, path: string, spec: ShmFileSpec): Promise<EnsureShmFileResult> {
  const identity = await handle.stat();
  try {
    // Size and memory first, while the file is still root's and 0600; then hand it over.
    await handle.truncate(spec.size);
    await reserve(handle, spec, 'zeros');
    await handle.chown(spec.uid, spec.gid);
    // After chown: chown clears set-id bits, and fchmod ignores the umask.
    await handle.chmod(spec.mode);
    return { path, action: 'created', changes: [], warnings: [], after: stateOf(await handle.stat()) };
  } catch (error) {
    await unlinkIfSame(path, identity);
    throw await refusalFor(error, path, spec.root, false);
  }
}

/**
 * Check an existing file on its descriptor, then change what differs: owner,
 * mode, size, memory, in that order. Nothing is changed before every check
 * passed; if a change fails, size, owner and mode are put back.
 */
async function repairExisting(
  handle: FileHandle,
  path: string,
  spec: ShmFileSpec,
  trusted: ReadonlySet<number>,
  allowResize: boolean,
  accounts: AccountLookupOptions,
): Promise<EnsureShmFileResult> {
  const st = await handle.stat();
  await refuseUnacceptable(path, st, trusted, 'use', accounts);
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
  const warnings: string[] = [];
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
    const backed = (await handle.stat()).blocks * BLOCK_UNIT;
    if (backed < spec.size && allowResize) {
      // At prepare QEMU has not mapped it yet, and its content means nothing until then; still,
      // each page is read back and written again, so what a client left there is kept (a client
      // writing at that very moment could lose that write; it only writes while the guest runs).
      await reserve(handle, spec, 'keep');
      changes.push(`reserved ${formatSize(spec.size)}`);
    } else if (backed < spec.size) {
      // allowResize is false: QEMU may have it mapped, and it is not ours to write now.
      warnings.push(
        `Shared memory file ${q(path)} is sparse (${formatAmount(backed)} of ${formatAmount(spec.size)} backed by memory) and may be mapped already, ` +
          `so its space is not reserved now; if ${q(spec.root)} fills up the guest dies of SIGBUS, ignoring`,
      );
    }
  } catch (error) {
    await restore(handle, before, ownerDiffers, modeDiffers, sizeDiffers);
    throw await refusalFor(error, path, spec.root, true);
  }

  const after = stateOf(await handle.stat());
  return { path, action: changes.length > 0 ? 'repaired' : 'unchanged', changes, warnings, before, after };
}

/** What is missing from the shm root; thrown by reserve, turned into a refusal once the undo is done. */
class SpaceShortage extends Error {
  constructor(readonly missing: number) {
    super(`${missing} bytes short`);
  }
}

/**
 * Back every page of the file's `spec.size` bytes with memory, by writing
 * through the descriptor: zeros (a new file), or each chunk read back
 * (`keep`, an existing file; a hole reads as zeros, so this never changes
 * what is there). First compares what is missing with the root's free
 * space, so a file that cannot fit never fills the root.
 *
 * @throws SpaceShortage when it does not fit, or the root fills up while writing.
 */
async function reserve(handle: FileHandle, spec: ShmFileSpec, fill: 'zeros' | 'keep'): Promise<void> {
  const missing = Math.max(0, spec.size - (await handle.stat()).blocks * BLOCK_UNIT);
  if (missing === 0) return;
  if (missing > (await freeBytes(spec.root))) throw new SpaceShortage(missing);
  const chunk = Buffer.alloc(Math.min(RESERVE_CHUNK, spec.size));
  try {
    for (let offset = 0; offset < spec.size; ) {
      const length = Math.min(chunk.length, spec.size - offset);
      if (fill === 'keep') {
        let read = 0;
        while (read < length) {
          const { bytesRead } = await handle.read(chunk, read, length - read, offset + read);
          // The file shrank under us (someone truncated it): the rest reads as zeros.
          if (bytesRead === 0) {
            chunk.fill(0, read, length);
            break;
          }
          read += bytesRead;
        }
      }
      let written = 0;
      while (written < length) {
        const { bytesWritten } = await handle.write(chunk, written, length - written, offset + written);
        written += bytesWritten;
      }
      offset += length;
    }
  } catch (error) {
    if (errorCode(error) === 'ENOSPC') throw new SpaceShortage(missing);
    throw error;
  }
}

/** Free space of the root for an unprivileged writer (f_bavail), in bytes. */
async function freeBytes(root: string): Promise<number> {
  const fs = await fsp.statfs(root);
  return fs.bavail * fs.bsize;
}

/** The error to throw after an undo: a SpaceShortage becomes the refusal, with the free space left now. */
async function refusalFor(error: unknown, path: string, root: string, existing: boolean): Promise<unknown> {
  if (!(error instanceof SpaceShortage)) return error;
  let free: string;
  try {
    free = formatAmount(await freeBytes(root), 1);
  } catch {
    free = 'too little';
  }
  return new InvalidConfig(
    `Cannot reserve shared memory file ${q(path)}: needs ${formatAmount(error.missing)}${existing ? ' more' : ''}, ` +
      `${q(root)} has ${free} free; free space there or make it larger (mount -o remount,size=... ${q(root)}), refusing`,
  );
}

/**
 * Best effort: put size, owner and mode back after a failed repair. Size
 * first (a file grown for nothing shrinks back; the memory written into
 * its old part stays reserved, its contents as they were), then owner,
 * because chown clears set-id bits the original mode may have had. Errors
 * here are dropped; the caller rethrows the error that made us restore.
 */
async function restore(handle: FileHandle, before: ShmFileState, owner: boolean, mode: boolean, size: boolean): Promise<void> {
  try {
    if (size) await handle.truncate(before.size);
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

/**
 * An amount of memory as people read it: `32 MiB`, `512 B`; with `decimals`,
 * always that many (`1.0 MiB`, as df -h), else only when not a whole number.
 */
function formatAmount(bytes: number, decimals?: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  const shown = decimals !== undefined ? value.toFixed(decimals) : Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${shown} ${units[unit]}`;
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
