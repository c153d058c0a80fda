/**
 * The configuration file, /etc/vfio-hookd/vfio-hookd.toml: every key, its
 * type and its default. lib/config/example.toml shows them in use.
 *
 * ```
 * [daemon]                      optional
 *   qemu-user = "libvirt-qemu"  user QEMU runs as. QEMU creates a missing shm
 *                               file as itself, so an existing file owned by
 *                               this user is adopted and repaired, not refused.
 *                               Default: unset; the daemon trusts each of
 *                               'libvirt-qemu' (Debian, Ubuntu), 'qemu'
 *                               (Fedora, Arch) and 'qemu-libvirtd' (NixOS)
 *                               that exists.
 *   write-timeout = "10s"       how long one sysfs write may take before it is
 *                               abandoned as hung: a whole number with ms, s,
 *                               m or h, from 100ms to 10m. Default: "10s".
 *
 * [vm.NAME]                     one table per libvirt domain; NAME is the
 *                               domain name (`virsh list --all`), quoted when
 *                               it is not a bare key: [vm."Windows 10"].
 *   devices = ["0000:0b:00.0"]  PCI addresses to detach to vfio-pci, `lspci -D`
 *                               form or the short `0b:00.0`; the rest of each
 *                               device's IOMMU group follows. The domain's
 *                               <hostdev managed='no'> devices are added when
 *                               the VM starts. No device may be in two VMs.
 *                               Default: [].
 *   user = "alex"               whose agent starts `units`, and the owner of
 *                               the shm files (a name or a numeric uid).
 *                               Default: unset (root owns the files). A VM with
 *                               `units` needs one, here or in its metadata
 *                               (checked when the VM starts, see merge.ts).
 *   force = false               allow detaching devices the host depends on
 *                               (console, mounted disks, network that is up).
 *                               Default: false.
 *   hold = "vm"                 how long vfio-hookd keeps `devices` on vfio-pci:
 *                               "vm", while the VM runs (taken at its prepare,
 *                               given back at its release); "boot", from the
 *                               daemon's start until the host shuts down: taken
 *                               when vfio-hookd starts (ordered before the
 *                               display manager), never given back at release,
 *                               so the host driver never has the card (the
 *                               blog's initrd driver_override loop, declared).
 *                               A device already on vfio-pci then (the initrd
 *                               did it) is adopted, its original driver
 *                               unknown. File only: the daemon takes them
 *                               before any domain XML is seen. A change takes
 *                               effect at the daemon's next start; devices
 *                               taken at boot stay until then (or a
 *                               `vfio-hookctl reattach`). Default: "vm".
 *   remove-shm-on-stop = false  remove the shm files when the VM has stopped.
 *                               Default: false (they stay, so a client can
 *                               keep its mapping across guest reboots).
 *   units = ["x.service"]       user units the agent starts with the VM and
 *                               stops after it (service, socket, target,
 *                               timer, path). Default: [].
 *   on-busy = "refuse"          what to do when a process holds the card
 *                               (its /dev/dri node, /dev/nvidia*): "refuse",
 *                               name the holders and do not start the VM;
 *                               "release", send a DRM `remove` uevent so the
 *                               compositor drops the card, wait up to
 *                               `busy-timeout` for every holder to close it
 *                               (else refuse naming them, and send `add`
 *                               back), and send `add` at release; "stop-units",
 *                               stop the system units in `stop-units` that
 *                               are running (StopUnit on systemd's D-Bus,
 *                               waiting for each job) and start exactly those
 *                               again after the VM. Default: "refuse".
 *   stop-units = ["nvidia-persistenced.service"]
 *                               system units to stop for on-busy =
 *                               "stop-units" (needs that value, and it
 *                               needs at least one unit). Default: [].
 *   busy-timeout = "10s"        how long on-busy = "release" waits for the
 *                               holders to let go: a duration from 1s to 2m.
 *                               Default: "10s".
 *   single-gpu = false          the card is the host's only GPU (the boot
 *                               VGA, drawing the console and the desktop):
 *                               prepare stops display-manager.service, unbinds
 *                               the virtual consoles from the frame buffer and
 *                               the firmware frame buffer (efifb, simpledrm,
 *                               vesafb) from its driver, then detaches;
 *                               release reattaches, binds them back and starts
 *                               the display manager if it was running. Also
 *                               the opt-in the host-dependency rail asks for
 *                               before taking the boot VGA's console. Not with
 *                               hold = "boot". Default: false.
 *
 *   host-cpus = "0-3,8-11"      CPU isolation: while the VM runs, system.slice,
 *                               user.slice and init.scope may use only these
 *                               CPUs (systemd's runtime AllowedCPUs, cgroup
 *                               v2), so the VM's pinned CPUs are left to it;
 *                               restored at release. A cpulist as the kernel
 *                               writes them; every CPU listed must be online
 *                               and at least one must be left out (checked
 *                               at prepare). Applied after the detach.
 *                               Does not pin the VM (that is the domain's
 *                               <cputune>). Default: unset (no isolation).
 *   hugepages = "8G"            hugepages to reserve at prepare (memory is
 *                               compacted first, the kernel's count read
 *                               back, a short one refused with the numbers)
 *                               and give back at release: the domain's
 *                               <memory> when it has <memoryBacking>
 *                               <hugepages/>. A whole number of pages.
 *                               Default: unset (nothing reserved).
 *   hugepage-size = "2M"        their page size ("2M" or "1G" on x86), with
 *                               hugepages. Default: "2M".
 *   reset-method = { "0b:00.0" = "device_specific" }
 *                               per device of `devices`: the reset methods
 *                               the kernel may use while it is passed
 *                               through, in order ("flr bus", or a list),
 *                               written to its reset_method before the
 *                               detach, checked against what the device
 *                               offers, read back, and put back after the
 *                               reattach. `vfio-hookctl devices` shows each
 *                               device's methods. Default: none.
 *
 *                               on-busy, stop-units, busy-timeout,
 *                               single-gpu, host-cpus, hugepages,
 *                               hugepage-size and reset-method are file
 *                               only: they act on the host as root (stop
 *                               system units, restrict every host process,
 *                               take memory), and a domain's XML is
 *                               editable by every libvirt user.
 *
 * [vm.NAME.looking-glass]       optional: the Looking Glass shm file
 *   resolution = "2560x1440"    the guest's largest resolution; the size
 *                               follows (Looking Glass B7 formula, 64M here).
 *   size = "64M"                or the size itself (binary units, a power of
 *                               two, at least 1M). Exactly one of the two.
 *   hdr = false                 with `resolution`: 8 bytes a pixel instead of 4.
 *                               Default: false.
 *   name = "looking-glass"      the file /dev/shm/NAME, as in the domain's
 *                               <shmem name=...>. Default: "looking-glass".
 *   group = "qemu-libvirtd"     group of the file (name or numeric gid): QEMU's
 *                               user must be in it to open the file when QEMU
 *                               does not run as root.
 *                               Default: unset (the owner's primary group).
 *   mode = "0660"               permission bits, a quoted octal string. Write
 *                               for others and any execute bit are refused
 *                               (whoever writes the file writes into the
 *                               guest's screen); read for others is accepted
 *                               with a warning (everyone could watch the
 *                               guest's screen). Default: "0660".
 *   kvmfr = "auto"              Looking Glass's kvmfr device (/dev/kvmfrN,
 *                               what Looking Glass recommends over /dev/shm)
 *                               instead of the shm file: its size (as the
 *                               module was loaded: kvmfr.static_size_mb on
 *                               the kernel command line or in modprobe.d)
 *                               checked against the size above, its owner,
 *                               group and mode set as for the file, and put
 *                               back at release. "auto": /dev/kvmfr0 when it
 *                               exists and the domain maps no <shmem> of
 *                               this name; "off": always the shm file;
 *                               "kvmfr0" to "kvmfr9": that device, refused
 *                               when it is missing. File only.
 *                               Default: "auto".
 *
 * [vm.NAME.scream]              optional: the Scream shm file
 *   size = "2M"                 a power of two, at least 1M. Default: "2M".
 *   name = "scream"             the file /dev/shm/NAME. Default: "scream".
 *   group = "qemu-libvirtd"     group of the file, as for Looking Glass.
 *                               Default: unset: the Looking Glass table's
 *                               group when it has one (the same QEMU opens
 *                               both files), else the owner's primary group.
 *   mode = "0660"               permission bits, as for Looking Glass (read
 *                               for others: everyone could listen to the
 *                               guest). Default: "0660".
 * ```
 *
 * Warnings: a value that is accepted but probably unwise (a mode readable by
 * others) does not stop the file from loading; parseConfig returns it in
 * `Config.warnings` (`file:line:column: key: what, ignoring`) for the
 * daemon to journal.
 *
 * Unknown keys are errors, with the closest known key suggested: a typo
 * silently ignored is a setting silently lost. The same VM keys, with the
 * same meaning, may come from the domain XML's `<metadata>` (see
 * lib/domain/metadata.ts and merge.ts).
 */

