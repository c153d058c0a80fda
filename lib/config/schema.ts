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
 *                               on-busy, stop-units, busy-timeout and
 *                               single-gpu are file only: they act on the
 *                               host as root (stop system units), and a
 *                               domain's XML is editable by every libvirt
 *                               user.
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

import { InvalidArgs } from '../errors.js';
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
import { bool, describeValue, list, parsed, table } from './toml-schema.js';
import { validateUnitName } from '../names/unit-name.js';
import { DEFAULT_BUSY_TIMEOUT_MS as DRM_RELEASE_DEFAULT_TIMEOUT_MS } from '../host/drm-release.js';
import { ON_BUSY_VALUES } from '../host/host-policy.js';

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
});

/** The whole file: `vm` is checked table by table, so that each VM's problems carry its name. */
export const CONFIG_FILE_SCHEMA = table({
  daemon: v.optional(DAEMON_SCHEMA),
  vm: v.optional(v.unknown()),
});

export type VmTableSpec = v.InferOutput<typeof VM_TABLE_SCHEMA>;
