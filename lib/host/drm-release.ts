/**
 * `on-busy = "release"`: ask the graphics stack to let go of the card before
 * it leaves, and give it back after.
 *
 * Writing `remove` to `/sys/class/drm/cardN/uevent` makes the kernel send a
 * synthetic `remove` uevent for that DRM node (lib/kobject.c
 * kobject_synth_uevent); the node itself stays. Compositors that follow
 * udev may treat it as a GPU hot-unplug. What each does, read in their
 * sources through the project's code search (2026-12; versions in the index,
 * not necessarily the newest):
 * - wlroots (sway, river, ...): backend/session/session.c handle_udev_event
 *   turns a drm `remove` for a device it opened into that device's `remove`
 *   signal; backend/drm/backend.c handle_dev_remove destroys the DRM
 *   backend, which closes the fd through libseat. A secondary GPU is let
 *   go and taken again on `add` (backend/drm/monitor.c handle_add_drm_card);
 *   removing the primary destroys every DRM backend.
 * - KWin: drm_backend.cpp handleUdevEvent: a secondary DrmGpu is marked
 *   removed, updateOutputs erases it and ~DrmGpu closes its fd; `add`
 *   calls addGpu again. For the primary GPU it logs "Primary gpu has been
 *   removed! Quitting..." and exits 1.
 * - Mutter: meta-udev.c emits device-removed, and its only listener
 *   (meta-kms.c on_udev_device_removed) rescans KMS resources; no GPU is
 *   ever removed (devices are freed only when MetaKms is finalized), so
 *   the fd stays open and a GNOME session does not let go: use
 *   `stop-units` or `single-gpu` there.
 * - aquamarine (Hyprland): Session.cpp dispatchUdevEvents emits the
 *   device's remove; its DRM backend drops the backend (older versions
 *   only log a FIXME), but the CSessionDevice holding the fd stays in the
 *   session's list, so the card stays open; `add` is only emitted for cards
 *   it knows, and nothing was found listening for it.
 * So `release` is for a card the desktop uses on the side (render offload,
 * an extra output), not for the card that draws the desktop. Whoever did
 * not let go within `busy-timeout` is named in the refusal, and `add` is
 * written back (undo) so the compositor picks the card up again: nothing
 * changed.
 *
 * At release the devices' current `card` nodes (the host driver's probe
 * made new ones, which it announced itself) get an `add` too: a compositor
 * that ignored the probe's own event because it still knew the old node
 * sees the card come back.
 */
import * as v from 'valibot';
import { DamagedState, DeviceBusy, q } from '../errors.js';
import { describeHolders, holdersOf, scanProcesses, type Holder } from '../pci/holders.js';
import { readHostFor } from '../pci/host-snapshot.js';
import { VFIO_DRIVER } from '../pci/iommu-group.js';
import type { KernelPort } from '../pci/kernel-port.js';
import { readPciDevice, type PciDevice } from '../pci/pci-device.js';
import type { HostChange, HostChangeRecord, HostContext } from './host-change.js';
import { drmUeventFile } from './host-layout.js';
import { needKernel, writeSysfs } from './sysfs-write.js';

export const DRM_RELEASE_KIND = 'drm-release';

/** `busy-timeout` default: 10 s, time enough for a compositor to tear down a GPU. */
export const DEFAULT_BUSY_TIMEOUT_MS = 10_000;
/**
 * How often the holders are looked for again while waiting. Polled: procfs
 * has no event for a process closing an fd (inotify does not work on /proc),
 * and a compositor may close it without exiting.
 */
const HOLDER_POLL_MS = 100;

const RecordSchema = v.object({
  kind: v.literal(DRM_RELEASE_KIND),
  /** The PCI devices whose DRM nodes were asked to let go. */
  devices: v.array(v.string()),
  /** Their `card` nodes that got `remove`. */
  nodes: v.array(v.pipe(v.string(), v.regex(/^card\d+$/))),
});
export type DrmReleaseRecord = v.InferOutput<typeof RecordSchema>;

