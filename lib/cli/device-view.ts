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

export interface DeviceView {
  address: string;
  vendorId: string;
  deviceId: string;
  subsystemVendorId: string | null;
  subsystemDeviceId: string | null;
  classCode: string;
  className: string;
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
  bootVga: boolean | null;
  isBridge: boolean;
  resetMethods: string[];
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

export interface GroupView {
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

export function devicesView(snapshot: HostSnapshot, claims: ReadonlyMap<string, ClaimRecord>): DevicesView {
  const devices = [...snapshot.devices.values()].map((d): DeviceView => {
    const claim = claims.get(d.address);
    return {
      address: d.address,
      vendorId: d.vendorId,
      deviceId: d.deviceId,
      subsystemVendorId: d.subsystemVendorId,
      subsystemDeviceId: d.subsystemDeviceId,
      classCode: formatClassCode(d.classCode),
      className: className(d.classCode),
      driver: d.driver,
      driverOverride: d.driverOverride,
      iommuGroup: d.iommuGroup,
      bootVga: d.bootVga,
      isBridge: d.isBridge,
      resetMethods: [...d.resetMethods],
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

function pad(text: string, width: number): string {
  return text.length >= width ? text : text + ' '.repeat(width - text.length);
}

/** The human listing, one block per IOMMU group, devices without a group last. */
export function formatDevices(view: DevicesView): string {
  const byAddress = new Map(view.devices.map((d) => [d.address, d]));
  const rows: { group: string | null; cells: string[] }[] = [];
  const line = (d: DeviceView): string[] => {
    const ids = `${d.vendorId}:${d.deviceId}`;
    const notes: string[] = [];
    if (d.isBridge) notes.push('bridge');
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
    return [d.address, `${d.className} [${d.classCode.slice(2, 6)}]`, ids, d.driver ?? '-', notes.join('; ')];
  };
  for (const g of view.groups) {
    const state = g.viable ? 'viable' : `not viable: ${[...new Set(g.blockers.map((b) => b.driver))].join(', ')} bound`;
    rows.push({ group: `IOMMU group ${g.group} (${state})`, cells: [] });
    for (const a of g.devices) rows.push({ group: null, cells: line(byAddress.get(a)!) });
  }
  const ungrouped = view.devices.filter((d) => d.iommuGroup === null);
  if (ungrouped.length > 0) {
    rows.push({ group: 'No IOMMU group (IOMMU off: nothing can be passed through)', cells: [] });
    for (const d of ungrouped) rows.push({ group: null, cells: line(d) });
  }
  const widths = [0, 0, 0, 0];
  for (const r of rows) r.cells.slice(0, 4).forEach((c, i) => (widths[i] = Math.max(widths[i]!, c.length)));
  const out = rows.map((r) =>
    r.group !== null
      ? r.group
      : '  ' +
        r.cells
          .map((c, i) => (i < 4 ? pad(c, widths[i]!) : c))
          .join('  ')
          .trimEnd(),
  );
  if (!view.holdersComplete) out.push('', 'Note: not every process could be read (run as root): some holders may be missing.');
  return out.join('\n') + '\n';
}
