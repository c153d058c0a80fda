/**
 * Permission modes of the shm files: `mode = "0660"`.
 *
 * A quoted octal string, as chmod(1) and tmpfiles.d write it. An unquoted
 * TOML integer is refused: `mode = 660` is the decimal 660 (0o1224), and
 * `mode = 0o660` cannot be told apart from a decimal 432 once parsed.
 * Only permission bits: set-id and sticky bits mean nothing on a shm file
 * and would only widen what the file allows. On top of that, parseShmMode
 * applies lib/shm's rules for shm files (no write for others, no execute
 * bits; read for others is a warning, see shmModeWarning there).
 */

import { InvalidArgs, q } from '../errors.js';
import { shmModeProblem } from '../shm/shm-mode.js';

const MODE_RE = /^[0-7]{3,4}$/;

/**
 * Parse an octal mode string (`'660'`, `'0660'`) into its number, 0 to 0o777.
 *
 * @throws InvalidArgs for anything that is not 3 or 4 octal digits, or above 0777.
 */
export function parseFileMode(text: string): number {
  if (typeof text !== 'string' || !MODE_RE.test(text)) {
    throw new InvalidArgs(`Invalid mode ${q(text)}: expected an octal mode like '0660'`);
  }
  const mode = Number.parseInt(text, 8);
  if (mode > 0o777) {
    throw new InvalidArgs(`Invalid mode ${q(text)}: only permission bits are allowed (at most '0777'), no set-id or sticky bits`);
  }
  return mode;
}

/**
 * Parse a shm file's mode: `parseFileMode`, then refuse what a shm file must
 * not allow.
 *
 * @throws InvalidArgs as parseFileMode does, and for write for others or any
 *   execute bit, with the mode to use instead.
 */
export function parseShmMode(text: string): number {
  const mode = parseFileMode(text);
  const problem = shmModeProblem(mode);
  if (problem !== null) throw new InvalidArgs(`Invalid mode ${q(text)}: ${problem}`);
  return mode;
}

/** `0o660` -> `'0660'`. */
export function formatFileMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
