/**
 * Conversion between our values and D-Bus wire values, all in one module
 * (STYLE.md "D-Bus"): the interface classes only call these.
 */
import { devicePath, machinePath } from './object-path.js';

// Unicode noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) and, with the u flag, lone surrogates.
const NONCHARACTER_RE = /[\p{Noncharacter_Code_Point}\ud800-\udfff]/gu;

/**
 * Text every D-Bus library reads: sd-bus (busctl, systemd) refuses a string
 * holding a Unicode noncharacter, so a message quoting one (a name from the
 * domain XML) would reach busctl as "Invalid argument" instead of the
 * sentence, and a signal carrying one would be dropped. Each becomes U+FFFD.
 * Applied to text that may quote what a caller sent: error messages, hook
 * messages, VM names.
 */
export function busSafe(text: string): string {
  return text.replace(NONCHARACTER_RE, '\ufffd');
}

/** `u` for "no IOMMU group" in `ListDevices`. */
const NO_GROUP = 0xffffffff;

/** One row of `ListDevices`, before conversion. */
export interface DeviceRow {
  readonly address: string;
  readonly vendorId: string;
  readonly deviceId: string;
  readonly className: string;
  readonly driver: string | null;
  readonly iommuGroup: number | null;
  /** The VM (or other owner) that has claimed the device, or null. */
  readonly owner: string | null;
}

/** `(ssssuso)`: address, "vendor:device", class name, driver or "", group or 0xffffffff, owner or "", device path. */
export type DeviceTuple = [string, string, string, string, number, string, string];

export function deviceTuple(row: DeviceRow): DeviceTuple {
  return [
    row.address,
    `${row.vendorId}:${row.deviceId}`,
    row.className,
    row.driver ?? '',
    row.iommuGroup ?? NO_GROUP,
    row.owner ?? '',
    devicePath(row.address),
  ];
}

/** The five strings of `HandleHook`, as libvirt passes them to its hook script. */
export interface HookEvent {
  readonly domainName: string;
  readonly operation: string;
  readonly subOperation: string;
  readonly extra: string;
  readonly domainXml: string;
}

export function hookEvent(domainName: string, operation: string, subOperation: string, extra: string, domainXml: string): HookEvent {
  return { domainName, operation, subOperation, extra, domainXml };
}

/** `HookHandled(sssbst)`. */
export type HookHandledTuple = [string, string, string, boolean, string, bigint];

export function hookHandledTuple(event: HookEvent, success: boolean, message: string, durationUsec: bigint): HookHandledTuple {
  return [busSafe(event.domainName), busSafe(event.operation), busSafe(event.subOperation), success, busSafe(message), durationUsec];
}

/**
 * A Machine's `State`: `defined` (configured, not seen yet), `preparing`
 * (its prepare runs now), `prepared`, `running`, `stopped`, `releasing`
 * (its release runs now), `released`, `failed`. The daemon sets it, the agent
 * acts on it, the CLI shows it.
 */
const MACHINE_STATES = ['defined', 'preparing', 'prepared', 'running', 'stopped', 'releasing', 'released', 'failed'] as const;
export type MachineState = (typeof MACHINE_STATES)[number];

/** `value` as a MachineState; null when it is none this version knows (or not a string). */
export function decodeMachineState(value: unknown): MachineState | null {
  return (MACHINE_STATES as readonly unknown[]).includes(value) ? (value as MachineState) : null;
}

/** What the daemon knows of a VM, before conversion. */
export interface MachineRow {
  readonly name: string;
  readonly state: MachineState;
  /** PCI addresses it holds now, or will take when it starts. */
  readonly devices: readonly string[];
  /** Its shared-memory file names. */
  readonly shmFiles: readonly string[];
  /** The last hook message about it ('' when none). */
  readonly lastMessage: string;
  /** The user whose agent starts its units and who owns its shm files ('' when none). */
  readonly user: string;
  /** The user units its agent starts while it runs. */
  readonly units: readonly string[];
  /** While it is `preparing` or `releasing`: the step now running ("unbinding 0000:0b:00.0 from amdgpu"); '' otherwise. */
  readonly step?: string;
  /** When that step started, in µs since the epoch; 0 when none. */
  readonly stepSinceUsec?: bigint;
  /** Since when it is in its state, in µs since the epoch; 0 when unknown (not seen since the daemon started). */
  readonly stateSinceUsec?: bigint;
  /** The shm files its prepare made or checked, as recorded: size, owner, group, mode. */
  readonly shmDetails?: readonly ShmDetail[];
  /** Each device it holds and the driver it goes back to at release (null: the kernel chooses). */
  readonly returnDrivers?: readonly { readonly address: string; readonly driver: string | null }[];
  /** Of `devices`, those held at boot for it (`hold = "boot"`): they stay on vfio-pci when it stops. Default none. */
  readonly heldAtBoot?: readonly string[];
  /**
   * The host changes its record holds (made at prepare, undone at release),
   * in the order made: kind, phase, and what was done. Default none.
   */
  readonly hostChanges?: readonly HostChangeRow[];
}

export interface HostChangeRow {
  /** `stop-units`, `hugepages`, `cpu-isolation`, ... (lib/host/undo.ts). */
  readonly kind: string;
  readonly phase: string;
  /** As the journal says it: "reserve 32 2 MiB pages (nr_hugepages 0 -> 32)". */
  readonly describe: string;
}

