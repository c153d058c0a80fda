/**
 * PCI addresses: `DDDD:BB:DD.F` (domain, bus, device, function), lowercase hex.
 *
 * Users write `0b:00.0` (lspci's short form) as often as the full form, so a
 * missing domain becomes `0000`. Anything else is refused before it can reach
 * a sysfs path: an address is spliced into paths and written into kernel
 * files, so it must never carry `/`, `..` or a newline.
 */
import { InvalidArgs, q } from '../errors.js';

const FULL = /^([0-9a-f]{4}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$/;
const SHORT = /^([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$/;

interface PciAddressParts {
  readonly domain: number;
  readonly bus: number;
  readonly device: number;
  readonly fn: number;
}

/**
 * Normalise a PCI address to `DDDD:BB:DD.F` (lowercase, 4-digit domain).
 * Throws InvalidArgs naming the value and the expected form.
 */
export function parsePciAddress(text: string): string {
  // Spaces and tabs around it are forgiven; a newline or other control
  // character is not (it would be spliced into a kernel write).
  const value = text.replace(/^[ \t]+|[ \t]+$/g, '').toLowerCase();
  if (FULL.test(value)) return value;
  if (SHORT.test(value)) return `0000:${value}`;
  throw new InvalidArgs(`Invalid PCI address ${q(text)}: expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)`);
}

/** True when `text` is already a normalised address (used when reading sysfs names). */
export function isPciAddress(text: string): boolean {
  return FULL.test(text);
}

export function addressParts(address: string): PciAddressParts {
  const m = FULL.exec(address);
  if (!m) throw new InvalidArgs(`Invalid PCI address ${q(address)}`);
  return {
    domain: Number.parseInt(m[1]!, 16),
    bus: Number.parseInt(m[2]!, 16),
    device: Number.parseInt(m[3]!, 16),
    fn: Number.parseInt(m[4]!, 16),
  };
}

/** `0000:0b:00.1` -> `0000:0b:00`: the functions of one card share it. */
export function slotOf(address: string): string {
  return address.slice(0, address.lastIndexOf('.'));
}

/** Order addresses as lspci does: by domain, bus, device, function. */
export function compareAddresses(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
