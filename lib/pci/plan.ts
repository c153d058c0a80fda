/**
 * Plan, then act: turn "detach 0000:0b:00.0" into the ordered kernel steps,
 * as plain data, without touching anything. Every refusal (unknown device,
 * another VM's device, the root disk, a chipset function, a process holding
 * the card) happens here, before the first write.
 *
 * What a detach takes (expand), in two steps and no further:
 * 1. the requested devices and their companions (iommu-group.ts companionsOf):
 *    devices the kernel links to them (a GPU's HDMI audio) and the other
 *    functions of their graphics card (audio, USB, USB-C), in whatever IOMMU
 *    group those sit. Only a requested device has companions: nothing that
 *    joined for another reason pulls its slot siblings, so the host bridge
 *    00:00.0 never brings the AMD IOMMU 00:00.2 along, and a USB controller
 *    never brings the neighbouring controller of another group.
 * 2. every non-bridge endpoint of the IOMMU group of each device of step 1,
 *    because VFIO hands out whole groups (a companion in another group brings
 *    its group too). A group member pulls nothing further: no companions, no
 *    other groups. A chipset function in the group that keeps it viable as it
 *    is (driverless: the host bridge, the AMD IOMMU) stays as it is, out of the
 *    plan; one bound to a driver blocks the detach.
 *
 * Refusals that `force` does not lift: a chipset function in the plan
 * (requested, or a bound group member), see host-dependencies.ts canForce.
 * Everything else the host depends on (mounted disks, an up NIC, the console,
 * a keyboard or mouse beneath a USB controller) is lifted by `force`.
 *
 * Order rules:
 * - detach moves the plan's devices to vfio-pci; consumers go before their
 *   suppliers (the HDMI audio before the GPU it is linked to), then address
 *   order;
 * - reattach runs in the reverse order: suppliers first; it takes the same
 *   closure as a detach of the same addresses.
 * - per device: override, unbind, probe (and read back); per group: wait for
 *   `/dev/vfio/<group>`, then check the group is viable.
 */
import { compareAddresses, parsePciAddress } from './address.js';
import { chipsetRole, className } from './class-code.js';
import { DeviceBusy, DeviceClaimed, GroupNotViable, HostDependency, InvalidArgs, NoSuchDevice, q } from '../errors.js';
import { companionsOf, isViableMember, VFIO_DRIVER } from './iommu-group.js';
import { canForce } from './host-dependencies.js';
import { describeHolders, groupHolders, holdersOf } from './holders.js';
import type { HostSnapshot } from './host-snapshot.js';
import type { PciDevice } from './pci-device.js';
import { NODE_NAMES } from './sysfs-layout.js';
import { describeOwner, howToRelease, sameOwner, type Owner } from './owner.js';

export type Step =
  /** Write `driver` to `driver_override`, read it back. */
  | { readonly op: 'set-override'; readonly address: string; readonly driver: string }
  /** Write `"\n"` to `driver_override` (an empty write is ignored by sysfs), read back `(null)`. */
  | { readonly op: 'clear-override'; readonly address: string }
  /** Write the address to `drivers/<driver>/unbind`, wait for the `driver` link to go. */
  | { readonly op: 'unbind'; readonly address: string; readonly driver: string }
  /**
   * Write the address to `drivers_probe`, read the `driver` link back; when it
   * is not `expect` and the device is driverless, write it to
   * `drivers/<expect>/bind`. `expect: null` accepts whatever the kernel binds.
   */
  | { readonly op: 'probe'; readonly address: string; readonly expect: string | null }
  /** Wait for `<dev>/vfio/<group>`: the kernel made the group usable. */
  | { readonly op: 'await-vfio-node'; readonly group: number }
  /** Re-read the group and require it viable. */
  | { readonly op: 'check-viable'; readonly group: number };

/** Who holds a device now: an entry of the daemon's state. */
export interface Claim {
  /** The VM, the user who detached it by hand, or unknown (lib/pci/owner.ts). */
  readonly owner: Owner;
  /** The driver it had before; null when it was driverless. Meaningless when `originalKnown` is false. */
  readonly originalDriver: string | null;
  /** The `driver_override` it had before (usually null). */
  readonly originalOverride: string | null;
  /** False when nobody knows the driver it had (found on vfio-pci with no record): reattach lets the kernel choose. */
  readonly originalKnown: boolean;
}