import * as v from 'valibot';

import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import { parsePciAddress } from '../pci/address.js';
import {
  SCREAM_DEFAULT_SIZE,
  formatSize,
  isPowerOfTwo,
  parseResolution,
  parseSize,
  validateScreamSize,
  validateShmName,
  type Resolution,
} from '../shm/index.js';
import { validateAccountName } from '../names/account-name.js';
import { formatDuration, parseDuration } from './duration.js';
import { parseShmMode } from './file-mode.js';
import { bool, describeValue, isTable, list, parsed, table } from './toml-schema.js';
import { validateUnitName } from '../names/unit-name.js';
import { DEFAULT_BUSY_TIMEOUT_MS as DRM_RELEASE_DEFAULT_TIMEOUT_MS } from '../host/drm-release.js';
import { ON_BUSY_VALUES } from '../host/host-policy.js';
import { parseCpuList } from '../host/cpu-isolation.js';
import { parseHugepages } from '../host/hugepages.js';
import { parseResetMethod } from '../host/reset-method.js';

/** `write-timeout` default: 10 s. */
export const DEFAULT_WRITE_TIMEOUT_MS = 10_000;
/** Shortest `write-timeout`: a healthy unbind takes tens of ms, so less would fail good writes. */
export const MIN_WRITE_TIMEOUT_MS = 100;
/** Longest `write-timeout`: a hook call blocks libvirtd's job for the VM for as long as it lasts. */
export const MAX_WRITE_TIMEOUT_MS = 600_000;
/**
 * Users QEMU may run as, when `qemu-user` is unset: Debian and Ubuntu's,
 * Fedora and Arch's, NixOS's (`virtualisation.libvirtd.qemu.runAsRoot =
 * false`). Each one that exists on the host is trusted as an shm file owner.
 */
