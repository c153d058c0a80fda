/**
 * A VM's effective settings at hook time: its `[vm.NAME]` table, the
 * settings in its domain XML `<metadata>`, and what the rest of the XML says,
 * checked against each other before QEMU sees any of it.
 *
 * Managed: vfio-hookd manages a VM when, and only when, the VM opted in,
 * with a `[vm.NAME]` table or a `<vfio:vm>` element in its metadata (even an
 * empty one). A `<hostdev managed='no'>` or a `<shmem>` alone does not make a
 * VM ours: someone else may be handling them (the initrd `driver_override`
 * and tmpfiles setup vfio-hookd replaces does exactly that), and taking them
 * over unasked could detach a device that user keeps on vfio-pci for good.
 *
 * Combining the file and the metadata, key by key:
 * - `devices` and `units` are unions (file first, then metadata);
 * - any other key set in one place only (or to its default in the other)
 *   takes that value;
 * - a key set to two different non-default values is an error naming both.
 *   A conflict is never resolved by precedence: a VM whose settings depend
 *   on which source "wins" is one whose owner will be surprised.
 * Because the sources arrive with their defaults applied, a key set
 * explicitly to its default value counts as unset: `force = false` in the
 * file does not stop `<vfio:force>yes</vfio:force>` in the metadata.
 * Each source is validated on its own first, so a Looking Glass table (or
 * element) must give its size (or resolution) wherever it appears; the other
 * source may repeat it, or add group and mode. Rules about the VM as a whole
 * apply to the merged result: `units` need a `user`, from either source.
 *
 * Against the domain XML:
 * - every `<hostdev managed='no'>` PCI device joins `devices`: the XML is a
 *   source of devices too, and managed='no' means "someone else detaches it";
 * - a configured device that is `<hostdev managed='yes'>` is an error: libvirt
 *   would detach and reattach it too, and a device has one writer;
 * - a `<shmem>` of a configured Looking Glass or Scream file name whose
 *   `<size>` differs from the configured size is an error: QEMU refuses to
 *   start on a pre-existing shm file of another size. A `<shmem>` without
 *   `<size>` is not compared (libvirt fills in its default before the hook
 *   runs), and a configured file with no `<shmem>` is not an error (the file
 *   is simply not mapped by this VM).
 */

import type { DomainInfo } from '../domain/domain-xml.js';
import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import { formatSize, parseSize } from '../shm/index.js';
import { metadataProblemsError } from './problems.js';
import { DEFAULT_LOOKING_GLASS_NAME, DEFAULT_SCREAM_NAME, DEFAULT_SCREAM_SIZE, DEFAULT_SHM_MODE } from './schema.js';
import { formatFileMode } from './file-mode.js';
import type { LookingGlassSettings, ScreamSettings, VmSettings } from './types.js';
import { validateVmTable } from './vm-settings.js';

/**
 * The settings vfio-hookd acts on for the VM in `fromXml`.
 *
 * @param fromConfig the VM's `[vm.NAME]` table, if the file has one.
 * @param fromXml the domain XML the hook passed.
 * @returns the merged settings, or `null` when the VM is not managed (no
 *   table and no metadata).
 * @throws InvalidConfig for invalid metadata, a conflict between file and
 *   metadata, a configured device that is managed='yes', or a shm size that
 *   disagrees with the XML's `<shmem><size>`; all problems at once, a line each.
 * @throws InvalidArgs when `fromConfig` is for another VM (a caller bug).
 */
export function mergeVmSettings(fromConfig: VmSettings | undefined, fromXml: DomainInfo): VmSettings | null {
  const name = fromXml.name;
  if (fromConfig !== undefined && fromConfig.name !== name) {
    throw new InvalidArgs(`Cannot merge the settings of VM ${q(fromConfig.name)} with the domain XML of VM ${q(name)}`);
  }
  let fromMetadata: VmSettings | undefined;
  if (fromXml.metadata !== null) {
    const result = validateVmTable(name, fromXml.metadata, []);
    if (result.settings === null) throw metadataProblemsError(result.problems, `Invalid vfio-hookd metadata in VM ${q(name)}`);
    fromMetadata = result.settings;
  }
  if (fromConfig === undefined && fromMetadata === undefined) return null;

  const problems: string[] = [];
  const merged =
    fromConfig === undefined ? fromMetadata! : fromMetadata === undefined ? fromConfig : combine(fromConfig, fromMetadata, problems);

  const devices = [...merged.devices];
  for (const hostdev of fromXml.hostdevs) {
    if (hostdev.managed && devices.includes(hostdev.address)) {
      problems.push(
        `device ${q(hostdev.address)} is <hostdev managed='yes'> in the domain XML, so libvirt would detach it too; ` +
          "set managed='no' and let vfio-hookd detach it",
      );
    } else if (!hostdev.managed && !devices.includes(hostdev.address)) {
      devices.push(hostdev.address);
    }
  }

  if (merged.units.length > 0 && merged.user === null) {
    problems.push('units need a user whose agent starts them; set user = "NAME" in the configuration file or <vfio:user> in the metadata');
  }
  checkShmemSize(fromXml, merged.lookingGlass, lookingGlassSource(merged.lookingGlass), problems);
  checkShmemSize(fromXml, merged.scream, null, problems);

  if (problems.length > 0) throw new InvalidConfig(problems.map((p) => `VM ${q(name)}: ${p}`).join('\n'));
  return { ...merged, devices };
}

/** `32M` for whole MiB; `32000000 bytes` for what libvirt's decimal units give (`32MB`), which is rarely what was meant. */
function showBytes(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? formatSize(bytes) : `${bytes} bytes`;
}

