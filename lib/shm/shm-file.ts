/**
 * The shared-memory files of Looking Glass and Scream: create or repair them
 * with the right size, owner and mode, re-check them, remove them.
 *
 * This runs as root in a directory every user can write to (`/dev/shm`,
 * mode 1777), so the one invariant everything here serves is: a root process
 * is never tricked into changing a file someone else chose. How an entry is
 * opened and checked for that is shm-entry.ts; here every change is made on
 * the descriptor it opened (fchown, fchmod, ftruncate), never again by path,
 * and all checks happen before the first change: a file we created is
 * removed again if we fail, a file that existed gets its size, owner and
 * mode restored.
 *
 * The file's memory is really reserved, not just its size set
 * (shm-space.ts); the arguments are checked before anything is touched
 * (shm-file-spec.ts).
 */

import type { Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

import { InvalidArgs, InvalidConfig, UnsafePath, q } from '../errors.js';
import type { AccountLookupOptions } from './accounts.js';
import {
  OPEN_FOR_REMOVE_FLAGS,
  checkRoot,
  errorCode,
  isWrongTypeOnOpen,
  openOrCreate,
  readLinkOrNull,
  refuseChanged,
  refuseUnacceptable,
  typeOf,
  type ShmFileType,
} from './shm-entry.js';
import { checkId, checkLocation, checkSpec, checkTrustedOwners, formatMode, type ShmFileRef, type ShmFileSpec } from './shm-file-spec.js';
import { backedBytes, formatAmount, refusalFor, reserve } from './shm-space.js';
import { formatSize } from './size.js';

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
export async function ensureShmFile(spec: ShmFileSpec, options: EnsureShmFileOptions = {}): Promise<EnsureShmFileResult> {
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
    return created ? await finishCreated(handle, path, spec) : await repairExisting(handle, path, spec, trusted, allowResize, accounts);
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
export async function removeShmFile(ref: ShmFileRef, options: RemoveShmFileOptions = {}): Promise<RemoveShmFileResult> {
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
      throw new UnsafePath(`Cannot remove shared memory file ${q(path)}: it was replaced while being checked; try again, refusing`);
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
    const backed = await backedBytes(handle);
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

function stateOf(st: Stats): ShmFileState {
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, size: st.size };
}