export interface PlannedDevice {
  readonly address: string;
  /** The 24-bit class code, for messages about the device (unassigned-functions.ts). */
  readonly classCode: number;
  readonly group: number;
  /** Driver now, as planned from. */
  readonly driver: string | null;
  /** Driver after the plan: `vfio-pci` for detach, the original (or null: any) for reattach. */
  readonly target: string | null;
  /** Why this device is in the plan: `requested`, `same card as '…'`, `IOMMU group 25`. */
  readonly reason: string;
  /** False when the device is already where the plan wants it. */
  readonly changes: boolean;
}

export interface Plan {
  readonly kind: 'detach' | 'reattach';
  readonly owner: Owner;
  readonly devices: readonly PlannedDevice[];
  readonly groups: readonly number[];
  readonly steps: readonly Step[];
}

export interface PlanOptions {
  /** Who this is for; recorded as the claim's owner. */
  readonly owner: Owner;
  /** Current claims by address (from the daemon's state). Default: none. */
  readonly claims?: ReadonlyMap<string, Claim>;
  /**
   * Detach: ignore the host-dependency safety rail (mounted disks, network
   * interfaces that are up, the console, a keyboard or mouse beneath the
   * device), but never the chipset functions' (host-dependencies.ts canForce).
   * Reattach: take back devices claimed by another owner. Never overrides a
   * process holding the device. Default false.
   */
  readonly force?: boolean;
}

function describe(device: PciDevice): string {
  return `${q(device.address)} (${className(device.classCode)})`;
}

/** Validate and normalise addresses, and require each to exist with an IOMMU group. */
function requestedDevices(snapshot: HostSnapshot, addresses: readonly string[]): PciDevice[] {
  if (addresses.length === 0) throw new InvalidArgs('No PCI address given: name at least one, e.g. 0000:0b:00.0');
  const normalised = [...new Set(addresses.map(parsePciAddress))];
  return normalised.map((address) => {
    const device = snapshot.devices.get(address);
    if (!device) {
      throw new NoSuchDevice(`No PCI device ${q(address)} on this host; list them with 'vfio-hookctl devices'`);
    }
    if (device.isBridge) {
      throw new InvalidArgs(`${describe(device)} is a PCI bridge; bridges stay with the host, name the device behind it`);
    }
    if (device.iommuGroup === null) {
      throw new GroupNotViable(
        `${q(address)} has no IOMMU group: the IOMMU is off; enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on`,
      );
    }
    return device;
  });
}

/**
 * The closure of the request (the rule is in the header comment): requested
 * devices, their companions, then the groups of both. Reasons are kept in
 * the order devices joined, first reason wins.
 */
function expand(snapshot: HostSnapshot, requested: readonly PciDevice[]): Map<string, string> {
  const reasons = new Map<string, string>();
  const add = (address: string, reason: string): void => {
    if (!reasons.has(address)) reasons.set(address, reason);
  };
  for (const d of requested) add(d.address, 'requested');
  for (const d of requested) {
    for (const c of companionsOf(d.address, snapshot.devices)) add(c, `same card as ${q(d.address)}`);
  }
  for (const address of [...reasons.keys()]) {
    const group = snapshot.devices.get(address)?.iommuGroup ?? null;
    if (group === null) continue;
    for (const member of snapshot.groups.get(group)?.devices ?? []) {
      const m = snapshot.devices.get(member);
      if (!m || m.isBridge) continue;
      // A driverless chipset function keeps the group viable as it is, and
      // vfio-pci could power it down (idle D3): leave it out of the plan.
      if (chipsetRole(m.classCode) !== null && isViableMember(m)) continue;
      add(member, `IOMMU group ${group} with ${q(address)}`);
    }
  }
  return reasons;
}

