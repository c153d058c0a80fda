/**
 * Where the kernel keeps what the engine reads and writes: the one place
 * that knows the sysfs layout (as libvirt's virpci.c keeps it), and the
 * device nodes and procfs entries next to it. Pure: each function joins an
 * injected root with validated names (PCI addresses, driver and class entry
 * names read from sysfs) and refuses a result outside the root (roots.ts
 * `under`). The engine (pci-device.ts, executor.ts, host-dependencies.ts,
 * holders.ts) reads through these; the simulated host (lib/sim) builds its
 * folder with the same functions, so the two cannot drift apart.
 *
 * What documents each part (paths in the kernel tree):
 *
 * - `bus/pci/devices/ADDR` and its attributes (`vendor`, `device`,
 *   `subsystem_*`, `class`, `revision`, `remove`, `reset`):
 *   Documentation/filesystems/sysfs-pci.rst; `driver_override`, `boot_vga`,
 *   `reset_method`, `drivers/<d>/{bind,unbind,new_id,remove_id}`:
 *   Documentation/ABI/testing/sysfs-bus-pci.
 * - `bus/pci/drivers_probe` and a device's `driver` link (with the driver's
 *   link back to the device): the driver core, drivers/base/bus.c.
 * - a device's `iommu_group` link, `/dev/vfio/vfio`, `/dev/vfio/N`, a
 *   device's `vfio-dev/vfioN` and `/dev/vfio/devices/vfioN` (iommufd):
 *   Documentation/driver-api/vfio.rst; `kernel/iommu_groups/N/devices`:
 *   Documentation/ABI/testing/sysfs-kernel-iommu_groups.
 * - `consumer:pci:ADDR` / `supplier:pci:ADDR` links and
 *   `devices/virtual/devlink`: Documentation/ABI/testing/sysfs-devices-consumer,
 *   sysfs-devices-supplier and sysfs-class-devlink.
 * - a device's `drm/cardN`, `drm/renderDN`, `class/drm` and `/dev/dri/`:
 *   drivers/gpu/drm/drm_sysfs.c; `class/graphics/fbN`:
 *   drivers/video/fbdev/core/fbsysfs.c.
 * - `class/net/IF/flags`: Documentation/ABI/testing/sysfs-class-net.
 * - `class/block/NAME/{dev,holders}`: Documentation/ABI/stable/sysfs-block;
 *   `dm/name`: Documentation/ABI/testing/sysfs-block-dm.
 * - `class/vtconsole/vtconN/{bind,name}`: Documentation/driver-api/console.rst.
 * - `class/input/inputN/{name,phys,capabilities/*}`: drivers/input/input.c
 *   (see input-capabilities.ts for the bitmaps).
 * - the root bus folder `devices/pciDDDD:BB`: drivers/pci/probe.c
 *   (pci_register_host_bridge).
 * - `<proc>/PID/{comm,fd/N,fdinfo/N}`, `<proc>/self/mountinfo`,
 *   `<proc>/swaps`: Documentation/filesystems/proc.rst.
 */
import path from 'node:path';
import { under, type HostRoots } from '../roots.js';

type Sysfs = Pick<HostRoots, 'sysfs'>;
type Dev = Pick<HostRoots, 'dev'>;
type Proc = Pick<HostRoots, 'proc'>;

// --- the PCI bus ---

/** Attribute files of a PCI device. */
export type PciDeviceAttribute =
  | 'vendor'
  | 'device'
  | 'subsystem_vendor'
  | 'subsystem_device'
  | 'class'
  | 'revision'
  | 'driver_override'
  | 'boot_vga'
  | 'reset_method'
  | 'remove'
  | 'reset';

/**
 * Entries of a PCI device's folder: its attributes, the `driver` and
 * `iommu_group` links, and the folders of the nodes drivers make beneath it.
 */
type PciDeviceEntry = PciDeviceAttribute | 'driver' | 'iommu_group' | 'drm' | 'vfio-dev';