export const DEFAULT_QEMU_USERS = ['libvirt-qemu', 'qemu', 'qemu-libvirtd'] as const;
/** `[vm.NAME.looking-glass]` `name` default. */
export const DEFAULT_LOOKING_GLASS_NAME = 'looking-glass';
/** `[vm.NAME.looking-glass]` and `[vm.NAME.scream]` `mode` default: owner and group read and write. */
export const DEFAULT_SHM_MODE = 0o660;
/** `[vm.NAME.scream]` `name` default. */
export const DEFAULT_SCREAM_NAME = 'scream';
/** `[vm.NAME.scream]` `size` default: 2 MiB, Scream's documented size. */
export const DEFAULT_SCREAM_SIZE = SCREAM_DEFAULT_SIZE;
/** Smallest Looking Glass size libvirt accepts for a `<shmem>`: 1 MiB. */
const MIN_LOOKING_GLASS_SIZE = 1024 * 1024;

function lookingGlassSizeBytes(text: string): number {
  const bytes = parseSize(text);
  if (!isPowerOfTwo(bytes) || bytes < MIN_LOOKING_GLASS_SIZE) {
    let next = MIN_LOOKING_GLASS_SIZE;
    while (next < bytes) next *= 2;
    throw new InvalidArgs(
      `Invalid Looking Glass size '${text}': must be a power of two of at least 1M (it becomes a PCI BAR); use '${formatSize(next)}'`,
    );
  }
  return bytes;
}

