/**
 * The sysfs files the host changes write, under the injected roots (the
 * PCI bus's own files are in lib/pci/sysfs-layout.ts).
 */
import { under, type HostRoots } from '../roots.js';

type Sysfs = Pick<HostRoots, 'sysfs'>;

/** `<sysfs>/class/drm/NODE/uevent`: writing an action synthesises that uevent (the kernel's uevent_store). */
export function drmUeventFile(roots: Sysfs, node: string): string {
  return under(roots.sysfs, 'class', 'drm', node, 'uevent');
}

/** `<sysfs>/class/vtconsole`. */
export function vtconsoleDir(roots: Sysfs): string {
  return under(roots.sysfs, 'class', 'vtconsole');
}

/** `<sysfs>/class/vtconsole/vtconN/{bind,name}`. */
export function vtconsoleFile(roots: Sysfs, name: string, file: 'bind' | 'name'): string {
  return under(roots.sysfs, 'class', 'vtconsole', name, file);
}

/** `<sysfs>/bus/platform/drivers/DRIVER`. */
export function platformDriverDir(roots: Sysfs, driver: string): string {
  return under(roots.sysfs, 'bus', 'platform', 'drivers', driver);
}

/** `<sysfs>/bus/platform/drivers/DRIVER/{bind,unbind}`. */
export function platformDriverFile(roots: Sysfs, driver: string, file: 'bind' | 'unbind'): string {
  return under(roots.sysfs, 'bus', 'platform', 'drivers', driver, file);
}

/** `<sysfs>/bus/platform/devices/NAME/driver`: the link to its driver's folder, absent when unbound. */
export function platformDriverLink(roots: Sysfs, device: string): string {
  return under(roots.sysfs, 'bus', 'platform', 'devices', device, 'driver');
}

/** `<sysfs>/bus/platform/devices/NAME`. */
export function platformDeviceDir(roots: Sysfs, device: string): string {
  return under(roots.sysfs, 'bus', 'platform', 'devices', device);
}