/** Files of a PCI driver's folder. */
export const PCI_DRIVER_FILES = ['bind', 'unbind', 'new_id', 'remove_id'] as const;
type PciDriverFile = (typeof PCI_DRIVER_FILES)[number];

/** Prefixes of a device's device-link entries (`consumer:pci:0000:0b:00.1`). */
export const CONSUMER_LINK_PREFIX = 'consumer:pci:';
export const SUPPLIER_LINK_PREFIX = 'supplier:pci:';

/** `<sysfs>/bus/pci/devices`: one link per device, named by its address. */
export function pciDevicesDir(roots: Sysfs): string {
  return under(roots.sysfs, 'bus', 'pci', 'devices');
}

/** `<sysfs>/bus/pci/devices/ADDR`: a link to the device's real folder under `devices/`. */
export function pciDeviceDir(roots: Sysfs, address: string): string {
  return under(roots.sysfs, 'bus', 'pci', 'devices', address);
}

/** An entry of the device's folder, reached through `bus/pci/devices/ADDR`. */
export function pciDeviceEntry(roots: Sysfs, address: string, entry: PciDeviceEntry): string {
  return under(roots.sysfs, 'bus', 'pci', 'devices', address, entry);
}

/** An entry of a device folder given by its path (the simulator builds the real folders). */
export function entryIn(deviceDir: string, entry: PciDeviceEntry): string {
  return under(deviceDir, entry);
}

/** `<sysfs>/bus/pci/drivers/DRIVER`: present while the driver is loaded. */
export function pciDriverDir(roots: Sysfs, driver: string): string {
  return under(roots.sysfs, 'bus', 'pci', 'drivers', driver);
}

/** `<sysfs>/bus/pci/drivers/DRIVER/{bind,unbind,...}`: write an address to it. */
export function pciDriverFile(roots: Sysfs, driver: string, file: PciDriverFile): string {
  return under(roots.sysfs, 'bus', 'pci', 'drivers', driver, file);
}

/** `<sysfs>/bus/pci/drivers/DRIVER/ADDR`: the driver's link back to a device it has bound. */
export function pciDriverDeviceLink(roots: Sysfs, driver: string, address: string): string {
  return under(roots.sysfs, 'bus', 'pci', 'drivers', driver, address);
}

/** `<sysfs>/bus/pci/drivers_probe`: write an address to have the kernel find it a driver. */
export function pciDriversProbe(roots: Sysfs): string {
  return under(roots.sysfs, 'bus', 'pci', 'drivers_probe');
}

/**
 * A device's real folder: `<sysfs>/devices/pciDDDD:BB/ADDR...`, the root
 * bus's folder (named after the first address of `chain`) followed by the
 * addresses of the bridges down to the device, the device last.
 */
export function pciDeviceRealDir(roots: Sysfs, chain: readonly string[]): string {
  const top = chain[0] ?? '';
  return under(roots.sysfs, 'devices', `pci${top.slice(0, 7)}`, ...chain);
}

/** `<sysfs>/devices/virtual/devlink/pci:SUPPLIER--pci:CONSUMER`: a device link's own folder. */
export function devlinkDir(roots: Sysfs, supplier: string, consumer: string): string {
  return under(roots.sysfs, 'devices', 'virtual', 'devlink', `pci:${supplier}--pci:${consumer}`);
}

/** `<sysfs>/devices/virtual/{devlink,block}`: devices with no parent (device links, dm and md volumes). */
export function virtualDevicesDir(roots: Sysfs, kind: 'devlink' | 'block'): string {
  return under(roots.sysfs, 'devices', 'virtual', kind);
}

/** `DEVICE/consumer:pci:ADDR` or `DEVICE/supplier:pci:ADDR` in a device folder given by its path. */
export function devlinkEntryIn(deviceDir: string, role: 'consumer' | 'supplier', address: string): string {
  return under(deviceDir, `${role === 'consumer' ? CONSUMER_LINK_PREFIX : SUPPLIER_LINK_PREFIX}${address}`);
}

