/**
 * The `vfio-hookctl devices` listing: the IOMMU-group loop users paste from
 * wikis, with what they actually need to decide: driver, who holds the
 * device, what the host needs it for, whether the group is viable, and which
 * VM has claimed it.
 */
import { ownerKey } from '../pci/owner.js';
import { className, formatClassCode } from '../pci/class-code.js';
import { holdersOf, type Holder } from '../pci/holders.js';
import { viability } from '../pci/iommu-group.js';
import type { HostSnapshot } from '../pci/host-snapshot.js';
import type { ClaimRecord } from '../state/state-file.js';
import { NO_NAMES, type PciNames } from '../pci/pci-ids.js';
import { formatSize } from '../shm/size.js';

interface DeviceView {
  address: string;
  vendorId: string;
  deviceId: string;
  subsystemVendorId: string | null;
  subsystemDeviceId: string | null;
  /** Names from the system's pci.ids (null when it is not installed or does not know the id). */
  vendorName: string | null;
  deviceName: string | null;
  subsystemName: string | null;
  revision: string | null;
  /** The device's real sysfs path, whose folders are its bridges (the --tree). */
  sysfsPath: string;
  classCode: string;
  className: string;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
  bootVga: boolean | null;
  isBridge: boolean;
  resetMethods: string[];
  /** Resizable BARs: BAR number, supported sizes and the size now, in bytes (current null when unknown). */
  resizableBars: { bar: number; sizes: number[]; current: number | null }[];
  drm: string[];
  consumers: string[];
  holders: Holder[];
  hostDependencies: string[];
  /**
   * `owner` as `vm:NAME`, `manual:USER` or `unknown`; `originalDriver` null when driverless or unknown (`originalKnown`);
   * `hold: 'boot'` only on a device held at boot for its VM (`hold = "boot"`), which stays on vfio-pci when the VM stops.
   */
  claim: { owner: string; originalDriver: string | null; originalKnown: boolean; hold?: 'boot' } | null;
}

interface GroupView {
  group: number;
  viable: boolean;
  blockers: { address: string; driver: string }[];
  devices: string[];
}

export interface DevicesView {
  devices: DeviceView[];
  groups: GroupView[];
  /** False when not every process's fds could be read (not root): holders may be missing. */
  holdersComplete: boolean;
}

export function devicesView(snapshot: HostSnapshot, claims: ReadonlyMap<string, ClaimRecord>, names: PciNames = NO_NAMES): DevicesView {
  const devices = [...snapshot.devices.values()].map((d): DeviceView => {
    const claim = claims.get(d.address);
    return {
      address: d.address,
      vendorId: d.vendorId,
      deviceId: d.deviceId,
      subsystemVendorId: d.subsystemVendorId,
      subsystemDeviceId: d.subsystemDeviceId,
      vendorName: names.vendor(d.vendorId),
      deviceName: names.device(d.vendorId, d.deviceId),
      subsystemName:
        d.subsystemVendorId !== null && d.subsystemDeviceId !== null
          ? names.subsystem(d.vendorId, d.deviceId, d.subsystemVendorId, d.subsystemDeviceId)
          : null,
      revision: d.revision,
      sysfsPath: d.sysfsPath,
      classCode: formatClassCode(d.classCode),
      className: className(d.classCode),
      driver: d.driver,
      driverOverride: d.driverOverride,
      iommuGroup: d.iommuGroup,
      bootVga: d.bootVga,
      isBridge: d.isBridge,
      resetMethods: [...d.resetMethods],
      resizableBars: d.resizableBars.map((b) => ({ bar: b.bar, sizes: [...b.sizes], current: b.current })),
      drm: [...d.drm],
      consumers: [...d.consumers],
      holders: holdersOf(d, snapshot.processes),
      hostDependencies: (snapshot.dependencies.get(d.address) ?? []).map((x) => x.description),
      claim: claim
        ? {
            owner: ownerKey(claim.owner),
            originalDriver: claim.originalKnown ? claim.originalDriver : null,
            originalKnown: claim.originalKnown,
            ...(claim.hold === 'boot' ? { hold: 'boot' as const } : {}),
          }
        : null,
    };
  });
  const groups = [...snapshot.groups.values()].map((g): GroupView => {
    const v = viability(g, snapshot.devices);
    return { group: g.number, viable: v.viable, blockers: [...v.blockers], devices: [...g.devices] };
  });
  return { devices, groups, holdersComplete: snapshot.processes.complete };
}