/** `(2560x1440)`, `(2560x1440 HDR)`, or nothing for an explicit size. */
function lookingGlassSource(lg: LookingGlassSettings | null): string | null {
  if (lg === null || lg.resolution === null) return null;
  return lg.hdr ? `${lg.resolution} HDR` : lg.resolution;
}

function checkShmemSize(
  xml: DomainInfo,
  file: LookingGlassSettings | ScreamSettings | null,
  because: string | null,
  problems: string[],
): void {
  if (file === null) return;
  for (const shmem of xml.shmems) {
    if (shmem.name !== file.name || shmem.sizeBytes === null || shmem.sizeBytes === file.sizeBytes) continue;
    problems.push(
      `<shmem name=${q(shmem.name)}> is ${showBytes(shmem.sizeBytes)} in the domain XML but ` +
        `${formatSize(file.sizeBytes)} in the configuration${because === null ? '' : ` (${because})`}; make them agree`,
    );
  }
}

/** Key by key, as the module comment says; conflicts go to `problems`. */
function combine(file: VmSettings, meta: VmSettings, problems: string[]): VmSettings {
  const pick = <T>(key: string, a: T, b: T, unset: T, show: (x: T) => string = (x) => q(x)): T => {
    if (a === b || b === unset) return a;
    if (a === unset) return b;
    problems.push(`${key} is ${show(a)} in the configuration file but ${show(b)} in the domain XML <metadata>; set it in one place`);
    return a;
  };
  const union = (a: readonly string[], b: readonly string[]): string[] => [...a, ...b.filter((x) => !a.includes(x))];

  // In the order of the keys in the file, so conflicts are reported in that order.
  const user = pick('user', file.user, meta.user, null);
  const force = pick('force', file.force, meta.force, false, String);
  const removeShmOnStop = pick('remove-shm-on-stop', file.removeShmOnStop, meta.removeShmOnStop, false, String);
  let lookingGlass: LookingGlassSettings | null = file.lookingGlass ?? meta.lookingGlass;
  if (file.lookingGlass !== null && meta.lookingGlass !== null) {
    const a = file.lookingGlass;
    const b = meta.lookingGlass;
    lookingGlass = {
      name: pick('looking-glass.name', a.name, b.name, DEFAULT_LOOKING_GLASS_NAME),
      sizeBytes: pick('looking-glass size', a.sizeBytes, b.sizeBytes, -1, (x) => q(formatSize(x))),
      resolution: pick('looking-glass.resolution', a.resolution, b.resolution, null),
      hdr: pick('looking-glass.hdr', a.hdr, b.hdr, false, String),
      group: pick('looking-glass.group', a.group, b.group, null),
      mode: pick('looking-glass.mode', a.mode, b.mode, DEFAULT_SHM_MODE, (x) => q(formatFileMode(x))),
      // File only: the metadata has no kvmfr attribute (it changes a device node in /dev, as root).
      kvmfr: a.kvmfr,
    };
  }
  let scream: ScreamSettings | null = file.scream ?? meta.scream;
  if (file.scream !== null && meta.scream !== null) {
    scream = {
      name: pick('scream.name', file.scream.name, meta.scream.name, DEFAULT_SCREAM_NAME),
      sizeBytes: pick('scream.size', file.scream.sizeBytes, meta.scream.sizeBytes, DEFAULT_SCREAM_SIZE, (x) => q(formatSize(x))),
      group: pick('scream.group', file.scream.group, meta.scream.group, null),
      mode: pick('scream.mode', file.scream.mode, meta.scream.mode, DEFAULT_SHM_MODE, (x) => q(formatFileMode(x))),
    };
  }
  return {
    name: file.name,
    devices: union(file.devices, meta.devices),
    user,
    force,
    removeShmOnStop,
    // The metadata has no hold: it is read at hook time, and boot holds are taken at the daemon's start.
    hold: file.hold,
    lookingGlass,
    scream,
    units: union(file.units, meta.units),
    // File only (no metadata element): they act on the host as root, and a domain's XML is any libvirt user's to edit.
    onBusy: file.onBusy,
    stopUnits: file.stopUnits,
    busyTimeoutMs: file.busyTimeoutMs,
    singleGpu: file.singleGpu,
    hostCpus: file.hostCpus,
    hugepages: file.hugepages,
    resetMethods: file.resetMethods,
  };
}

/**
 * Notes for the VM's owner (the hook's stderr) when `hugepages` and the
 * domain disagree: pages reserved for a domain that does not use them, or a
 * reservation of another size than the domain's `<memory>` (QEMU then lacks
 * pages, or some stay unused). Each ends in ', ignoring': the start goes on.
 */
export function hugepagesNotes(settings: VmSettings, xml: DomainInfo): string[] {
  if (settings.hugepages === null || xml.hugepagesBacking === undefined) return [];
  const total = settings.hugepages.total;
  const at = `VM ${q(settings.name)}: hugepages`;
  if (xml.hugepagesBacking === null) {
    return [
      `${at}: ${q(total)} are reserved, but the domain has no <memoryBacking><hugepages/>, so QEMU does not use them; add it, or remove hugepages, ignoring`,
    ];
  }
  const memory = xml.hugepagesBacking.memoryBytes;
  let bytes: number;
  try {
    bytes = parseSize(total);
  } catch {
    return [];
  }
  if (memory === null || memory === bytes) return [];
  return [
    `${at}: ${q(total)} are reserved, but the domain's <memory> is ${showBytes(memory)}; make them agree (QEMU needs the whole <memory> in hugepages), ignoring`,
  ];
}
