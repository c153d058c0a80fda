/**
 * systemd unit names for `units = [...]`: the user units the agent starts
 * with the VM, on the user's own manager.
 *
 * systemd's rules (`unit_name_is_valid`): at most 255 characters, only
 * `[A-Za-z0-9:_.\-]` plus one `@` before the instance, a known type suffix.
 * We accept the types that can be started and make sense for a user session
 * (service, socket, target, timer, path), and refuse a bare template
 * (`foo@.service`), which cannot be started without an instance.
 */

import { InvalidArgs, q } from '../errors.js';

/** systemd's UNIT_NAME_MAX (256) minus the terminating NUL. */
const UNIT_NAME_MAX = 255;
const UNIT_TYPES = ['service', 'socket', 'target', 'timer', 'path'] as const;
const UNIT_RE = /^([A-Za-z0-9:_.\\-]+)(@[A-Za-z0-9:_.\\-]*)?\.([a-z]+)$/;

/**
 * Check a unit name and return it unchanged.
 *
 * @throws InvalidArgs saying what is wrong with it.
 */
export function validateUnitName(name: string): string {
  const example = "e.g. 'looking-glass-client.service' or 'scream@scream.service'";
  if (typeof name !== 'string' || name.length === 0 || name.length > UNIT_NAME_MAX) {
    throw new InvalidArgs(`Invalid unit name ${q(name)}: must be 1 to ${UNIT_NAME_MAX} characters, ${example}`);
  }
  const match = UNIT_RE.exec(name);
  if (!match) {
    throw new InvalidArgs(
      `Invalid unit name ${q(name)}: only letters, digits, ':', '_', '.', '\\', '-' and one '@' are allowed, with a type suffix, ${example}`,
    );
  }
  if (!(UNIT_TYPES as readonly string[]).includes(match[3]!)) {
    throw new InvalidArgs(`Invalid unit name ${q(name)}: the type must be one of ${UNIT_TYPES.map((t) => `'.${t}'`).join(', ')}`);
  }
  if (match[2] === '@') {
    throw new InvalidArgs(`Invalid unit name ${q(name)}: a template needs an instance, e.g. '${match[1]}@looking-glass.${match[3]}'`);
  }
  return name;
}
