/**
 * libvirt domain names, as they reach us in the hook's argv, in `<name>` and
 * as `[vm.NAME]` tables of the configuration.
 *
 * libvirt itself refuses a name that is empty, that contains '/' (the QEMU
 * driver makes file names of it: `/etc/libvirt/qemu/NAME.xml`,
 * `/run/libvirt/qemu/NAME.pid`) or a newline. We refuse every control
 * character too: names go into the journal, into messages on a terminal and
 * into D-Bus object paths, and none of those should carry a raw escape
 * sequence. Length: the persistent definition is the file `NAME.xml`, and a
 * file name is at most 255 bytes (NAME_MAX), so no definable name is longer
 * than 251 bytes.
 */

import { Buffer } from 'node:buffer';

import { InvalidArgs, q } from '../errors.js';

/** Longest VM name accepted, in UTF-8 bytes: NAME_MAX (255) minus `.xml`. */
const VM_NAME_MAX_BYTES = 251;

// C0 controls (NUL and newline included), DEL, and C1 controls.
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
// With the `u` flag this matches only unpaired surrogates, which UTF-8 cannot encode.
const LONE_SURROGATE_RE = /[\ud800-\udfff]/u;

/** Why `name` is not a valid libvirt domain name, or `null` when it is. */
export function vmNameProblem(name: unknown): string | null {
  if (typeof name !== 'string') return 'must be a string';
  if (name === '') return 'must not be empty';
  if (name.includes('/')) return "must not contain '/'";
  if (CONTROL_RE.test(name)) return 'must not contain control characters';
  if (LONE_SURROGATE_RE.test(name)) return 'not valid Unicode (unpaired surrogate)';
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > VM_NAME_MAX_BYTES) return `${bytes} bytes long, at most ${VM_NAME_MAX_BYTES} allowed`;
  return null;
}

/**
 * Check a libvirt domain name and return it unchanged.
 *
 * @throws InvalidArgs saying what is wrong with it.
 */
export function validateVmName(name: string): string {
  const problem = vmNameProblem(name);
  if (problem !== null) {
    throw new InvalidArgs(`Invalid VM name ${q(name)}: ${problem}; use the name 'virsh list --all' shows`);
  }
  return name;
}