function writeTimeout(text: string): number {
  const ms = parseDuration(text);
  if (ms < MIN_WRITE_TIMEOUT_MS || ms > MAX_WRITE_TIMEOUT_MS) {
    throw new InvalidArgs(
      `Invalid write timeout '${text}': must be from ${formatDuration(MIN_WRITE_TIMEOUT_MS)} to ${formatDuration(MAX_WRITE_TIMEOUT_MS)}`,
    );
  }
  return ms;
}

/** `busy-timeout` default: 10 s (lib/host/drm-release.ts DEFAULT_BUSY_TIMEOUT_MS). */
export const DEFAULT_BUSY_TIMEOUT_MS = DRM_RELEASE_DEFAULT_TIMEOUT_MS;
/** Shortest `busy-timeout`: a compositor needs some time to tear down a GPU. */
export const MIN_BUSY_TIMEOUT_MS = 1_000;
/** Longest `busy-timeout`: the hook call, and libvirtd's job for the VM, wait meanwhile. */
export const MAX_BUSY_TIMEOUT_MS = 120_000;

function busyTimeout(text: string): number {
  const ms = parseDuration(text);
  if (ms < MIN_BUSY_TIMEOUT_MS || ms > MAX_BUSY_TIMEOUT_MS) {
    throw new InvalidArgs(
      `Invalid busy timeout '${text}': must be from ${formatDuration(MIN_BUSY_TIMEOUT_MS)} to ${formatDuration(MAX_BUSY_TIMEOUT_MS)}`,
    );
  }
  return ms;
}

/** `looking-glass.kvmfr`: "auto", "off" or a device name. */
function kvmfrChoice(text: string): 'auto' | 'off' | `kvmfr${number}` {
  if (text === 'auto' || text === 'off') return text;
  if (/^kvmfr\d$/.test(text)) return text as `kvmfr${number}`;
  throw new InvalidArgs(`Invalid kvmfr ${q(text)}: expected "auto", "off" or a device from "kvmfr0" to "kvmfr9"`);
}

/** Each host-tuning parser throws InvalidConfig; the schema reports InvalidArgs (toml-schema.ts `parsed`). */
function asArgs<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof InvalidConfig) throw new InvalidArgs(error.message.replace(/, refusing$/, ''));
    throw error;
  }
}

/** `host-cpus`: checked as a cpulist now, kept as written (it is checked against the CPUs online at prepare). */
function hostCpus(text: string): string {
  asArgs(() => parseCpuList(text));
  return text.trim();
}

function hugepagesTotal(text: string): string {
  asArgs(() => parseSize(text));
  return text.trim();
}

function hugepageSize(text: string): string {
  asArgs(() => parseHugepages({ total: text, pageSize: text }));
  return text.trim();
}

/**
 * `reset-method = { "0b:00.0" = "device_specific", "0b:00.1" = ["flr", "bus"] }`:
 * a table keyed by PCI address (normalised), each value methods in order.
 */
const RESET_METHOD_SCHEMA = v.pipe(
  v.custom<Record<string, unknown>>(
    isTable,
    (issue) => `expected a table of PCI address = "methods", e.g. { "0b:00.0" = "flr bus" }, got ${describeValue(issue.input)}`,
  ),
  v.rawTransform<Record<string, unknown>, { address: string; methods: string[] }[]>(({ dataset, addIssue, NEVER }) => {
    const out: { address: string; methods: string[] }[] = [];
    for (const [key, value] of Object.entries(dataset.value)) {
      try {
        const address = parsePciAddress(key);
        if (typeof value !== 'string' && !(Array.isArray(value) && value.every((w) => typeof w === 'string'))) {
          throw new InvalidArgs(`expected methods as a string or an array of strings, got ${describeValue(value)}`);
        }
        out.push({ address, methods: asArgs(() => parseResetMethod(value as string | string[])) });
      } catch (error) {
        if (!(error instanceof InvalidArgs)) throw error;
        addIssue({ message: `${q(key)}: ${error.message.replace(/^Invalid/, 'invalid')}` });
      }
    }
    return out.length === Object.keys(dataset.value).length ? out : NEVER;
  }),
);

