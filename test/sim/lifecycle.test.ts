/**
 * The lifecycle table against the simulated reference host: shm files and
 * devices at prepare, back at release, and everything as it was after a
 * failed prepare.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { addSimProcess } from '../../lib/sim/index.js';
import { Lifecycle, type ManagedVm } from '../../lib/lifecycle/lifecycle.js';
import { parseHookEvent } from '../../lib/lifecycle/hook-event.js';
import { DeviceBusy, DeviceClaimed, InvalidConfig } from '../../lib/errors.js';
import { driversOf, makeSim, type TestSim } from '../helpers/sim.js';
import { DeviceLedger } from '../../lib/lifecycle/device-ledger.js';
import { StateFile } from '../../lib/state/state-file.js';
import { ownerKey } from '../../lib/pci/owner.js';

const MiB = 2 ** 20;
const RX590 = ['0000:0b:00.0', '0000:0b:00.1'];

function win10(overrides: Partial<ManagedVm> = {}): ManagedVm {
  return {
    name: 'win10',
    devices: ['0000:0b:00.0'],
    shmFiles: [
      { name: 'looking-glass', sizeBytes: 64 * MiB, uid: 1000, gid: 64055, mode: 0o660 },
      { name: 'scream', sizeBytes: 2 * MiB, uid: 1000, gid: 64055, mode: 0o660 },
    ],
    force: false,
    removeShmOnStop: false,
    user: 'alex',
    units: [],
    ...overrides,
  };
}

const ev = (op: string, sub: string, vm = 'win10') => parseHookEvent(vm, op, sub, '-');

function lifecycle(sim: TestSim): Lifecycle {
  const ledger = new DeviceLedger({ engine: sim.engine, state: new StateFile(sim.kernel.roots.run) });
  return new Lifecycle({ ledger, roots: sim.kernel.roots, trustedShmOwners: () => [0, 64055] });
}

async function owners(life: Lifecycle): Promise<string[]> {
  return [...(await life.ledger.read()).claims.values()].map((c) => ownerKey(c.owner));
}

async function shmStat(sim: TestSim, name: string) {
  const s = await fs.lstat(path.join(sim.kernel.roots.shm, name)).catch(() => null);
  return s && { uid: s.uid, gid: s.gid, mode: s.mode & 0o777, size: s.size };
}

test('prepare makes the shm files and detaches the GPU; release gives the GPU back', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const prepared = await life.handle(ev('prepare', 'begin'), win10());
  t.is(prepared.message, "VM 'win10' prepared: 0000:0b:00.1, 0000:0b:00.0 on vfio-pci, 2 shm file(s) ready");
  t.deepEqual(await shmStat(sim, 'looking-glass'), { uid: 1000, gid: 64055, mode: 0o660, size: 64 * MiB });
  t.deepEqual(await shmStat(sim, 'scream'), { uid: 1000, gid: 64055, mode: 0o660, size: 2 * MiB });
  t.deepEqual(Object.values(await driversOf(sim, RX590)), ['vfio-pci', 'vfio-pci']);
  t.deepEqual(await owners(life), ['vm:win10', 'vm:win10']);

  await life.handle(ev('start', 'begin'), win10());
  await life.handle(ev('started', 'begin'), win10());
  await life.handle(ev('stopped', 'end'), win10());
  const released = await life.handle(ev('release', 'end'), win10());
  t.is(released.message, "VM 'win10' released: 2 device(s) given back");
  t.deepEqual(await driversOf(sim, RX590), { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' });
  t.is((await life.ledger.read()).claims.size, 0);
  t.is((await life.ledger.read()).machines.size, 0, 'the record is gone with the release');
  t.truthy(await shmStat(sim, 'looking-glass'), 'kept: remove-shm-on-stop is off');
});

test('release removes the shm files when configured', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const vm = win10({ removeShmOnStop: true });
  await life.handle(ev('prepare', 'begin'), vm);
  await life.handle(ev('release', 'end'), vm);
  t.is(await shmStat(sim, 'looking-glass'), null);
  t.is(await shmStat(sim, 'scream'), null);
});

test('a failed prepare removes the files it created and restores the ones it repaired', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  // A Scream file left by an earlier run, with another owner and mode.
  const scream = path.join(sim.kernel.roots.shm, 'scream');
  await fs.writeFile(scream, Buffer.alloc(2 * MiB));
  await fs.chown(scream, 64055, 64055);
  await fs.chmod(scream, 0o644);
  await addSimProcess(sim.kernel.host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/card1'] });

  const error = await t.throwsAsync(lifecycle(sim).handle(ev('prepare', 'begin'), win10()), { instanceOf: DeviceBusy });
  t.regex(error.message, /'0000:0b:00\.0' is held by 'looking-glass' \(pid 4242\) through '\/dev\/dri\/card1'/);
  t.is(await shmStat(sim, 'looking-glass'), null, 'the file this prepare created is gone');
  t.deepEqual(await shmStat(sim, 'scream'), { uid: 64055, gid: 64055, mode: 0o644, size: 2 * MiB }, 'the file it repaired is as it was');
  t.deepEqual(await driversOf(sim, RX590), { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' });
});

test('a second VM claiming the same GPU is refused and the first keeps it', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.handle(ev('prepare', 'begin'), win10());
  const other = win10({ name: 'win11', shmFiles: [] });
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin', 'win11'), other), { instanceOf: DeviceClaimed });
  t.regex(error.message, /for VM 'win11': it belongs to VM 'win10'; shut that VM down first \(virsh shutdown 'win10'\), refusing$/);
  t.deepEqual(Object.values(await driversOf(sim, RX590)), ['vfio-pci', 'vfio-pci']);
  t.deepEqual(await owners(life), ['vm:win10', 'vm:win10']);
});

test('started repairs owner and mode of a file QEMU created but never resizes it', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const vm = win10({ devices: [], shmFiles: [{ name: 'looking-glass', sizeBytes: 64 * MiB, uid: 1000, gid: 64055, mode: 0o660 }] });
  // QEMU created it as its own user, mode 0644.
  const file = path.join(sim.kernel.roots.shm, 'looking-glass');
  await fs.writeFile(file, Buffer.alloc(0));
  await fs.truncate(file, 64 * MiB);
  await fs.chown(file, 64055, 64055);
  await fs.chmod(file, 0o644);
  const started = await life.handle(ev('started', 'begin'), vm);
  t.is(started.shm[0]?.action, 'repaired');
  t.deepEqual(await shmStat(sim, 'looking-glass'), { uid: 1000, gid: 64055, mode: 0o660, size: 64 * MiB });

  await fs.truncate(file, 32 * MiB);
  await t.throwsAsync(life.handle(ev('started', 'begin'), vm), { instanceOf: InvalidConfig });
  t.is((await shmStat(sim, 'looking-glass'))?.size, 32 * MiB, 'a mapped file is never truncated');
});

test('an unmanaged VM and the stages without work get an immediate answer and change nothing', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  t.is((await life.handle(ev('prepare', 'begin', 'linux'), null)).message, "VM 'linux' is not managed by vfio-hookd");
  t.is((await life.handle(ev('migrate', 'begin'), win10())).message, 'nothing to do');
  t.deepEqual(await driversOf(sim, RX590), { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' });
  t.is(await shmStat(sim, 'looking-glass'), null);
});

test('reconnect reports the devices the VM holds and changes nothing', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.handle(ev('prepare', 'begin'), win10());
  const again = lifecycle(sim); // a restarted daemon
  const r = await again.handle(ev('reconnect', 'begin'), win10());
  t.is(r.message, "VM 'win10' reconnected; it holds 0000:0b:00.0, 0000:0b:00.1");
  t.deepEqual(Object.values(await driversOf(sim, RX590)), ['vfio-pci', 'vfio-pci']);
});

test('events for one VM run in order even when they arrive together', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const order: string[] = [];
  await Promise.all(
    (['prepare begin', 'started begin', 'release end'] as const).map(async (e) => {
      const [op, sub] = e.split(' ') as [string, string];
      const r = await life.handle(ev(op, sub), win10());
      order.push(r.stage);
    }),
  );
  t.deepEqual(order, ['prepare', 'started', 'release']);
  t.deepEqual(await driversOf(sim, RX590), { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' });
});

test('recovery drops the claim of a device someone gave back by hand, and changes no driver', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.handle(ev('prepare', 'begin'), win10());
  // Behind our back: the audio function goes back to snd_hda_intel (as a user's script would).
  const devices = path.join(sim.dir, 'sys/bus/pci');
  const never = new AbortController().signal;
  await sim.kernel.write(path.join(devices, 'devices/0000:0b:00.1/driver_override'), '\n', never);
  await sim.kernel.write(path.join(devices, 'drivers/vfio-pci/unbind'), '0000:0b:00.1', never);
  await sim.kernel.write(path.join(devices, 'drivers_probe'), '0000:0b:00.1', never);

  const restarted = lifecycle(sim);
  t.deepEqual(await restarted.recover(), [
    "Claim of VM 'win10' on '0000:0b:00.1' dropped: the device is on 'snd_hda_intel', not on vfio-pci",
  ]);
  t.deepEqual([...(await restarted.ledger.read()).claims.keys()], ['0000:0b:00.0']);
  t.deepEqual(await driversOf(sim, RX590), { '0000:0b:00.0': 'vfio-pci', '0000:0b:00.1': 'snd_hda_intel' });
  t.deepEqual(await restarted.recover(), [], 'nothing more to drop');
});
