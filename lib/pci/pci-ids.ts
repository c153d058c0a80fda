/**
 * Device names from the system's `pci.ids` (the PCI ID Repository's file,
 * which lspci reads): vendor, device and subsystem names by id. Looked up in
 * the places distributions put it; none installed is fine (the listing then
 * shows the class name only).
 *
 * The file is about 1.5 MB of lines: `VVVV  Vendor`, `\tDDDD  Device`,
 * `\t\tSSSS SSSS  Subsystem`, comments `#`, and a `C` section of classes at
 * the end (ignored). It is read once and indexed in one pass.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

/** Where lspci finds it: Debian and Ubuntu, Fedora and Arch (hwdata), others, NixOS's system profile. */
export const PCI_IDS_PLACES = [
  '/usr/share/misc/pci.ids',
  '/usr/share/hwdata/pci.ids',
  '/usr/share/pci.ids',
  '/run/current-system/sw/share/hwdata/pci.ids',
] as const;

export interface PciNames {
  vendor(vendorId: string): string | null;
  device(vendorId: string, deviceId: string): string | null;
  subsystem(vendorId: string, deviceId: string, subVendorId: string, subDeviceId: string): string | null;
  /** The file read, or null when none was found. */
  readonly source: string | null;
}

export const NO_NAMES: PciNames = { vendor: () => null, device: () => null, subsystem: () => null, source: null };

export function parsePciIds(text: string, source: string): PciNames {
  const vendors = new Map<string, string>();
  const devices = new Map<string, string>();
  const subsystems = new Map<string, string>();
  let vendor: string | null = null;
  let device: string | null = null;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('C ')) break; // the class section: nothing after it names devices
    let m: RegExpExecArray | null;
    if ((m = /^([0-9a-f]{4})\s+(.+)$/.exec(line))) {
      vendor = m[1]!;
      device = null;
      vendors.set(vendor, m[2]!.trim());
    } else if (vendor !== null && (m = /^\t([0-9a-f]{4})\s+(.+)$/.exec(line))) {
      device = m[1]!;
      devices.set(`${vendor}:${device}`, m[2]!.trim());
    } else if (vendor !== null && device !== null && (m = /^\t\t([0-9a-f]{4}) ([0-9a-f]{4})\s+(.+)$/.exec(line))) {
      subsystems.set(`${vendor}:${device}:${m[1]}:${m[2]}`, m[3]!.trim());
    }
  }
  return {
    source,
    vendor: (v) => vendors.get(v) ?? null,
    device: (v, d) => devices.get(`${v}:${d}`) ?? null,
    subsystem: (v, d, sv, sd) => subsystems.get(`${v}:${d}:${sv}:${sd}`) ?? subsystemVendorOnly(vendors, sv),
  };
}

/** A subsystem the file does not list by itself is still named by its vendor ("XFX Limited"), as lspci does. */
function subsystemVendorOnly(vendors: ReadonlyMap<string, string>, subVendorId: string): string | null {
  const name = vendors.get(subVendorId);
  return name === undefined ? null : `${name} device`;
}

/** The first pci.ids found under `root` (`file` when given: then it must exist); NO_NAMES when none. */
export async function loadPciNames(root: string, file?: string): Promise<PciNames> {
  const places = file !== undefined ? [file] : PCI_IDS_PLACES.map((p) => path.join(root, p));
  for (const place of places) {
    try {
      return parsePciIds(await fs.readFile(place, 'utf8'), place);
    } catch (error) {
      if (file !== undefined) throw error;
    }
  }
  return NO_NAMES;
}
