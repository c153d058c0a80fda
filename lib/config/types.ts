/**
 * The configuration after validation: every default applied, every value
 * normalised (PCI addresses `DDDD:BB:DD.F`, sizes in bytes, modes as numbers,
 * durations in ms). What each key means and defaults to is documented once,
 * in schema.ts.
 */

/** `[daemon]`. */
export interface DaemonSettings {
  /** `qemu-user`; `null` when unset (the daemon then trusts each of DEFAULT_QEMU_USERS that exists). */
  readonly qemuUser: string | null;
  /** `write-timeout` in ms; default 10000. */
  readonly writeTimeoutMs: number;
}

/** `[vm.NAME.looking-glass]`. */
export interface LookingGlassSettings {
  /** `name`: the file `/dev/shm/<name>`; default 'looking-glass'. */
  readonly name: string;
  /** From `size`, or computed from `resolution` (and `hdr`). */
  readonly sizeBytes: number;
  /** `resolution` as `WIDTHxHEIGHT`, or `null` when `size` was given. */
  readonly resolution: string | null;
  /** `hdr`; default false. */
  readonly hdr: boolean;
  /** `group` owning the file; `null` when unset (the owner's primary group). */
  readonly group: string | null;
  /** `mode` bits; default 0o660. */
  readonly mode: number;
  /**
   * `kvmfr`: Looking Glass's kvmfr device instead of the shm file. 'auto'
   * (default): `/dev/kvmfr0` when it exists and the domain maps no
   * `<shmem>` of this name; 'off': always the shm file; 'kvmfr0' to
   * 'kvmfr9': that device, which must exist.
   */
  readonly kvmfr: 'auto' | 'off' | `kvmfr${number}`;
}

/** `[vm.NAME.scream]`. */
export interface ScreamSettings {
  /** `name`: the file `/dev/shm/<name>`; default 'scream'. */
  readonly name: string;
  /** `size`; default 2 MiB. */
  readonly sizeBytes: number;
  /**
   * `group` owning the file; `null` when unset (then the Looking Glass
   * table's group, if the VM has one, else the owner's primary group: see
   * lib/daemon/managed-vm.ts).
   */
  readonly group: string | null;
  /** `mode` bits; default 0o660. */
  readonly mode: number;
}

/** One VM, from `[vm.NAME]`, the domain's `<metadata>`, or both merged. */
export interface VmSettings {
  /** The libvirt domain name. */
  readonly name: string;
  /** PCI addresses, normalised, in the order given; no duplicates. */
  readonly devices: readonly string[];
  /** `user`; `null` when unset. */
  readonly user: string | null;
  /** `force`; default false. */
  readonly force: boolean;
  /** `remove-shm-on-stop`; default false. */
  readonly removeShmOnStop: boolean;
  /** `hold`: keep `devices` on vfio-pci while the VM runs ('vm', the default) or from the daemon's start on ('boot'). */
  readonly hold: 'vm' | 'boot';
  /** `null` when the VM has no Looking Glass table. */
  readonly lookingGlass: LookingGlassSettings | null;
  /** `null` when the VM has no Scream table. */
  readonly scream: ScreamSettings | null;
  /** `units`; default none. */
  readonly units: readonly string[];
  /** `on-busy`; default 'refuse'. */
  readonly onBusy: 'refuse' | 'release' | 'stop-units';
  /** `stop-units` (system units, for on-busy = "stop-units"); default none. */
  readonly stopUnits: readonly string[];
  /** `busy-timeout` in ms; default 10000. */
  readonly busyTimeoutMs: number;
  /** `single-gpu`; default false. */
  readonly singleGpu: boolean;
  /** `host-cpus`, a cpulist (`"0-3,8-11"`) the host keeps while the VM runs; `null` when unset (no CPU isolation). */
  readonly hostCpus: string | null;
  /** `hugepages` (and `hugepage-size`, default "2M"), as written; `null` when unset (nothing reserved). */
  readonly hugepages: { readonly total: string; readonly pageSize: string } | null;
  /** `reset-method`: per device (normalised address, one of `devices`), the methods in the order to try; default none. */
  readonly resetMethods: readonly { readonly address: string; readonly methods: readonly string[] }[];
}

export interface Config {
  readonly daemon: DaemonSettings;
  /** By libvirt domain name. */
  readonly vms: ReadonlyMap<string, VmSettings>;
  /**
   * Values accepted but probably unwise (a shm mode readable by others), a
   * line each in file order: `source:line:column: key: what, ignoring`. For
   * the daemon to journal when it loads the file; empty for most files.
   */
  readonly warnings: readonly string[];
}
