/**
 * Everything the planner needs to know about the host, read once: devices,
 * IOMMU groups, who holds which device node, and what the host depends on.
 * Planning is pure over this snapshot; the executor re-reads live state
 * before each change and never trusts the snapshot for that.
 *
 * Two reads make one: `readHost` reads the whole host (listings, doctor),
 * `readHostFor` only what a plan for some addresses can look at (the
 * engine's detach and reattach). On a slow machine the whole read was most
 * of an operation's time (the kernel tier measured 0.5-1.2 s of it under
 * TCG, against ~0.1 s for the writes themselves).
 */
import { isPciAddress, parsePciAddress, slotOf } from './address.js';
import type { KernelPort } from './kernel-port.js';
import { readPciDevice, readPciDevices, type PciDevice } from './pci-device.js';
import { groupsOf, VFIO_DRIVER, type IommuGroup } from './iommu-group.js';
import { scanProcesses, type ProcessTable } from './holders.js';
import { hostDependencies, type Dependency } from './host-dependencies.js';
import { iommuGroupDevicesDir, pciDriverDir } from './sysfs-layout.js';

export interface HostSnapshot {
  /**
   * The devices read: every PCI device (readHost), or those a plan for the
   * requested addresses can reach (readHostFor). Either way a device with an
   * IOMMU group comes with every other member of that group.
   */
  readonly devices: ReadonlyMap<string, PciDevice>;
  /** The IOMMU groups of `devices`, each whole. */
  readonly groups: ReadonlyMap<number, IommuGroup>;
  /** Every process that holds a DRM, NVIDIA or VFIO node: the whole /proc is always scanned. */
  readonly processes: ProcessTable;
  /** What the host depends on, for each device of `devices` that has something. */
  readonly dependencies: ReadonlyMap<string, Dependency[]>;
  /** Is `vfio-pci` loaded (`<sysfs>/bus/pci/drivers/vfio-pci` exists)? */
  readonly vfioLoaded: boolean;
}

export async function readHost(port: KernelPort): Promise<HostSnapshot> {
  const [devices, processes, vfioLoaded] = await Promise.all([
    readPciDevices(port),
    scanProcesses(port),
    port.exists(pciDriverDir(port.roots, VFIO_DRIVER)),
  ]);
  const dependencies = await hostDependencies(port, devices.values());
  return { devices, groups: groupsOf(devices), processes, dependencies, vfioLoaded };
}

/** Functions 0-3 of a slot: where cardFunctions (iommu-group.ts) looks for a graphics card's audio, USB and USB-C. */
const CARD_FUNCTIONS = [0, 1, 2, 3] as const;

/**
 * What planning a detach or reattach of `addresses` needs, and nothing the
 * plan cannot reach, so that the planner gives the same plan, or the same
 * refusal, as over readHost's whole host (test/sim/host-snapshot.test.ts
 * checks that on every fixture host):
 * - the requested devices; an address that does not parse or names no
 *   device is skipped, and the planner refuses it as it would anyway;
 * - the candidates for their companions (plan.ts expand): the devices they
 *   are linked to (`consumer:`/`supplier:`) and functions 0-3 of their slot;
 * - every member of the IOMMU group of each device read, listed from
 *   `<sysfs>/kernel/iommu_groups/N/devices` (the kernel's own list);
 * - the whole /proc scan, once: a holder may be any process;
 * - the host dependencies of those devices (host-dependencies.ts reads only
 *   the class devices beneath them, and the consoles for a boot VGA);
 * - whether vfio-pci is loaded.
 * What is not read cannot be in a plan: a group member pulls nothing
 * further, and only a requested device has companions.
 */
export async function readHostFor(port: KernelPort, addresses: readonly string[]): Promise<HostSnapshot> {
  const [devices, processes, vfioLoaded] = await Promise.all([
    reachableDevices(port, addresses),
    scanProcesses(port),
    port.exists(pciDriverDir(port.roots, VFIO_DRIVER)),
  ]);
  const dependencies = await hostDependencies(port, devices.values());
  return { devices, groups: groupsOf(devices), processes, dependencies, vfioLoaded };
}

/** The devices of readHostFor: the requested ones, their companion candidates, and their groups whole. */
async function reachableDevices(port: KernelPort, addresses: readonly string[]): Promise<Map<string, PciDevice>> {
  const devices = new Map<string, PciDevice>();
  const read = async (list: Iterable<string>): Promise<PciDevice[]> => {
    const fresh = [...new Set(list)].filter((a) => isPciAddress(a) && !devices.has(a));
    const found = (await Promise.all(fresh.map((a) => readPciDevice(port, a)))).filter((d): d is PciDevice => d !== null);
    for (const d of found) devices.set(d.address, d);
    return found;
  };
  const requested = await read(addresses.flatMap((a) => normalised(a) ?? []));
  await read(requested.flatMap((d) => [...d.consumers, ...d.suppliers, ...CARD_FUNCTIONS.map((fn) => `${slotOf(d.address)}.${fn}`)]));
  const groups = new Set([...devices.values()].map((d) => d.iommuGroup).filter((g): g is number => g !== null));
  const members = await Promise.all([...groups].map((g) => port.readDir(iommuGroupDevicesDir(port.roots, g))));
  await read(members.flat());
  return devices;
}

function normalised(address: string): string | null {
  try {
    return parsePciAddress(address);
  } catch {
    return null; // the planner refuses it, with its own message
  }
}