/** `hugepage-size` default: 2 MiB, the x86 base huge page. */
export const DEFAULT_HUGEPAGE_SIZE = '2M';

/** `hold` values: while the VM runs, or from the daemon's start on (see the module comment). */
export const HOLD_VALUES = ['vm', 'boot'] as const;
export type Hold = (typeof HOLD_VALUES)[number];

/** `[daemon]`. */
const DAEMON_SCHEMA = table({
  'qemu-user': v.optional(parsed((s) => validateAccountName('user', s))),
  'write-timeout': v.optional(parsed(writeTimeout)),
});

/** `[vm.NAME.looking-glass]`, before the either-resolution-or-size check. */
const LOOKING_GLASS_SCHEMA = table({
  resolution: v.optional(parsed((s): Resolution => parseResolution(s))),
  size: v.optional(parsed(lookingGlassSizeBytes)),
  hdr: v.optional(bool()),
  name: v.optional(parsed(validateShmName)),
  group: v.optional(parsed((s) => validateAccountName('group', s))),
  mode: v.optional(parsed(parseShmMode)),
  kvmfr: v.optional(parsed(kvmfrChoice)),
});

/** `[vm.NAME.scream]`. */
const SCREAM_SCHEMA = table({
  size: v.optional(parsed((s) => validateScreamSize(parseSize(s)))),
  name: v.optional(parsed(validateShmName)),
  group: v.optional(parsed((s) => validateAccountName('group', s))),
  mode: v.optional(parsed(parseShmMode)),
});

/**
 * `[vm.NAME]`, and the domain metadata's settings, which have the same keys.
 * Cross-key rules (duplicates, resolution or size, ...) are in vm-settings.ts.
 */
export const VM_TABLE_SCHEMA = table({
  devices: v.optional(list(parsed(parsePciAddress))),
  user: v.optional(parsed((s) => validateAccountName('user', s))),
  force: v.optional(bool()),
  hold: v.optional(
    v.picklist(
      HOLD_VALUES,
      (issue) => `expected "vm" (while the VM runs) or "boot" (from vfio-hookd's start on), got ${describeValue(issue.input)}`,
    ),
  ),
  'remove-shm-on-stop': v.optional(bool()),
  'looking-glass': v.optional(LOOKING_GLASS_SCHEMA),
  scream: v.optional(SCREAM_SCHEMA),
  units: v.optional(list(parsed(validateUnitName))),
  'on-busy': v.optional(
    v.picklist(ON_BUSY_VALUES, (issue) => `expected "refuse", "release" or "stop-units", got ${describeValue(issue.input)}`),
  ),
  'stop-units': v.optional(list(parsed(validateUnitName))),
  'busy-timeout': v.optional(parsed(busyTimeout)),
  'single-gpu': v.optional(bool()),
  'host-cpus': v.optional(parsed(hostCpus)),
  hugepages: v.optional(parsed(hugepagesTotal)),
  'hugepage-size': v.optional(parsed(hugepageSize)),
  'reset-method': v.optional(RESET_METHOD_SCHEMA),
});

/** The whole file: `vm` is checked table by table, so that each VM's problems carry its name. */
export const CONFIG_FILE_SCHEMA = table({
  daemon: v.optional(DAEMON_SCHEMA),
  vm: v.optional(v.unknown()),
});

export type VmTableSpec = v.InferOutput<typeof VM_TABLE_SCHEMA>;
