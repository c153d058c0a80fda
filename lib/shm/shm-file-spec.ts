/**
 * What a shared-memory file should be (`ShmFileSpec`), which one to remove
 * (`ShmFileRef`), and the checks of both before anything is touched: every
 * bad argument is an InvalidArgs with the value quoted.
 */

import { isAbsolute, join } from 'node:path';

import { InvalidArgs, q } from '../errors.js';
import { shmModeProblem } from './shm-mode.js';
import { validateShmName } from './shm-name.js';

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
  /**
   * Permission bits, 0 to 0o777 (no set-id or sticky bits), e.g. `0o660`;
   * without write for others and without execute bits (see shm-mode.ts).
   */
  readonly mode: number;
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

/** Check a spec and return the file's path. */
export function checkSpec(spec: ShmFileSpec): string {
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
  if (problem !== null)
    throw new InvalidArgs(`Invalid mode ${q(formatMode(spec.mode))} for shared memory file ${q(spec.name)}: ${problem}`);
  return path;
}

/** Check root and name and return the joined path. */
export function checkLocation(root: string, name: string): string {
  if (typeof root !== 'string' || !isAbsolute(root) || root.includes('\0')) {
    throw new InvalidArgs(`Invalid shared memory root ${q(root)}: must be an absolute path such as '/dev/shm'`);
  }
  validateShmName(name);
  return join(root, name);
}

/** A uid or gid chown accepts as an id. */
export function checkId(kind: 'uid' | 'gid', id: number, name: string): void {
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) {
    throw new InvalidArgs(`Invalid ${kind} ${q(id)} for shared memory file ${q(name)}: must be a whole number from 0 to ${MAX_ID}`);
  }
}

/** The trusted owners as a set, `[0, uid]` when not given. */
export function checkTrustedOwners(list: readonly number[] | undefined, uid: number, name: string): ReadonlySet<number> {
  if (list === undefined) return new Set([0, uid]);
  if (!Array.isArray(list)) {
    throw new InvalidArgs(`Invalid trustedOwners ${q(list)}: expected an array of uids`);
  }
  for (const owner of list) checkId('uid', owner, name);
  return new Set(list);
}

/** Permission bits as `ls` and chmod show them: `0660`. */
export function formatMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
