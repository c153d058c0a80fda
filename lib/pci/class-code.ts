/**
 * PCI class codes (the 24-bit `class` attribute: base class, subclass, prog-if)
 * and the few facts the engine draws from them.
 */

/** Bridges stay on their driver (pcieport): a group is viable with them bound. */
export function isBridge(classCode: number): boolean {
  return classCode >> 16 === 0x06 && ((classCode >> 8) & 0xff) === 0x04;
}

export function isDisplay(classCode: number): boolean {
  return classCode >> 16 === 0x03;
}

/** Human name for a class code, as lspci prints it (subclass first, then base class). */
export function className(classCode: number): string {
  const base = classCode >> 16;
  const sub = (classCode >> 8) & 0xff;
  return SUBCLASS_NAMES[(base << 8) | sub] ?? BASE_NAMES[base] ?? `Class ${formatClassCode(classCode)}`;
}

export function formatClassCode(classCode: number): string {
  return `0x${classCode.toString(16).padStart(6, '0')}`;
}

// From the PCI Code and ID Assignment Specification (the same names as pci.ids' class section).
const BASE_NAMES: Readonly<Record<number, string>> = {
  0x00: 'Unclassified device',
  0x01: 'Mass storage controller',
  0x02: 'Network controller',
  0x03: 'Display controller',
  0x04: 'Multimedia controller',
  0x05: 'Memory controller',
  0x06: 'Bridge',
  0x07: 'Communication controller',
  0x08: 'Generic system peripheral',
  0x09: 'Input device controller',
  0x0c: 'Serial bus controller',
  0x0d: 'Wireless controller',
  0x10: 'Encryption controller',
  0x11: 'Signal processing controller',
  0x12: 'Processing accelerators',
  0x13: 'Non-Essential Instrumentation',
  0x40: 'Coprocessor',
};

const SUBCLASS_NAMES: Readonly<Record<number, string>> = {
  0x0100: 'SCSI storage controller',
  0x0101: 'IDE interface',
  0x0104: 'RAID bus controller',
  0x0106: 'SATA controller',
  0x0107: 'Serial Attached SCSI controller',
  0x0108: 'Non-Volatile memory controller',
  0x0200: 'Ethernet controller',
  0x0280: 'Network controller',
  0x0300: 'VGA compatible controller',
  0x0302: '3D controller',
  0x0380: 'Display controller',
  0x0401: 'Multimedia audio controller',
  0x0403: 'Audio device',
  0x0480: 'Multimedia controller',
  0x0500: 'RAM memory',
  0x0600: 'Host bridge',
  0x0601: 'ISA bridge',
  0x0604: 'PCI bridge',
  0x0680: 'Bridge',
  0x0780: 'Communication controller',
  0x0800: 'PIC',
  0x0806: 'IOMMU',
  0x0880: 'System peripheral',
  0x0c03: 'USB controller',
  0x0c05: 'SMBus',
  0x0c80: 'Serial bus controller',
  0x1080: 'Encryption controller',
  0x1101: 'Performance counters',
  0x1180: 'Signal processing controller',
  0x1200: 'Processing accelerators',
  0x1300: 'Non-Essential Instrumentation',
};