/** Address order, then each device moved after every consumer of it in the set. */
function detachOrder(snapshot: HostSnapshot, addresses: Iterable<string>): string[] {
  const pending = [...addresses].sort(compareAddresses);
  const set = new Set(pending);
  const ordered: string[] = [];
  while (pending.length > 0) {
    const index = pending.findIndex((a) =>
      (snapshot.devices.get(a)?.consumers ?? []).every((c) => !set.has(c) || ordered.includes(c) || c === a),
    );
    // A link cycle cannot happen in the kernel's device-link graph; if it
    // did, fall back to address order rather than loop.
    const [next] = pending.splice(index === -1 ? 0 : index, 1);
    ordered.push(next!);
  }
  return ordered;
}

/**
 * Detach: a device claimed by another owner is refused, with how to make
 * that owner let go. A claim of unknown owner (found on vfio-pci with no
 * record) may be adopted: it is on vfio-pci already, and nobody else's.
 */
function checkDetachClaims(devices: readonly PciDevice[], options: PlanOptions): void {
  for (const d of devices) {
    const claim = options.claims?.get(d.address);
    if (claim && claim.owner.kind !== 'unknown' && !sameOwner(claim.owner, options.owner)) {
      throw new DeviceClaimed(
        `Cannot detach ${q(d.address)} for ${describeOwner(options.owner)}: it belongs to ${describeOwner(claim.owner)}; ` +
          `${howToRelease(claim.owner, d.address)}, refusing`,
      );
    }
  }
}

export function planDetach(snapshot: HostSnapshot, addresses: readonly string[], options: PlanOptions): Plan {
  const requested = requestedDevices(snapshot, addresses);
  const reasons = expand(snapshot, requested);
  const order = detachOrder(snapshot, reasons.keys());
  const devices = order.map((a) => snapshot.devices.get(a)!);
  const moving = devices.filter((d) => d.driver !== VFIO_DRIVER);

  checkDetachClaims(devices, options);

  const blocked = moving.flatMap((d) => {
    const deps = (snapshot.dependencies.get(d.address) ?? []).filter((dep) => !options.force || !canForce(dep));
    return deps.length === 0 ? [] : [{ device: d, deps }];
  });
  if (blocked.length > 0) {
    const chipset = blocked.some((b) => b.deps.some((dep) => !canForce(dep)));
    throw new HostDependency(
      `Cannot detach ${requested.map((d) => q(d.address)).join(', ')}: the host depends on it: ` +
        blocked
          .map((b) => `${describe(b.device)}, ${reasons.get(b.device.address)}: ${b.deps.map((dep) => dep.description).join(', ')}`)
          .join('; ') +
        (chipset
          ? `. A chipset function never leaves the host, not even with --force, and neither does a device in its IOMMU group; check the address ('vfio-hookctl devices'), refusing`
          : blocked.every((b) => b.deps.every((dep) => dep.kind === 'console'))
            ? // The console alone: the single-GPU hand-over is the opt-in (lib/host/host-policy.ts), not force.
              `. If this is the host's only GPU, set single-gpu = true in the VM's table: vfio-hookd then stops the display manager, ` +
              `unbinds the consoles and the frame buffer first and gives them back after the VM, refusing`
            : `. Check the address ('vfio-hookctl devices'); pass --force only if you really mean it, refusing`),
    );
  }

  const held = moving.flatMap((d) => holdersOf(d, snapshot.processes).map((h) => ({ device: d, holder: h })));
  if (held.length > 0) {
    const who = [...new Set(held.map((h) => h.device.address))]
      .map((a) => `${q(a)} is held by ${describeHolders(held.filter((h) => h.device.address === a).map((h) => h.holder))}`)
      .join('; ');
    throw new DeviceBusy(`Cannot detach ${requested.map((d) => q(d.address)).join(', ')}: ${who}; close it, refusing`);
  }

  if (moving.length > 0 && !snapshot.vfioLoaded) {
    throw new GroupNotViable(`Cannot detach ${q(requested[0]!.address)}: the vfio-pci driver is not loaded; run 'modprobe vfio-pci'`);
  }

  const steps: Step[] = [];
  for (const d of moving) {
    steps.push({ op: 'set-override', address: d.address, driver: VFIO_DRIVER });
    if (d.driver !== null) steps.push({ op: 'unbind', address: d.address, driver: d.driver });
    steps.push({ op: 'probe', address: d.address, expect: VFIO_DRIVER });
  }
  const groups = [...new Set(devices.map((d) => d.iommuGroup!))].sort((a, b) => a - b);
  for (const group of groups) {
    steps.push({ op: 'await-vfio-node', group }, { op: 'check-viable', group });
  }

  return {
    kind: 'detach',
    owner: options.owner,
    groups,
    steps,
    devices: devices.map((d) => ({
      address: d.address,
      classCode: d.classCode,
      group: d.iommuGroup!,
      driver: d.driver,
      target: VFIO_DRIVER,
      reason: reasons.get(d.address)!,
      changes: d.driver !== VFIO_DRIVER,
    })),
  };
}

