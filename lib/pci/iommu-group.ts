/**
 * IOMMU groups: the unit VFIO hands to a VM. A group is viable only when every
 * device in it is driverless, on vfio-pci, on pci-stub, or a bridge; the
 * kernel refuses the group to QEMU otherwise.
 */
import { compareAddresses, slotOf } from './address.js';
import type { PciDevice } from './pci-device.js';

export const VFIO_DRIVER = 'vfio-pci';
/** Drivers that leave a group viable (they do no DMA on the device). */
export const VIABLE_DRIVERS: ReadonlySet<string> = new Set([VFIO_DRIVER, 'pci-stub']);

export interface IommuGroup {
  readonly number: number;
  /** Every device in the group, bridges included, in address order. */
  readonly devices: readonly string[];
}

export interface Viability {
  readonly viable: boolean;
  /** Devices that keep the group from being viable, with their driver. */
  readonly blockers: readonly { address: string; driver: string }[];
}

export function groupsOf(devices: ReadonlyMap<string, PciDevice>): Map<number, IommuGroup> {
  const members = new Map<number, string[]>();
  for (const d of devices.values()) {
    if (d.iommuGroup === null) continue;
    const list = members.get(d.iommuGroup) ?? [];
    list.push(d.address);
    members.set(d.iommuGroup, list);
  }
  const groups = new Map<number, IommuGroup>();
  for (const number of [...members.keys()].sort((a, b) => a - b)) {
    groups.set(number, { number, devices: members.get(number)!.sort(compareAddresses) });
  }
  return groups;
}

/** Does this device, as it is now, keep its group viable? */
export function isViableMember(device: PciDevice): boolean {
  return device.isBridge || device.driver === null || VIABLE_DRIVERS.has(device.driver);
}

export function viability(group: IommuGroup, devices: ReadonlyMap<string, PciDevice>): Viability {
  const blockers: { address: string; driver: string }[] = [];
  for (const address of group.devices) {
    const d = devices.get(address);
    if (d && !isViableMember(d)) blockers.push({ address, driver: d.driver! });
  }
  return { viable: blockers.length === 0, blockers };
}

/**
 * The functions that belong with a device: the other functions of the same
 * card (same bus and slot) and devices tied to it by `consumer:`/`supplier:`
 * links (the kernel links a GPU's HDMI audio to the GPU). Bridges excepted.
 */
export function companionsOf(address: string, devices: ReadonlyMap<string, PciDevice>): string[] {
  const device = devices.get(address);
  if (!device) return [];
  const found = new Set<string>();
  for (const d of devices.values()) {
    if (d.address !== address && slotOf(d.address) === slotOf(address)) found.add(d.address);
  }
  for (const linked of [...device.consumers, ...device.suppliers]) found.add(linked);
  return [...found].filter((a) => devices.get(a)?.isBridge === false).sort(compareAddresses);
}
