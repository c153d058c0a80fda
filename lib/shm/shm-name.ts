/**
 * Names of shared-memory files: what libvirt's `<shmem name='...'>` and the
 * configuration give, and what becomes `<shm root>/<name>`.
 *
 * The name is joined to a root directory that a root process writes in, so it
 * must stay a single plain directory entry: no `/` (no subdirectories, no
 * escaping the root), not `.` or `..`, no NUL or control characters (they
 * cannot be a file name, or they garble the journal and terminal output), at
 * most 255 bytes (NAME_MAX on Linux).
 */

import { Buffer } from 'node:buffer';

import { InvalidArgs, q } from '../errors.js';

/** Longest file name Linux file systems accept, in bytes (NAME_MAX). */
export const SHM_NAME_MAX_BYTES = 255;

const FIX = "use a plain file name such as 'looking-glass'";

// C0 controls (NUL included), DEL, and C1 controls.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
// With the `u` flag this matches only unpaired surrogates, which UTF-8 cannot
// encode: the file on disk would get U+FFFD instead and no longer match.
const LONE_SURROGATE_RE = /[\ud800-\udfff]/u;

/**
 * Check that `name` is a plain file name usable under the shm root and return
 * it unchanged.
 *
 * @throws InvalidArgs saying what is wrong with it and how to fix it.
 */
export function validateShmName(name: string): string {
  if (typeof name !== 'string') {
    throw new InvalidArgs(`Invalid shared memory name ${q(name)}: must be a string; ${FIX}`);
  }
  if (name === '') {
    throw new InvalidArgs(`Invalid shared memory name '': must not be empty; ${FIX}`);
  }
  if (name === '.' || name === '..') {
    throw new InvalidArgs(`Invalid shared memory name ${q(name)}: names a directory, not a file; ${FIX}`);
  }
  if (name.includes('/')) {
    throw new InvalidArgs(`Invalid shared memory name ${q(name)}: must not contain '/'; ${FIX}`);
  }
  if (CONTROL_RE.test(name)) {
    throw new InvalidArgs(`Invalid shared memory name ${q(name)}: must not contain control characters; ${FIX}`);
  }
  if (LONE_SURROGATE_RE.test(name)) {
    throw new InvalidArgs(`Invalid shared memory name ${q(name)}: not valid Unicode (unpaired surrogate); ${FIX}`);
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > SHM_NAME_MAX_BYTES) {
    throw new InvalidArgs(
      `Invalid shared memory name ${q(name)}: ${bytes} bytes long, at most ${SHM_NAME_MAX_BYTES} allowed; use a shorter name`,
    );
  }
  return name;
}
