/**
 * From a VM's settings (configuration file and domain metadata, merged) to
 * what the lifecycle acts on: each shm file with its size and its numeric
 * owner, group and mode.
 *
 * Every file belongs to the VM's `user`. Each has its own group and mode:
 * Looking Glass's from `[vm.NAME.looking-glass]`, Scream's from
 * `[vm.NAME.scream]`. A Scream table without a `group` takes the Looking
 * Glass table's (the same QEMU process opens both files, so the group that
 * lets it open one lets it open the other), and without either the owner's
 * primary group is used.
 */
import { InvalidConfig, q } from '../errors.js';
import type { VmSettings } from '../config/types.js';
import type { ManagedVm } from '../lifecycle/lifecycle.js';

/** How names become ids (injected: the daemon uses getent, tests pass numbers). */
export interface AccountResolver {
  uid(user: string): Promise<number>;
  gid(group: string): Promise<number>;
  primaryGid(user: string): Promise<number>;
}

export async function toManagedVm(settings: VmSettings, accounts: AccountResolver): Promise<ManagedVm> {
  const { lookingGlass, scream } = settings;
  const wanted = [
    ...(lookingGlass
      ? [{ name: lookingGlass.name, sizeBytes: lookingGlass.sizeBytes, group: lookingGlass.group, mode: lookingGlass.mode }]
      : []),
    ...(scream
      ? [{ name: scream.name, sizeBytes: scream.sizeBytes, group: scream.group ?? lookingGlass?.group ?? null, mode: scream.mode }]
      : []),
  ];
  const shmFiles: ManagedVm['shmFiles'][number][] = [];
  if (wanted.length > 0) {
    if (settings.user === null) {
      throw new InvalidConfig(
        `VM ${q(settings.name)} has shared-memory files but no user to own them; set user = "NAME" in [vm.${settings.name}]`,
      );
    }
    const user = settings.user;
    const uid = await accounts.uid(user);
    // Looked up once, and only when a file has no group of its own.
    let primary: Promise<number> | null = null;
    for (const file of wanted) {
      const gid = file.group !== null ? await accounts.gid(file.group) : await (primary ??= accounts.primaryGid(user));
      shmFiles.push({ name: file.name, sizeBytes: file.sizeBytes, uid, gid, mode: file.mode });
    }
  }
  return {
    name: settings.name,
    devices: settings.devices,
    shmFiles,
    force: settings.force,
    removeShmOnStop: settings.removeShmOnStop,
    hold: settings.hold,
    user: settings.user,
    units: settings.units,
    hostPolicy: {
      onBusy: settings.onBusy,
      stopUnits: settings.stopUnits,
      busyTimeoutMs: settings.busyTimeoutMs,
      singleGpu: settings.singleGpu,
      hostCpus: settings.hostCpus,
      hugepages: settings.hugepages,
      resetMethods: settings.resetMethods,
      kvmfr: lookingGlass ? { device: lookingGlass.kvmfr, shmName: lookingGlass.name } : null,
    },
  };
}
