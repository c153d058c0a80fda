/**
 * One PCI device as sysfs shows it, read from `<sysfs>/bus/pci/devices/ADDR`
 * (where each entry lives: sysfs-layout.ts).
 */
import { isPciAddress, compareAddresses } from './address.js';
import { isBridge } from './class-code.js';
import { under } from '../roots.js';
import type { KernelPort } from './kernel-port.js';
import {
  CONSUMER_LINK_PREFIX,
  SUPPLIER_LINK_PREFIX,
  linkName,
  pciDeviceDir,
  pciDeviceEntry,
  pciDevicesDir,
  type PciDeviceAttribute,
} from './sysfs-layout.js';

export interface PciDevice {
  /** `DDDD:BB:DD.F`. */
  readonly address: string;
  /** The device's real directory (`<sysfs>/devices/pci0000:00/.../ADDR`): what lies beneath it belongs to it. */
  readonly sysfsPath: string;
  /** Four lowercase hex digits, no `0x`. */
  readonly vendorId: string;
  readonly deviceId: string;
  readonly subsystemVendorId: string | null;
  readonly subsystemDeviceId: string | null;
  /** The 24-bit class code (base, subclass, prog-if). */
  readonly classCode: number;
  readonly revision: string | null;
  /** Bound driver's name, or null when driverless. */
  readonly driver: string | null;
  /** `driver_override`, null when it reads `(null)` or is empty. */
  readonly driverOverride: string | null;
  /** IOMMU group number, or null when the IOMMU is off (then nothing can be passed through). */
  readonly iommuGroup: number | null;
  /** `boot_vga` for display devices, null when the attribute is absent. */
  readonly bootVga: boolean | null;
  /**
   * `reset_method` words (`flr`, `bus`, ...): the methods the kernel will try, in order (Linux 5.15+); [] when
   * absent (an older kernel, or a device with no reset method).
   */
  readonly resetMethods: readonly string[];
  /** The BARs with PCIe Resizable BAR (`resourceN_resize`, Linux 6.1+), by BAR number; [] when none. */
  readonly resizableBars: readonly ResizableBar[];
  /** DRM nodes the bound driver made (`card1`, `renderD129`). */
  readonly drm: readonly string[];
  /** VFIO cdev nodes (`vfio0` under `vfio-dev/`, the iommufd interface), when present. */
  readonly vfioDevices: readonly string[];
  /** Devices linked to this one as consumers (`consumer:pci:ADDR`), e.g. a GPU's HDMI audio. */
  readonly consumers: readonly string[];
  /** Devices this one consumes (`supplier:pci:ADDR`). */
  readonly suppliers: readonly string[];
  readonly isBridge: boolean;
}

/**
 * One Resizable BAR as Documentation/ABI/testing/sysfs-bus-pci describes
 * `resourceN_resize`: reading it gives a hex bitmap of the sizes the device
 * supports, bit n = 2^n MiB (bit 0 = 1 MiB); writing a bit number resizes
 * (only with no driver bound; not done here). The current size is the BAR's
 * line in `resource` (start, end, flags).
 */
export interface ResizableBar {
  readonly bar: number;
  /** Supported sizes in bytes, smallest first. */
  readonly sizes: readonly number[];
  /** The BAR's size now in bytes; null when `resource` does not say. */
  readonly current: number | null;
}

const RESIZE_RE = /^resource(\d)_resize$/;

/** `resourceN_resize`'s bitmap (`00000000000001c0`) as sizes in bytes; [] when it does not parse. */
export function parseResizeBitmap(text: string): number[] {
  const t = text.trim();
  if (!/^(0x)?[0-9a-f]+$/i.test(t)) return [];
  const bits = BigInt(t.startsWith('0x') ? t : `0x${t}`);
  const sizes: number[] = [];
  for (let n = 0; n < 64; n++) if ((bits >> BigInt(n)) & 1n) sizes.push(2 ** (n + 20));
  return sizes;
}

/** Size of BAR `bar` from the `resource` file's lines (`0x... 0x... 0x...`); null when empty or unreadable. */
export function barSize(resource: string | null, bar: number): number | null {
  const line = resource?.split('\n')[bar];
  const m = line ? /^0x([0-9a-f]+)\s+0x([0-9a-f]+)/i.exec(line.trim()) : null;
  if (!m) return null;
  const start = BigInt(`0x${m[1]}`);
  const end = BigInt(`0x${m[2]}`);
  return end > start ? Number(end - start + 1n) : null;
}