/** `text` cut to `width` characters, with an ellipsis when cut. */
function fit(text: string, width: number): string {
  if (width <= 0) return '';
  return text.length <= width ? text : text.slice(0, Math.max(0, width - 1)) + '…';
}

/** `text` broken at spaces into lines of at most `width` (a longer word is cut). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line === '') line = word;
    else if (line.length + 1 + word.length <= width) line += ' ' + word;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line !== '') lines.push(line);
  return lines.map((l) => fit(l, width));
}

export interface DevicesFormat {
  /** Terminal columns; every line fits. Default 80. */
  readonly width?: number;
  /** Group by bridge (the PCI tree) instead of by IOMMU group. */
  readonly tree?: boolean;
}

const INDENT = 2;
const ADDRESS = 12;
const IDS = 9;
const REV = 3;

/** What a device's notes say: subsystem, override, boot VGA, claim, holders, host needs, reset methods, Resizable BARs. */
function notesOf(d: DeviceView): string[] {
  const notes: string[] = [];
  if (
    d.subsystemVendorId !== null &&
    d.subsystemDeviceId !== null &&
    !(d.subsystemVendorId === d.vendorId && d.subsystemDeviceId === d.deviceId)
  )
    notes.push(`subsystem ${d.subsystemVendorId}:${d.subsystemDeviceId}${d.subsystemName ? ` (${d.subsystemName})` : ''}`);
  if (d.driverOverride !== null) notes.push(`driver_override ${d.driverOverride}`);
  if (d.bootVga) notes.push('boot VGA');
  if (d.claim) {
    const was = d.claim.originalKnown ? (d.claim.originalDriver ?? 'driverless') : 'unknown: the kernel chooses at reattach';
    const vm = d.claim.owner.startsWith('vm:') ? d.claim.owner.slice(3) : null;
    notes.push(
      d.claim.hold === 'boot' && vm !== null ? `held at boot for VM '${vm}' (was ${was})` : `claimed by ${d.claim.owner} (was ${was})`,
    );
  }
  if (d.holders.length > 0) notes.push(`held by ${[...new Set(d.holders.map((h) => `${h.comm} (${h.pid})`))].join(', ')}`);
  if (d.hostDependencies.length > 0) notes.push(`host needs it: ${d.hostDependencies.join(', ')}`);
  // Last, as the least urgent: what reset-method chooses among (the kernel's order); bridges are reset with their children, not for passthrough.
  if (!d.isBridge && d.resetMethods.length > 0) notes.push(`reset ${d.resetMethods.join(' ')}`);
  for (const b of d.resizableBars) notes.push(`ReBAR BAR${b.bar} ${barText(b)}`);
  return notes;
}

/** `256M (sizes 256M-8G)`: the size now, then the range it can be resized to. */
function barText(b: DeviceView['resizableBars'][number]): string {
  const size = (n: number): string => formatSize(n);
  const range =
    b.sizes.length === 0
      ? 'no sizes'
      : b.sizes.length === 1
        ? size(b.sizes[0]!)
        : `${size(b.sizes[0]!)}-${size(b.sizes[b.sizes.length - 1]!)}`;
  return b.current === null ? `(sizes ${range})` : `${size(b.current)} (sizes ${range})`;
}

/**
 * The human listing: a header row, then one block per IOMMU group (or, with
 * `tree`, the devices under their bridges), devices without a group last.
 * Each device is a line of address, ids, revision, driver and name, then its
 * notes, wrapped under the ids column; every line fits `width` columns.
 */
