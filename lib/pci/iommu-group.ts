/**
 * IOMMU groups: the unit VFIO hands to a VM. A group is viable only when every
 * device in it is driverless, on vfio-pci, on pci-stub, or a bridge; the
 * kernel refuses the group to QEMU otherwise.
 */
import { compareAddresses, slotOf } from './address.js';
import { chipsetRole, isDisplay, isUsbController, subclassOf } from './class-code.js';
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

/** The two facts viability looks at: a bridge or not, and the driver bound now. */
export type MemberBinding = Pick<PciDevice, 'isBridge' | 'driver'>;

/** Does this device, as it is now, keep its group viable? */
export function isViableMember(device: MemberBinding): boolean {
  return device.isBridge || device.driver === null || VIABLE_DRIVERS.has(device.driver);
}

export function viability(group: IommuGroup, devices: ReadonlyMap<string, MemberBinding>): Viability {
  const blockers: { address: string; driver: string }[] = [];
  for (const address of group.devices) {
    const d = devices.get(address);
    if (d && !isViableMember(d)) blockers.push({ address, driver: d.driver! });
  }
  return { viable: blockers.length === 0, blockers };
}

/**
 * The functions of a graphics card, by the pattern the kernel links them:
 * function 0 a display controller, HD Audio at function 1, USB at 2, the
 * USB-C (UCSI) controller at 3, class 0x0c80 for want of its own class
 * (drivers/pci/quirks.c: quirk_gpu_hda, quirk_gpu_usb,
 * quirk_gpu_usb_typec_ucsi, for AMD/ATI and NVIDIA). Empty when function 0 of
 * the slot is not a display controller.
 */
export function cardFunctions(address: string, devices: ReadonlyMap<string, PciDevice>): string[] {
  const slot = slotOf(address);
  const fn0 = devices.get(`${slot}.0`);
  if (!fn0 || !isDisplay(fn0.classCode)) return [];
  const card = [fn0.address];
  const expected: readonly [number, (classCode: number) => boolean][] = [
    [1, (c) => subclassOf(c) === 0x0403],
    [2, isUsbController],
    [3, (c) => subclassOf(c) === 0x0c80],
  ];
  for (const [fn, matches] of expected) {
    const d = devices.get(`${slot}.${fn}`);
    if (d && matches(d.classCode)) card.push(d.address);
  }
  return card;
}

/**
 * The functions that go with a device the user asked for, whatever IOMMU
 * group they are in:
 * - devices tied to it by `consumer:`/`supplier:` links: the kernel's own
 *   statement that they are one card (a GPU and its HDMI audio);
 * - the other functions of its graphics card (cardFunctions), for cards and
 *   kernels that made no link.
 * Other functions of the same slot are not companions: the hardware isolates
 * functions it puts in separate IOMMU groups, and they are separate devices
 * (the two USB controllers of AMD's chipset at 06:00.1 and 06:00.3, the host
 * bridge 00:00.0 and the AMD IOMMU 00:00.2). Functions in the same group join
 * the plan by group anyway. Bridges and chipset functions are never
 * companions.
 *
 * Only requested devices have companions (plan.ts): a device that joined for
 * any other reason pulls nothing but its own group.
 */
export function companionsOf(address: string, devices: ReadonlyMap<string, PciDevice>): string[] {
  const device = devices.get(address);
  if (!device) return [];
  const found = new Set<string>([...device.consumers, ...device.suppliers]);
  const card = cardFunctions(address, devices);
  if (card.includes(address)) for (const a of card) found.add(a);
  found.delete(address);
  return [...found]
    .filter((a) => {
      const d = devices.get(a);
      return d !== undefined && !d.isBridge && chipsetRole(d.classCode) === null;
    })
    .sort(compareAddresses);
}
