/**
 * User and group names in the configuration (`user`, `group`, `qemu-user`),
 * checked for syntax only: they are resolved to ids later, when a VM starts
 * (lib/shm/accounts.ts), because an account may not exist yet when the file
 * is read (LDAP down at boot, a user created afterwards).
 *
 * The rules are those `resolveUid`/`resolveGid` apply before they ask
 * getent, so a name accepted here never fails there for its syntax: not
 * empty, at most 256 characters, no leading '-' (getent would read an option),
 * no ':' or newline (they split passwd entries), no '/', spaces or control
 * characters. A number is taken as a numeric id, at most 4294967294.
 */

import { InvalidArgs, q } from '../errors.js';
import { checkAccountName } from '../shm/accounts.js';

const MAX_ID = 0xfffffffe;

/**
 * Check a user or group name (or numeric id) and return it unchanged.
 *
 * @throws InvalidArgs saying what is wrong with it.
 */
export function validateAccountName(kind: 'user' | 'group', name: string): string {
  if (typeof name === 'string' && /^[0-9]+$/.test(name)) {
    if (Number(name) > MAX_ID) throw new InvalidArgs(`Invalid ${kind} id ${q(name)}: must be at most ${MAX_ID}`);
    return name;
  }
  checkAccountName(kind, name);
  return name;
}
