/**
 * From a VM's settings (configuration file and domain metadata, merged) to
 * what the lifecycle acts on: numeric owner, group and mode of the shm
 * files, and the list of files with their sizes.
 */
import { InvalidConfig, q } from '../errors.js';
import type { VmSettings } from '../config/types.js';
import { DEFAULT_SHM_MODE } from '../config/schema.js';
import type { ManagedVm, ShmFileWant } from '../lifecycle/lifecycle.js';

/** How names become ids (injected: the daemon uses getent, tests pass numbers). */
export interface AccountResolver {
  uid(user: string): Promise<number>;
  gid(group: string): Promise<number>;
  primaryGid(user: string): Promise<number>;
}

export async function toManagedVm(settings: VmSettings, accounts: AccountResolver): Promise<ManagedVm> {
  const wanted = [
    ...(settings.lookingGlass ? [{ name: settings.lookingGlass.name, sizeBytes: settings.lookingGlass.sizeBytes }] : []),
    ...(settings.scream ? [{ name: settings.scream.name, sizeBytes: settings.scream.sizeBytes }] : []),
  ];
  const shmFiles: ShmFileWant[] = [];
  if (wanted.length > 0) {
    if (settings.user === null) {
      throw new InvalidConfig(
        `VM ${q(settings.name)} has shared-memory files but no user to own them; set user = "NAME" in [vm.${settings.name}]`,
      );
    }
    const uid = await accounts.uid(settings.user);
    // The Looking Glass group (QEMU's group, so it can open the file) serves Scream too.
    const group = settings.lookingGlass?.group ?? null;
    const gid = group !== null ? await accounts.gid(group) : await accounts.primaryGid(settings.user);
    const mode = settings.lookingGlass?.mode ?? DEFAULT_SHM_MODE;
    for (const file of wanted) shmFiles.push({ ...file, uid, gid, mode });
  }
  return {
    name: settings.name,
    devices: settings.devices,
    shmFiles,
    force: settings.force,
    removeShmOnStop: settings.removeShmOnStop,
    user: settings.user,
    units: settings.units,
  };
}
