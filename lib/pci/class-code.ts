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

/** Base class and subclass, the 16 bits that say what a function is (`0x0c03`: USB). */
export function subclassOf(classCode: number): number {
  return classCode >> 8;
}

/** Audio: an HD Audio controller (`0x0403`), or an older multimedia audio one (`0x0401`). */
export function isAudio(classCode: number): boolean {
  const sub = subclassOf(classCode);
  return sub === 0x0403 || sub === 0x0401;
}

export function isUsbController(classCode: number): boolean {
  return subclassOf(classCode) === 0x0c03;
}

/**
 * What a chipset function does for the host, or null when the class is not
 * one. These are the functions the host itself runs on: none does anything
 * useful in a guest, and taking one from the host can stop it (no DMA
 * remapping without the IOMMU, no firmware flash, TPM or embedded controller
 * without the LPC bridge). vfio-pci also puts an idle device it holds into
 * D3hot, which a chipset function may not survive. So they are refused
 * whatever the request and whatever `force` says (see plan.ts).
 *
 * The list is kept to classes that are chipset plumbing on every board; each
 * entry says why. Left out on purpose: PCI bridges (they stay on pcieport and
 * keep a group viable), `0x0680` other bridges, `0x0880` other system
 * peripherals and `0x1101` performance counters (vendors file unrelated,
 * sometimes passable functions there), `0x0804` hot-plug and `0x0805` SD host
 * controllers (ordinary devices), `0x0c07` IPMI (a management interface, not
 * the chipset).
 */
export function chipsetRole(classCode: number): string | null {
  const sub = subclassOf(classCode);
  // Base class 0x05, every subclass (RAM, flash, CXL memory, other): a memory
  // controller serves the host's own memory.
  if (sub >> 8 === 0x05) return "a memory controller, serving the host's memory";
  return CHIPSET_ROLES[sub] ?? null;
}

const CHIPSET_ROLES: Readonly<Record<number, string>> = {
  // The root complex, and on AMD the data-fabric functions at 00:18.x: the
  // CPU's own link to memory and PCI (EDAC drivers bind to some of them).
  0x0600: "the host bridge, the CPU's link to memory and PCI",
  // LPC/eSPI: firmware flash, TPM, embedded controller, super I/O, legacy
  // ports; lpc_ich or the SPI-NOR driver may be bound.
  0x0601: 'the ISA/LPC bridge, which carries the firmware flash, TPM, embedded controller and legacy I/O',
  // Legacy platform devices the kernel drives directly, not through a PCI driver.
  0x0800: 'the interrupt controller (PIC or I/O APIC)',
  0x0801: 'the legacy DMA controller',
  0x0802: 'the system timer (PIT or HPET)',
  0x0803: 'the real-time clock',
  // On AMD the IOMMU is a PCI function (00:00.2) that amd_iommu uses without
  // binding a PCI driver; Intel's VT-d units are not PCI functions at all.
  0x0806: 'the IOMMU itself, which isolates every device passed through',
  // Root Complex Event Collector (PCI_CLASS_SYSTEM_RCEC in the kernel's
  // pci_ids.h, bound by pcieport): reports the errors of the root complex's
  // integrated endpoints.
  0x0807: 'the root complex event collector, which reports PCIe errors',
  // SPD EEPROMs of the memory, hardware sensors, fan control, and on AMD's FCH
  // the watchdog: piix4_smbus or i2c_i801 is bound.
  0x0c05: "the SMBus, where the memory's SPD, the sensors and fan control sit",
};

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
  0x0501: 'FLASH memory',
  0x0502: 'CXL',
  0x0580: 'Memory controller',
  0x0600: 'Host bridge',
  0x0601: 'ISA bridge',
  0x0604: 'PCI bridge',
  0x0680: 'Bridge',
  0x0780: 'Communication controller',
  0x0800: 'PIC',
  0x0801: 'DMA controller',
  0x0802: 'Timer',
  0x0803: 'RTC',
  0x0806: 'IOMMU',
  // Not in pci.ids; the name of PCI_CLASS_SYSTEM_RCEC in the kernel's pci_ids.h.
  0x0807: 'Root Complex Event Collector',
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
