/**
 * toManagedVm: each shm file gets its own owner, group and mode, from its
 * own table, with Scream's group falling back to Looking Glass's.
 */
import test from 'ava';

import { InvalidConfig } from '../../lib/errors.js';
import { parseConfig, type VmSettings } from '../../lib/config/index.js';
import { toManagedVm, type AccountResolver } from '../../lib/daemon/managed-vm.js';

const MiB = 1024 * 1024;

/** alex is 1000 with primary group 1000; the groups are numbered; every lookup is recorded. */
function accounts(): AccountResolver & { calls: string[] } {
  const groups: Record<string, number> = { 'qemu-libvirtd': 301, audio: 63, kvm: 78 };
  const calls: string[] = [];
  return {
    calls,
    uid: async (user) => {
      calls.push(`uid ${user}`);
      return user === 'alex' ? 1000 : 4242;
    },
    gid: async (group) => {
      calls.push(`gid ${group}`);
      const gid = groups[group];
      if (gid === undefined) throw new InvalidConfig(`Unknown group '${group}'`);
      return gid;
    },
    primaryGid: async (user) => {
      calls.push(`primaryGid ${user}`);
      return user === 'alex' ? 1000 : 4242;
    },
  };
}

function settings(text: string): VmSettings {
  return parseConfig(text, 'test.toml').vms.get('win10')!;
}

test('Looking Glass and Scream each get their own group and mode', async (t) => {
  const vm = await toManagedVm(
    settings(
      '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nsize = "32M"\ngroup = "qemu-libvirtd"\nmode = "0660"\n[vm.win10.scream]\ngroup = "audio"\nmode = "0640"\n',
    ),
    accounts(),
  );
  t.deepEqual(vm.shmFiles, [
    { name: 'looking-glass', sizeBytes: 32 * MiB, uid: 1000, gid: 301, mode: 0o660 },
    { name: 'scream', sizeBytes: 2 * MiB, uid: 1000, gid: 63, mode: 0o640 },
  ]);
});

test("a Scream table without a group takes Looking Glass's group, but keeps its own mode", async (t) => {
  const vm = await toManagedVm(
    settings(
      '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nsize = "32M"\ngroup = "qemu-libvirtd"\nmode = "0600"\n[vm.win10.scream]\n',
    ),
    accounts(),
  );
  t.deepEqual(
    vm.shmFiles.map((f) => [f.name, f.gid, f.mode]),
    [
      ['looking-glass', 301, 0o600],
      ['scream', 301, 0o660],
    ],
  );
});

test('a Scream-only VM can name the group QEMU needs to open its file', async (t) => {
  const vm = await toManagedVm(settings('[vm.win10]\nuser = "alex"\n[vm.win10.scream]\ngroup = "qemu-libvirtd"\n'), accounts());
  t.deepEqual(vm.shmFiles, [{ name: 'scream', sizeBytes: 2 * MiB, uid: 1000, gid: 301, mode: 0o660 }]);
});

test("without any group the owner's primary group is used, looked up once", async (t) => {
  const lookups = accounts();
  const vm = await toManagedVm(settings('[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nsize = "32M"\n[vm.win10.scream]\n'), lookups);
  t.deepEqual(
    vm.shmFiles.map((f) => f.gid),
    [1000, 1000],
  );
  t.deepEqual(lookups.calls, ['uid alex', 'primaryGid alex']);
});

test('shm files without a user are refused; a VM without shm files needs none', async (t) => {
  await t.throwsAsync(toManagedVm(settings('[vm.win10.scream]\n'), accounts()), {
    instanceOf: InvalidConfig,
    message: `VM 'win10' has shared-memory files but no user to own them; set user = "NAME" in [vm.win10]`,
  });
  const lookups = accounts();
  const vm = await toManagedVm(settings('[vm.win10]\ndevices = ["0b:00.0"]\n'), lookups);
  t.deepEqual({ shmFiles: vm.shmFiles, devices: vm.devices }, { shmFiles: [], devices: ['0000:0b:00.0'] });
  t.deepEqual(lookups.calls, []);
});
