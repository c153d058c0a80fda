/**
 * Everything the planner needs to know about the host, read once: devices,
 * IOMMU groups, who holds which device node, and what the host depends on.
 * Planning is pure over this snapshot; the executor re-reads live state
 * before each change and never trusts the snapshot for that.
 */
import type { KernelPort } from './kernel-port.js';
import { readPciDevices, type PciDevice } from './pci-device.js';
import { groupsOf, VFIO_DRIVER, type IommuGroup } from './iommu-group.js';
import { scanProcesses, type ProcessTable } from './holders.js';
import { hostDependencies, type Dependency } from './host-dependencies.js';
import { pciDriverDir } from './sysfs-layout.js';

export interface HostSnapshot {
  readonly devices: ReadonlyMap<string, PciDevice>;
  readonly groups: ReadonlyMap<number, IommuGroup>;
  readonly processes: ProcessTable;
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