/** What a write to a PCI bus attribute is, by its path; null for any other path. */
type PciWriteTarget =
  | { readonly attribute: 'drivers_probe' }
  | { readonly attribute: 'driver_override'; readonly address: string }
  | { readonly attribute: PciDriverFile; readonly driver: string };

/**
 * Which PCI bus attribute `file` is (the inverse of the functions above, for
 * the simulated kernel): `bus/pci/drivers_probe`,
 * `bus/pci/devices/ADDR/driver_override` or `bus/pci/drivers/DRIVER/FILE`.
 * The address and driver are as written in the path, not checked.
 */
export function pciWriteTarget(roots: Sysfs, file: string): PciWriteTarget | null {
  const parts = path.relative(roots.sysfs, file).split(path.sep);
  const [bus, pci, kind, name, entry] = parts;
  if (bus !== 'bus' || pci !== 'pci') return null;
  if (kind === 'drivers_probe' && parts.length === 3) return { attribute: 'drivers_probe' };
  if (name === undefined || parts.length !== 5) return null;
  if (kind === 'devices' && entry === 'driver_override') return { attribute: 'driver_override', address: name };
  const driverFile = PCI_DRIVER_FILES.find((f) => f === entry);
  if (kind === 'drivers' && driverFile !== undefined) return { attribute: driverFile, driver: name };
  return null;
}

// --- IOMMU groups ---

/** `<sysfs>/kernel/iommu_groups`. */
export function iommuGroupsDir(roots: Sysfs): string {
  return under(roots.sysfs, 'kernel', 'iommu_groups');
}

/** `<sysfs>/kernel/iommu_groups/N`: what a device's `iommu_group` link points at. */
export function iommuGroupDir(roots: Sysfs, group: number): string {
  return under(roots.sysfs, 'kernel', 'iommu_groups', String(group));
}

/** `<sysfs>/kernel/iommu_groups/N/devices`: one link per member, named by its address. */
export function iommuGroupDevicesDir(roots: Sysfs, group: number): string {
  return under(roots.sysfs, 'kernel', 'iommu_groups', String(group), 'devices');
}

/** `<sysfs>/kernel/iommu_groups/N/devices/ADDR`: a member's link to its device folder. */
export function iommuGroupDeviceLink(roots: Sysfs, group: number, address: string): string {
  return under(roots.sysfs, 'kernel', 'iommu_groups', String(group), 'devices', address);
}

// --- classes ---

/** The entries of each class the engine reads, and the attributes it reads (or the simulator makes) in them. */
const CLASS_ATTRIBUTES = {
  block: ['dev', 'holders', 'dm/name'],
  net: ['flags', 'operstate'],
  drm: ['dev'],
  graphics: [],
  vtconsole: ['bind', 'name'],
  input: [
    'dev',
    'name',
    'phys',
    'capabilities/ev',
    'capabilities/key',
    'capabilities/rel',
    'capabilities/abs',
    'capabilities/msc',
    'capabilities/led',
  ],
} as const;

export type SysfsClass = keyof typeof CLASS_ATTRIBUTES;
export type ClassAttribute<C extends SysfsClass> = (typeof CLASS_ATTRIBUTES)[C][number];
export const SYSFS_CLASSES = Object.keys(CLASS_ATTRIBUTES) as readonly SysfsClass[];

/** `<sysfs>/class/CLASS`. */
export function classDir(roots: Sysfs, cls: SysfsClass): string {
  return under(roots.sysfs, 'class', cls);
}

/** `<sysfs>/class/CLASS/NAME`: a link to the class device's real folder. */
export function classEntry(roots: Sysfs, cls: SysfsClass, name: string): string {
  return under(roots.sysfs, 'class', cls, name);
}

/** `<sysfs>/class/CLASS/NAME/ATTR`. */
export function classAttr<C extends SysfsClass>(roots: Sysfs, cls: C, name: string, attr: ClassAttribute<C>): string {
  return under(roots.sysfs, 'class', cls, name, ...attr.split('/'));
}