const cards = (device: PciDevice): string[] => device.drm.filter((n) => /^card\d+$/.test(n));

async function holdersNow(port: KernelPort, addresses: readonly string[]): Promise<Holder[]> {
  const table = await scanProcesses(port);
  const holders: Holder[] = [];
  for (const address of addresses) {
    const device = await readPciDevice(port, address);
    if (device !== null) holders.push(...holdersOf(device, table));
  }
  return holders;
}

/**
 * Plan the release of the DRM nodes of `addresses` and of the functions in
 * their IOMMU groups (all of them leave together). Nothing to do when no
 * process holds any of them.
 */
export async function planDrmRelease(
  addresses: readonly string[],
  timeoutMs: number,
  context: HostContext,
): Promise<HostChange<DrmReleaseRecord>> {
  const port = needKernel(context.kernel, 'ask the graphics stack to release the card');
  // What the plan can reach (the devices, their groups' members), not the whole host: readHostFor in host-snapshot.ts.
  const snapshot = await readHostFor(port, addresses);
  const groups = new Set(addresses.map((a) => snapshot.devices.get(a)?.iommuGroup).filter((g) => g !== null && g !== undefined));
  const devices = [...snapshot.devices.values()].filter(
    (d) => (addresses.includes(d.address) || (d.iommuGroup !== null && groups.has(d.iommuGroup))) && d.driver !== VFIO_DRIVER,
  );
  const held = devices.filter((d) => holdersOf(d, snapshot.processes).length > 0);
  const withCards = held.filter((d) => cards(d).length > 0);
  const record: DrmReleaseRecord = {
    kind: DRM_RELEASE_KIND,
    devices: withCards.map((d) => d.address),
    nodes: withCards.flatMap(cards),
  };
  return {
    record,
    describe:
      record.nodes.length === 0
        ? 'no process holds the card: nothing to release'
        : `asking the graphics stack to release ${record.nodes.map((n) => `/dev/dri/${n}`).join(', ')} (a DRM remove uevent)`,
    phase: 'before-detach',
    async apply() {
      if (record.nodes.length === 0) return;
      for (const node of record.nodes)
        await writeSysfs(port, drmUeventFile(port.roots, node), 'remove', `send a remove uevent for ${q(node)}`);
      const watched = held.map((d) => d.address);
      const deadline = Date.now() + timeoutMs;
      let holders = await holdersNow(port, watched);
      while (holders.length > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, HOLDER_POLL_MS));
        holders = await holdersNow(port, watched);
      }
      if (holders.length > 0) {
        throw new DeviceBusy(
          `Cannot detach ${watched.map(q).join(', ')}: still held by ${describeHolders(holders)} ` +
            `${Math.round(timeoutMs / 100) / 10} s after a remove uevent asked the graphics stack to let go; ` +
            'close it, or stop its service with on-busy = "stop-units", refusing',
        );
      }
    },
  };
}

/** Send `add` for the recorded devices' current card nodes (none while a device is on vfio-pci or gone). */
export async function undoDrmRelease(input: HostChangeRecord, context: HostContext): Promise<void> {
  const parsed = v.safeParse(RecordSchema, input);
  if (!parsed.success)
    throw new DamagedState(`The record of released DRM nodes is not valid; run 'udevadm trigger --subsystem-match=drm --action=add'`);
  const port = needKernel(context.kernel, 'give the card back to the graphics stack');
  const failures: string[] = [];
  for (const address of parsed.output.devices) {
    const device = await readPciDevice(port, address);
    if (device === null || device.driver === null || device.driver === VFIO_DRIVER) continue;
    for (const node of cards(device)) {
      try {
        await writeSysfs(port, drmUeventFile(port.roots, node), 'add', `send an add uevent for ${q(node)}`);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
}
