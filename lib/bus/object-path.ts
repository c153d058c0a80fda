/**
 * Object-path labels, encoded as systemd's sd_bus_path_encode() does: every
 * byte outside [A-Za-z0-9], and a leading digit, becomes `_xx` (lowercase
 * hex of the UTF-8 byte); the empty label is `_`. Any libvirt VM name and any
 * PCI address is then a valid path element:
 *   win10         -> /org/vfiohookd1/machine/win10
 *   0000:0b:00.0  -> /org/vfiohookd1/device/_30000_3a0b_3a00_2e0
 */

import { DEVICE_PATH_PREFIX, MACHINE_PATH_PREFIX, SYSTEMD_UNIT_PATH_PREFIX } from './names.js';

export function encodeLabel(label: string): string {
  if (label === '') return '_';
  const bytes = Buffer.from(label, 'utf8');
  let out = '';
  for (const [i, b] of bytes.entries()) {
    const alnum = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
    const leadingDigit = i === 0 && b >= 0x30 && b <= 0x39;
    out += alnum && !leadingDigit ? String.fromCharCode(b) : `_${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

/** Inverse of encodeLabel; null when `encoded` is not a valid encoding. */
export function decodeLabel(encoded: string): string | null {
  if (encoded === '_') return '';
  const bytes: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    const c = encoded[i]!;
    if (c === '_') {
      const hex = encoded.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) return null;
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (/[A-Za-z0-9]/.test(c)) {
      bytes.push(c.charCodeAt(0));
    } else {
      return null;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export function machinePath(vmName: string): string {
  return `${MACHINE_PATH_PREFIX}/${encodeLabel(vmName)}`;
}

export function devicePath(address: string): string {
  return `${DEVICE_PATH_PREFIX}/${encodeLabel(address)}`;
}

/** The VM name of a Machine object's path; null for any other path. */
export function machineNameOf(objectPath: string): string | null {
  const prefix = `${MACHINE_PATH_PREFIX}/`;
  if (!objectPath.startsWith(prefix)) return null;
  const label = objectPath.slice(prefix.length);
  return label.includes('/') ? null : decodeLabel(label);
}

/** The object path systemd gives a unit (sd_bus_path_encode of its name). */
export function systemdUnitPath(unit: string): string {
  return SYSTEMD_UNIT_PATH_PREFIX + encodeLabel(unit);
}
