/**
 * libvirt's scaled integers: `<size unit='M'>32</size>`.
 *
 * This is libvirt's own rule, not ours (lib/shm's `parseSize` is the one for
 * the configuration file, and it refuses decimal units on purpose). Here we
 * must read what libvirt wrote, exactly as libvirt reads it, or our size check
 * would disagree with QEMU's:
 *
 * - libvirt `src/util/virutil.c` `virScaleInteger`: the unit is
 *   case-insensitive; `b`, `byte`, `bytes` are bytes; one letter (`k`, `M`,
 *   `G`, `T`, `P`, `E`) or the letter plus `iB` (`KiB`, `MiB`, ...) is a power
 *   of 1024; the letter plus `B` (`KB`, `MB`, ...) is a power of 1000.
 * - libvirt `src/conf/domain_conf.c` `virDomainShmemDefParseXML` parses the
 *   shmem size with `virDomainParseScaledValue("./size[1]", NULL, ctxt,
 *   &def->size, 1, ...)`: the default scale is 1, so a `<size>` without a
 *   `unit` attribute is in bytes. (The formatdomain docs show only
 *   `<size unit='M'>4</size>` and do not say.) Note that `<memory>` is
 *   different: its default unit is KiB.
 * - The number is read in base 10 (`virXPathULongLong`).
 */

import { InvalidArgs, q } from '../errors.js';

const POWERS: Readonly<Record<string, number>> = { k: 1, m: 2, g: 3, t: 4, p: 5, e: 6 };

/**
 * The scale factor of a libvirt unit; `undefined` (attribute absent) or `''`
 * gives `defaultScale`.
 *
 * @throws InvalidArgs for a unit libvirt does not know.
 */
export function libvirtUnitScale(unit: string | undefined, defaultScale: bigint): bigint {
  if (unit === undefined || unit === '') return defaultScale;
  const u = unit.toLowerCase();
  if (u === 'b' || u === 'byte' || u === 'bytes') return 1n;
  const power = POWERS[u[0]!];
  let base: bigint | null = null;
  if (u.length === 1 || u.slice(1) === 'ib') base = 1024n;
  else if (u.length === 2 && u[1] === 'b') base = 1000n;
  if (power === undefined || base === null) {
    throw new InvalidArgs(`Invalid unit ${q(unit)}: expected one of libvirt's units, e.g. 'b', 'KiB', 'M', 'MiB', 'MB' or 'G'`);
  }
  return base ** BigInt(power);
}

/**
 * Parse a libvirt scaled integer (`value` is the element text, `unit` the
 * `unit` attribute) into bytes. Surrounding whitespace in the text is
 * ignored, as XML pretty-printing may add it.
 *
 * @param defaultScale the factor when there is no unit: `1n` for `<shmem><size>`.
 * @throws InvalidArgs for a non-decimal value, an unknown unit, or a result
 *   beyond `Number.MAX_SAFE_INTEGER`.
 */
export function parseLibvirtScaledSize(value: string, unit: string | undefined, defaultScale: bigint = 1n): number {
  const text = value.trim();
  if (!/^[0-9]+$/.test(text)) {
    throw new InvalidArgs(`Invalid size ${q(value)}: expected a whole decimal number`);
  }
  const bytes = BigInt(text) * libvirtUnitScale(unit, defaultScale);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgs(`Invalid size ${q(`${text} ${unit ?? ''}`.trim())}: larger than ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return Number(bytes);
}
