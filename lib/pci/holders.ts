/**
 * Processes that hold a device open, found in `<proc>/PID/fd`.
 *
 * A display server holding `/dev/dri/card1` makes an unbind from amdgpu fail
 * or hang; a process holding `/dev/nvidia*` does the same to nvidia; QEMU
 * holding `/dev/vfio/25` makes an unbind from vfio-pci block until it lets go.
 * So we look first, and refuse with each pid and command.
 *
 * Link texts are the paths as the processes see them (`/dev/dri/card1`),
 * whatever root we read /dev from, so matching uses the kernel's own names.
 */
import type { KernelPort } from './kernel-port.js';
import type { PciDevice } from './pci-device.js';
import { VFIO_DRIVER } from './iommu-group.js';
import { isPidName, NODE_NAMES, processEntry, processFd } from './sysfs-layout.js';

export interface Holder {
  readonly pid: number;
  /** The process's `comm`, e.g. `Xorg`. */
  readonly comm: string;
  /** The node it holds, e.g. `/dev/dri/card1`. */
  readonly path: string;
}

export interface ProcessTable {
  readonly processes: readonly { pid: number; comm: string; fds: readonly string[] }[];
  /** False when some processes' fds could not be read (not root): a listing may miss holders. */
  readonly complete: boolean;
}

/** Only fds on these prefixes matter; everything else is dropped while scanning. */
const DEVICE_NODE_PREFIXES = [NODE_NAMES.dri, NODE_NAMES.nvidia, NODE_NAMES.vfio];

export async function scanProcesses(port: KernelPort): Promise<ProcessTable> {
  const pids = (await port.readDir(port.roots.proc)).filter(isPidName);
  let complete = true;
  const processes = await Promise.all(
    pids.map(async (name) => {
      let fdNames: string[];
      try {
        fdNames = await port.readDir(processEntry(port.roots, name, 'fd'));
      } catch (error) {
        // EACCES: another user's process and we are not root. ESRCH/ENOENT: it exited.
        if ((error as NodeJS.ErrnoException).code === 'EACCES') complete = false;
        return null;
      }
      const links = await Promise.all(fdNames.map((fd) => port.readLink(processFd(port.roots, name, 'fd', fd)).catch(() => null)));
      const fds = links.filter((l): l is string => l !== null && DEVICE_NODE_PREFIXES.some((p) => l.startsWith(p)));
      if (fds.length === 0) return null;
      const comm = ((await port.readFile(processEntry(port.roots, name, 'comm')).catch(() => null)) ?? '?').trim();
      return { pid: Number(name), comm, fds: [...new Set(fds)] };
    }),
  );
  return {
    processes: processes.filter((p): p is NonNullable<typeof p> => p !== null).sort((a, b) => a.pid - b.pid),
    complete,
  };
}

/** The device nodes through which a process can hold this device. */
function nodesOf(device: PciDevice): { exact: string[]; prefixes: string[] } {
  const exact = device.drm.map(NODE_NAMES.drm);
  const prefixes: string[] = [];
  if (device.driver === 'nvidia') prefixes.push(NODE_NAMES.nvidia);
  if (device.driver === VFIO_DRIVER && device.iommuGroup !== null) exact.push(NODE_NAMES.vfioGroup(device.iommuGroup));
  for (const v of device.vfioDevices) exact.push(NODE_NAMES.vfioDevice(v));
  return { exact, prefixes };
}

export function holdersOf(device: PciDevice, table: ProcessTable): Holder[] {
  const { exact, prefixes } = nodesOf(device);
  const holders: Holder[] = [];
  for (const p of table.processes) {
    for (const fd of p.fds) {
      if (exact.includes(fd) || prefixes.some((x) => fd.startsWith(x))) holders.push({ pid: p.pid, comm: p.comm, path: fd });
    }
  }
  return holders;
}

/** Processes holding `/dev/vfio/<group>`: while one does, the group is in use by a VM. */
export function groupHolders(group: number, table: ProcessTable): Holder[] {
  const node = NODE_NAMES.vfioGroup(group);
  return table.processes.filter((p) => p.fds.includes(node)).map((p) => ({ pid: p.pid, comm: p.comm, path: node }));
}

export function describeHolders(holders: readonly Holder[]): string {
  return holders.map((h) => `'${h.comm}' (pid ${h.pid}) through '${h.path}'`).join(', ');
}
