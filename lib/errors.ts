/**
 * Every condition vfio-hookd reports, one class each, all in this module.
 *
 * Each class carries the D-Bus error name it becomes at the bus boundary
 * (`DeviceBusy` -> `org.vfiohookd1.DeviceBusy`). Messages follow one shape:
 * what failed, the value in single quotes, the cause, and the fix where
 * there is one; a refusal ends in `, refusing`.
 *
 * `lib` throws these and never logs them; the caller in `service/` logs each
 * error once and maps it to its bus name. Anything that is not one of these
 * becomes `org.freedesktop.DBus.Error.Failed` with a short text.
 */

const BUS_ERROR_PREFIX = 'org.vfiohookd1.';

export abstract class VfioHookdError extends Error {
  /** The full D-Bus error name this error is sent as. */
  abstract readonly dbusName: string;
}

function busName(condition: string): string {
  return BUS_ERROR_PREFIX + condition;
}

/** A process holds the device (DRM node, `/dev/nvidia*`, `/dev/vfio/N`), so unbinding would fail or hang. */
export class DeviceBusy extends VfioHookdError {
  override readonly name = 'DeviceBusy';
  readonly dbusName = busName('DeviceBusy');
}

/** The device already belongs to another VM. */
export class DeviceClaimed extends VfioHookdError {
  override readonly name = 'DeviceClaimed';
  readonly dbusName = busName('DeviceClaimed');
}

/** No PCI device at that address (or it vanished while we worked). */
export class NoSuchDevice extends VfioHookdError {
  override readonly name = 'NoSuchDevice';
  readonly dbusName = busName('NoSuchDevice');
}

/** An IOMMU group would not be (or is not) usable by VFIO. */
export class GroupNotViable extends VfioHookdError {
  override readonly name = 'GroupNotViable';
  readonly dbusName = busName('GroupNotViable');
}

/** A kernel write or a wait did not finish in time. */
export class Timeout extends VfioHookdError {
  override readonly name = 'Timeout';
  readonly dbusName = busName('Timeout');
}

/** A path escapes its root, is a symlink, a hard link, or of the wrong type or owner. */
export class UnsafePath extends VfioHookdError {
  override readonly name = 'UnsafePath';
  readonly dbusName = busName('UnsafePath');
}

/** The configuration (file or domain XML metadata) is not valid. */
export class InvalidConfig extends VfioHookdError {
  override readonly name = 'InvalidConfig';
  readonly dbusName = busName('InvalidConfig');
}

/**
 * The host visibly depends on the device: it holds a mounted or swapped-on
 * block device, a network interface that is up, or the console. Not in the
 * design card's first list; added because "busy" (a process holds a node)
 * and "the root disk is beneath it" need different fixes.
 */
export class HostDependency extends VfioHookdError {
  override readonly name = 'HostDependency';
  readonly dbusName = busName('HostDependency');
}

/**
 * The kernel did not bind the device to the driver we asked for, and it was
 * put back. Added to the design card's list: it is neither busy nor a timeout.
 */
export class BindFailed extends VfioHookdError {
  override readonly name = 'BindFailed';
  readonly dbusName = busName('BindFailed');
}

/**
 * The state file cannot be trusted (empty, truncated, not JSON, a future
 * version, a symlink, a directory). Never sent to a caller with the file's
 * content; the daemon moves such a file aside and rebuilds from sysfs.
 */
export class DamagedState extends VfioHookdError {
  override readonly name = 'DamagedState';
  readonly dbusName = busName('DamagedState');
}

/** Another process holds the state lock for longer than we wait. */
export class StateLocked extends VfioHookdError {
  override readonly name = 'StateLocked';
  readonly dbusName = busName('StateLocked');
}

/** vfio-hookd is not on the bus (a client such as `vfio-hookctl status` found nobody to ask). */
export class DaemonNotRunning extends VfioHookdError {
  override readonly name = 'DaemonNotRunning';
  readonly dbusName = 'org.freedesktop.DBus.Error.ServiceUnknown';
}

/**
 * A systemd unit job (StopUnit/StartUnit of a unit named by `on-busy =
 * "stop-units"` or `single-gpu`) did not end `done`. The design card's
 * `UnitFailed`, used here for the system manager's jobs.
 */
export class UnitFailed extends VfioHookdError {
  override readonly name = 'UnitFailed';
  readonly dbusName = busName('UnitFailed');
}

/** A caller passed a malformed argument (address, name, size, ...). */
export class InvalidArgs extends VfioHookdError {
  override readonly name = 'InvalidArgs';
  readonly dbusName = 'org.freedesktop.DBus.Error.InvalidArgs';
}

/** Values up to this many characters are quoted whole: a VM name (at most 251 bytes), a path, a unit name. */
export const QUOTE_WHOLE_MAX = 256;

/** How many characters of a longer value are kept. */
export const QUOTE_KEEP = 64;

// One code point: a surrogate pair, or any single UTF-16 unit.
const CODE_POINT_RE = /[\ud800-\udbff][\udc00-\udfff]|[\s\S]/g;

/**
 * Quote a value for a message: single quotes, control characters made
 * visible (`\x0a`). A value longer than `QUOTE_WHOLE_MAX` characters is cut
 * to its first `QUOTE_KEEP` and its length given, `'aaaa…' (10000
 * characters)`, so that a refusal always fits in what busctl, libvirt and the
 * journal show, whatever a caller sent. Characters are code points: a cut
 * never splits a surrogate pair.
 */
export function q(value: unknown): string {
  let text = String(value);
  let suffix = '';
  // A string has at least as many UTF-16 units as code points: the cheap test first.
  if (text.length > QUOTE_WHOLE_MAX) {
    const count = text.length - (text.match(/[\ud800-\udbff][\udc00-\udfff]/g)?.length ?? 0);
    if (count > QUOTE_WHOLE_MAX) {
      text = (text.slice(0, 2 * QUOTE_KEEP).match(CODE_POINT_RE) ?? []).slice(0, QUOTE_KEEP).join('');
      suffix = `…' (${count} characters)`;
    }
  }
  const shown = text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return suffix === '' ? `'${shown}'` : `'${shown}${suffix}`;
}