export interface ShmDetail {
  readonly name: string;
  readonly sizeBytes: number;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

/** `(sso)`: name, state, machine path. */
export type MachineTuple = [string, string, string];

export function machineTuple(row: MachineRow): MachineTuple {
  return [row.name, row.state, machinePath(row.name)];
}

/** Property values of `org.vfiohookd1.Machine`, by D-Bus property name. */
export function machineProperties(row: MachineRow): Record<string, unknown> {
  return {
    // a(stuuu): name, size in bytes, uid, gid, mode bits.
    ShmFileInfo: (row.shmDetails ?? []).map((f) => [busSafe(f.name), BigInt(f.sizeBytes), f.uid, f.gid, f.mode]),
    // a(ss): address, the driver it goes back to ('' when the kernel chooses).
    ReturnDrivers: (row.returnDrivers ?? []).map((d) => [d.address, d.driver ?? '']),
    Step: busSafe(row.step ?? ''),
    StepSinceUsec: row.stepSinceUsec ?? 0n,
    StateSinceUsec: row.stateSinceUsec ?? 0n,
    Name: busSafe(row.name),
    State: row.state,
    Devices: [...row.devices],
    ShmFiles: [...row.shmFiles],
    LastMessage: busSafe(row.lastMessage),
    User: row.user,
    Units: [...row.units],
    HeldAtBoot: [...(row.heldAtBoot ?? [])],
    // a(sss): kind, phase, what was done.
    HostChanges: (row.hostChanges ?? []).map((c) => [busSafe(c.kind), busSafe(c.phase), busSafe(c.describe)]),
  };
}

/**
 * The `org.vfiohookd1.Machine` properties found in `values` (a `GetAll`
 * reply or a `PropertiesChanged` body, variants unwrapped), decoded. A
 * property that is absent, or of another type, is left out: the caller
 * decides what that means (a daemon that does not export it, or no change).
 * A `State` this version does not know is left out too.
 */
export function decodeMachineProperties(values: Readonly<Record<string, unknown>>): Partial<MachineRow> {
  const out: { -readonly [K in keyof MachineRow]?: MachineRow[K] } = {};
  const name = text(values['Name']);
  if (name !== null) out.name = name;
  const state = decodeMachineState(values['State']);
  if (state !== null) out.state = state;
  const devices = strings(values['Devices']);
  if (devices !== null) out.devices = devices;
  const shmFiles = strings(values['ShmFiles']);
  if (shmFiles !== null) out.shmFiles = shmFiles;
  const lastMessage = text(values['LastMessage']);
  if (lastMessage !== null) out.lastMessage = lastMessage;
  const user = text(values['User']);
  if (user !== null) out.user = user;
  const units = strings(values['Units']);
  if (units !== null) out.units = units;
  const step = text(values['Step']);
  if (step !== null) out.step = step;
  if (typeof values['StepSinceUsec'] === 'bigint') out.stepSinceUsec = values['StepSinceUsec'];
  if (typeof values['StateSinceUsec'] === 'bigint') out.stateSinceUsec = values['StateSinceUsec'];
  const info = values['ShmFileInfo'];
  if (Array.isArray(info))
    out.shmDetails = info.flatMap((f: unknown) => {
      if (!Array.isArray(f) || typeof f[0] !== 'string') return [];
      const [name, size, uid, gid, mode] = f as [string, bigint, number, number, number];
      return [{ name, sizeBytes: Number(size), uid: Number(uid), gid: Number(gid), mode: Number(mode) }];
    });
  const back = values['ReturnDrivers'];
  if (Array.isArray(back))
    out.returnDrivers = back.flatMap((d: unknown) =>
      Array.isArray(d) && typeof d[0] === 'string' && typeof d[1] === 'string'
        ? [{ address: d[0], driver: d[1] === '' ? null : d[1] }]
        : [],
    );
  const heldAtBoot = strings(values['HeldAtBoot']);
  if (heldAtBoot !== null) out.heldAtBoot = heldAtBoot;
  const changes = values['HostChanges'];
  if (Array.isArray(changes))
    out.hostChanges = changes.flatMap((c: unknown) =>
      Array.isArray(c) && c.length === 3 && c.every((x) => typeof x === 'string')
        ? [{ kind: c[0] as string, phase: c[1] as string, describe: c[2] as string }]
        : [],
    );
  return out;
}

/** One `ListMachines` row as read: name, state (null when this version does not know it), machine path. */
export function decodeMachineTuple(tuple: readonly unknown[]): { name: string; state: MachineState | null; path: string } {
  return { name: text(tuple[0]) ?? '', state: decodeMachineState(tuple[1]), path: text(tuple[2]) ?? '' };
}

function text(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

/** An `as` value, or null when `value` is not an array of strings. */
export function strings(value: unknown): string[] | null {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? (value as string[]) : null;
}

/** Property values of `org.vfiohookd1.Device`, by D-Bus property name. */
export function deviceProperties(row: DeviceRow): Record<string, string | number> {
  return {
    Address: row.address,
    Ids: `${row.vendorId}:${row.deviceId}`,
    Class: row.className,
    Driver: row.driver ?? '',
    IommuGroup: row.iommuGroup ?? NO_GROUP,
    Owner: row.owner ?? '',
  };
}
