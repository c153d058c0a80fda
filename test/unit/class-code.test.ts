/**
 * Which PCI classes are chipset functions (never detached, whatever force
 * says), and the names the listing prints for the classes involved.
 */
import test from 'ava';
import { chipsetRole, className } from '../../lib/pci/class-code.js';

const roles: [number, string | null][] = [
  [0x060000, "the host bridge, the CPU's link to memory and PCI"],
  [0x060100, 'the ISA/LPC bridge, which carries the firmware flash, TPM, embedded controller and legacy I/O'],
  [0x080000, 'the interrupt controller (PIC or I/O APIC)'],
  [0x080010, 'the interrupt controller (PIC or I/O APIC)'],
  [0x080100, 'the legacy DMA controller'],
  [0x080203, 'the system timer (PIT or HPET)'],
  [0x080300, 'the real-time clock'],
  [0x080600, 'the IOMMU itself, which isolates every device passed through'],
  [0x080700, 'the root complex event collector, which reports PCIe errors'],
  [0x0c0500, "the SMBus, where the memory's SPD, the sensors and fan control sit"],
  [0x050000, "a memory controller, serving the host's memory"],
  [0x050100, "a memory controller, serving the host's memory"],
  [0x050210, "a memory controller, serving the host's memory"],
  [0x058000, "a memory controller, serving the host's memory"],
  // Not chipset functions: what a guest may well get, or classes vendors fill with unrelated devices.
  [0x060400, null],
  [0x060401, null],
  [0x068000, null],
  [0x080400, null],
  [0x080500, null],
  [0x088000, null],
  [0x0c0330, null],
  [0x0c8000, null],
  [0x0c0700, null],
  [0x030000, null],
  [0x040300, null],
  [0x010802, null],
  [0x110100, null],
  [0x130000, null],
];

for (const [code, role] of roles) {
  test(`chipsetRole(0x${code.toString(16).padStart(6, '0')}) is ${role === null ? 'null' : 'a chipset function'}`, (t) => {
    t.is(chipsetRole(code), role);
  });
}

const names: [number, string][] = [
  [0x060000, 'Host bridge'],
  [0x060100, 'ISA bridge'],
  [0x080600, 'IOMMU'],
  [0x080700, 'Root Complex Event Collector'],
  [0x0c0500, 'SMBus'],
  [0x050000, 'RAM memory'],
  [0x050200, 'CXL'],
  [0x058000, 'Memory controller'],
  [0x080300, 'RTC'],
];

for (const [code, name] of names) {
  test(`className(0x${code.toString(16).padStart(6, '0')}) is '${name}'`, (t) => {
    t.is(className(code), name);
  });
}