/**
 * A class device's real folder beneath its parent device, `PARENT/CLASS/NAME`,
 * as DRM nodes, frame buffers and network interfaces are laid out.
 */
export function classDeviceDirIn(parentDir: string, cls: 'drm' | 'graphics' | 'net', name: string): string {
  return under(parentDir, cls, name);
}

/** An attribute in a class device's real folder given by its path (the simulator builds those). */
export function classAttrIn<C extends SysfsClass>(dir: string, _cls: C, attr: ClassAttribute<C>): string {
  return under(dir, ...attr.split('/'));
}

// --- device nodes ---

/**
 * Device nodes as the kernel and processes name them: the text of `fd`
 * links, the sources in mountinfo and swaps, the same whatever root we read
 * `/dev` from (holders.ts and host-dependencies.ts match on these).
 */
export const NODE_NAMES = {
  /** Where DRM nodes live (`/dev/dri/card1`). */
  dri: '/dev/dri/',
  /** The prefix of every NVIDIA node (`/dev/nvidia0`, `/dev/nvidiactl`). */
  nvidia: '/dev/nvidia',
  /** Where VFIO nodes live. */
  vfio: '/dev/vfio/',
  /** The VFIO container, which QEMU holds together with its groups. */
  vfioContainer: '/dev/vfio/vfio',
  drm: (name: string): string => `/dev/dri/${name}`,
  vfioGroup: (group: number): string => `/dev/vfio/${group}`,
  vfioDevice: (name: string): string => `/dev/vfio/devices/${name}`,
  /** A disk or partition as mountinfo and swaps name it (`/dev/nvme0n1p2`). */
  block: (name: string): string => `/dev/${name}`,
  /** A device-mapper volume by its `dm/name` (`/dev/mapper/cryptroot`). */
  mapper: (name: string): string => `/dev/mapper/${name}`,
} as const;

/** `<dev>/vfio/N`: appears when a group's devices are all on vfio-pci. */
export function vfioGroupNode(roots: Dev, group: number): string {
  return under(roots.dev, 'vfio', String(group));
}

/** `<dev>/vfio/vfio`: the VFIO container. */
export function vfioContainerNode(roots: Dev): string {
  return under(roots.dev, 'vfio', 'vfio');
}

/** `<dev>/dri/NAME`: a DRM node. */
export function drmNode(roots: Dev, name: string): string {
  return under(roots.dev, 'dri', name);
}

/** `<dev>/NAME`: a node directly under `/dev` (`fb0`, `nvme0n1`), or under a folder (`input/event3`). */
export function devNode(roots: Dev, ...parts: string[]): string {
  return under(roots.dev, ...parts);
}

// --- procfs ---

/** `<proc>/PID`. */
export function processDir(roots: Proc, pid: number | string): string {
  return under(roots.proc, String(pid));
}

/** `<proc>/PID/comm`, `<proc>/PID/fd`, `<proc>/PID/fdinfo`. */
export function processEntry(roots: Proc, pid: number | string, entry: 'comm' | 'fd' | 'fdinfo'): string {
  return under(roots.proc, String(pid), entry);
}

/** `<proc>/PID/fd/N` (a link to what the fd is open on) or `<proc>/PID/fdinfo/N`. */
export function processFd(roots: Proc, pid: number | string, kind: 'fd' | 'fdinfo', fd: string): string {
  return under(roots.proc, String(pid), kind, fd);
}

/** `<proc>/self/mountinfo`. */
export function mountInfoFile(roots: Proc): string {
  return under(roots.proc, 'self', 'mountinfo');
}

/** `<proc>/swaps`. */
export function swapsFile(roots: Proc): string {
  return under(roots.proc, 'swaps');
}

/** Folder names of `<proc>` that are processes. */
export function isPidName(name: string): boolean {
  return /^\d+$/.test(name);
}

/** A link's last component: the driver a `driver` link names, the group an `iommu_group` link names. */
export function linkName(link: string): string {
  return path.basename(link);
}