async function readResizableBars(port: KernelPort, address: string, entries: readonly string[]): Promise<ResizableBar[]> {
  const bars = entries
    .map((e) => RESIZE_RE.exec(e))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  if (bars.length === 0) return [];
  const dir = pciDeviceDir(port.roots, address);
  const resource = await port.readFile(under(dir, 'resource'));
  const out: ResizableBar[] = [];
  for (const bar of bars) {
    const bitmap = await port.readFile(under(dir, `resource${bar}_resize`));
    if (bitmap === null) continue;
    out.push({ bar, sizes: parseResizeBitmap(bitmap), current: barSize(resource, bar) });
  }
  return out;
}

/** Hex attribute such as `0x1002\n` -> `1002`. */
function hexId(text: string | null): string | null {
  if (text === null) return null;
  const m = /^0x([0-9a-f]+)$/i.exec(text.trim());
  return m ? m[1]!.toLowerCase().padStart(4, '0') : null;
}

/** `driver_override` reads `(null)` when unset; some kernels give an empty line. */
export function parseOverride(text: string | null): string | null {
  if (text === null) return null;
  const value = text.trim();
  return value === '' || value === '(null)' ? null : value;
}

function linkedAddresses(entries: readonly string[], prefix: string): string[] {
  return entries
    .filter((e) => e.startsWith(prefix))
    .map((e) => e.slice(prefix.length))
    .filter(isPciAddress)
    .sort(compareAddresses);
}

/** Addresses of every PCI device, in lspci order. */
async function listAddresses(port: KernelPort): Promise<string[]> {
  const names = await port.readDir(pciDevicesDir(port.roots));
  return names.filter(isPciAddress).sort(compareAddresses);
}

/** Read one device; null when there is no such device. */
export async function readPciDevice(port: KernelPort, address: string): Promise<PciDevice | null> {
  const sysfsPath = await port.realPath(pciDeviceDir(port.roots, address));
  if (sysfsPath === null) return null;
  const attr = (name: PciDeviceAttribute): Promise<string | null> => port.readFile(pciDeviceEntry(port.roots, address, name));
  const [vendor, device, subVendor, subDevice, cls, revision, override, bootVga, resetMethod] = await Promise.all([
    attr('vendor'),
    attr('device'),
    attr('subsystem_vendor'),
    attr('subsystem_device'),
    attr('class'),
    attr('revision'),
    // The one attribute whose show takes the device lock: read off the event loop (fs-reads.ts).
    port.readLockedFile(pciDeviceEntry(port.roots, address, 'driver_override')),
    attr('boot_vga'),
    attr('reset_method'),
  ]);
  const [driverLink, groupLink, entries, drm, vfioDev] = await Promise.all([
    port.readLink(pciDeviceEntry(port.roots, address, 'driver')),
    port.readLink(pciDeviceEntry(port.roots, address, 'iommu_group')),
    port.readDir(pciDeviceDir(port.roots, address)),
    port.readDir(pciDeviceEntry(port.roots, address, 'drm')),
    port.readDir(pciDeviceEntry(port.roots, address, 'vfio-dev')),
  ]);
  const resizableBars = await readResizableBars(port, address, entries);
  const classCode = cls === null ? 0 : Number.parseInt(cls.trim(), 16);
  const group = groupLink === null ? null : Number.parseInt(linkName(groupLink), 10);
  return {
    address,
    sysfsPath,
    vendorId: hexId(vendor) ?? '0000',
    deviceId: hexId(device) ?? '0000',
    subsystemVendorId: hexId(subVendor),
    subsystemDeviceId: hexId(subDevice),
    classCode: Number.isNaN(classCode) ? 0 : classCode,
    revision: hexId(revision)?.slice(-2) ?? null,
    driver: driverLink === null ? null : linkName(driverLink),
    driverOverride: parseOverride(override),
    iommuGroup: group === null || Number.isNaN(group) ? null : group,
    bootVga: bootVga === null ? null : bootVga.trim() === '1',
    resetMethods: resetMethod === null ? [] : resetMethod.trim().split(/\s+/).filter(Boolean),
    resizableBars,
    drm: drm.filter((n) => /^(card|renderD)\d+$/.test(n)).sort(),
    vfioDevices: vfioDev.filter((n) => /^vfio\d+$/.test(n)).sort(),
    consumers: linkedAddresses(entries, CONSUMER_LINK_PREFIX),
    suppliers: linkedAddresses(entries, SUPPLIER_LINK_PREFIX),
    isBridge: isBridge(Number.isNaN(classCode) ? 0 : classCode),
  };
}

/** Read every device, keyed by address. */
export async function readPciDevices(port: KernelPort): Promise<Map<string, PciDevice>> {
  const addresses = await listAddresses(port);
  const devices = await Promise.all(addresses.map((a) => readPciDevice(port, a)));
  const map = new Map<string, PciDevice>();
  for (const d of devices) if (d) map.set(d.address, d);
  return map;
}