export function planReattach(snapshot: HostSnapshot, addresses: readonly string[], options: PlanOptions): Plan {
  const requested = requestedDevices(snapshot, addresses);
  const reasons = expand(snapshot, requested);
  const order = detachOrder(snapshot, reasons.keys()).reverse();
  const devices = order.map((a) => snapshot.devices.get(a)!);

  const claimOf = (d: PciDevice): Claim | undefined => options.claims?.get(d.address);
  // A device returns only when it sits on vfio-pci (or is driverless with our
  // override) and its original driver was not vfio-pci itself.
  const moving = devices.filter((d) => {
    const claim = claimOf(d);
    if (claim?.originalKnown && claim.originalDriver === VFIO_DRIVER) return false;
    return d.driver === VFIO_DRIVER || (d.driver === null && d.driverOverride === VFIO_DRIVER);
  });

  const groups = [...new Set(devices.map((d) => d.iommuGroup!))].sort((a, b) => a - b);
  const inUse = groups.flatMap((g) => groupHolders(g, snapshot.processes).map((h) => ({ g, h })));
  if (inUse.length > 0 && moving.length > 0) {
    // A running VM: name it (from the claim) and how to stop it.
    const vm = devices.map((d) => claimOf(d)?.owner).find((o) => o?.kind === 'vm');
    throw new DeviceBusy(
      `Cannot reattach ${requested.map((d) => q(d.address)).join(', ')}: ` +
        inUse.map(({ g, h }) => `IOMMU group ${g} is in use by ${describeHolders([h])}`).join('; ') +
        (vm?.kind === 'vm'
          ? `, which runs ${describeOwner(vm)}; shut it down first (virsh shutdown ${q(vm.name)})`
          : '; stop the program that uses it first') +
        `, refusing`,
    );
  }
  const held = moving.flatMap((d) =>
    holdersOf(d, snapshot.processes)
      .filter((h) => !h.path.startsWith(NODE_NAMES.vfio))
      .map((h) => ({ d, h })),
  );
  if (held.length > 0) {
    throw new DeviceBusy(
      `Cannot reattach ${requested.map((d) => q(d.address)).join(', ')}: ` +
        held.map(({ d, h }) => `${q(d.address)} is held by ${describeHolders([h])}`).join('; ') +
        `; close it, refusing`,
    );
  }

  const steps: Step[] = [];
  for (const d of moving) {
    const claim = claimOf(d);
    const override = claim?.originalOverride ?? null;
    if (override !== null && override !== VFIO_DRIVER) steps.push({ op: 'set-override', address: d.address, driver: override });
    else steps.push({ op: 'clear-override', address: d.address });
    if (d.driver !== null) steps.push({ op: 'unbind', address: d.address, driver: d.driver });
    steps.push({ op: 'probe', address: d.address, expect: claim?.originalKnown ? claim.originalDriver : null });
  }

  return {
    kind: 'reattach',
    owner: options.owner,
    groups,
    steps,
    devices: devices.map((d) => ({
      address: d.address,
      classCode: d.classCode,
      group: d.iommuGroup!,
      driver: d.driver,
      target: moving.includes(d) ? (claimOf(d)?.originalKnown ? (claimOf(d)?.originalDriver ?? null) : null) : d.driver,
      reason: reasons.get(d.address)!,
      changes: moving.includes(d),
    })),
  };
}