export function formatDevices(view: DevicesView, format: DevicesFormat = {}): string {
  const width = Math.max(60, format.width ?? 80);
  const driverWidth = Math.min(14, Math.max(6, ...view.devices.map((d) => (d.driver ?? '-').length)));
  const row = (prefix: string, address: string, ids: string, rev: string, driver: string, name: string): string =>
    fit(
      `${prefix}${address.padEnd(ADDRESS)}  ${ids.padEnd(IDS)}  ${rev.padEnd(REV)} ${fit(driver, driverWidth).padEnd(driverWidth)}  ${name}`,
      width,
    ).trimEnd();
  const deviceLines = (d: DeviceView, prefix: string, extra: string[] = []): string[] => {
    // lspci's `Class [cccc]: Name` when it fits; else the name after the class code alone, which says the same to whoever knows the codes.
    const code = d.classCode.slice(2, 6);
    const room = width - (prefix.length + ADDRESS + 2 + IDS + 2 + REV + 1 + driverWidth + 2);
    const full = `${d.className} [${code}]${d.deviceName ? `: ${d.deviceName}` : ''}`;
    const name = full.length <= room || d.deviceName === null ? full : `[${code}] ${d.deviceName}`;
    const lines = [row(prefix, d.address, `${d.vendorId}:${d.deviceId}`, d.revision ?? '-', d.driver ?? '-', name)];
    const notes = [...extra, ...notesOf(d)].join('; ');
    const column = prefix.length + ADDRESS + 2;
    if (notes !== '') for (const l of wrap(notes, width - column)) lines.push(' '.repeat(column) + l);
    return lines;
  };
  const out: string[] = [row(' '.repeat(INDENT), 'ADDRESS', 'IDS', 'REV', 'DRIVER', 'DEVICE')];
  if (format.tree) {
    out.push(...treeLines(view, deviceLines));
  } else {
    const byAddress = new Map(view.devices.map((d) => [d.address, d]));
    for (const g of view.groups) {
      const state = g.viable ? 'viable' : `not viable: ${[...new Set(g.blockers.map((b) => b.driver))].join(', ')} bound`;
      out.push(fit(`IOMMU group ${g.group} (${state})`, width));
      for (const a of g.devices) out.push(...deviceLines(byAddress.get(a)!, ' '.repeat(INDENT)));
    }
    const ungrouped = view.devices.filter((d) => d.iommuGroup === null);
    if (ungrouped.length > 0) {
      out.push(fit('No IOMMU group (IOMMU off: nothing can be passed through)', width));
      for (const d of ungrouped) out.push(...deviceLines(d, ' '.repeat(INDENT)));
    }
  }
  if (!view.holdersComplete)
    out.push('', ...wrap('Note: not every process could be read (run as root): some holders may be missing.', width));
  return out.join('\n') + '\n';
}

const ADDRESS_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

/** The devices under the bridges their sysfs paths pass through, each level indented by two, each with its IOMMU group. */
function treeLines(view: DevicesView, deviceLines: (d: DeviceView, prefix: string, extra?: string[]) => string[]): string[] {
  const byAddress = new Map(view.devices.map((d) => [d.address, d]));
  const children = new Map<string, DeviceView[]>();
  for (const d of view.devices) {
    const above = d.sysfsPath.split('/');
    above.splice(above.lastIndexOf(d.address));
    above.reverse();
    // Its bridge: the nearest folder above it that is a device we list; else its PCI root (pci0000:00).
    const parent =
      above.find((s) => ADDRESS_RE.test(s) && byAddress.has(s)) ?? above.find((s) => /^pci[0-9a-f]{4}:[0-9a-f]{2}$/.test(s)) ?? 'pci';
    children.set(parent, [...(children.get(parent) ?? []), d]);
  }
  const out: string[] = [];
  const walk = (key: string, depth: number): void => {
    for (const d of (children.get(key) ?? []).sort((a, b) => a.address.localeCompare(b.address))) {
      out.push(
        ...deviceLines(d, ' '.repeat(INDENT + 2 * depth), [d.iommuGroup === null ? 'no IOMMU group' : `IOMMU group ${d.iommuGroup}`]),
      );
      walk(d.address, depth + 1);
    }
  };
  for (const root of [...children.keys()].filter((k) => !byAddress.has(k)).sort()) {
    out.push(root);
    walk(root, 0);
  }
  return out;
}
