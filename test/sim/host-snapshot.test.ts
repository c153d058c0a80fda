/**
 * The engine's targeted read of the host (readHostFor) against the whole
 * read (readHost): every plan and every refusal must come out the same, and
 * each check (holders, host dependencies, viability) must still see what it
 * needs, also when that lies outside the requested device's group.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { vmOwner } from '../../lib/pci/owner.js';
import { addSimProcess, BUILTIN_HOSTS } from '../../lib/sim/index.js';
import { DeviceBusy, HostDependency } from '../../lib/errors.js';
import { readHost, readHostFor, type HostSnapshot } from '../../lib/pci/host-snapshot.js';
import { planDetach, planReattach, type Claim, type Plan, type PlanOptions } from '../../lib/pci/plan.js';
import { makeSim } from '../helpers/sim.js';

type Planner = (snapshot: HostSnapshot, addresses: readonly string[], options: PlanOptions) => Plan;

/** A plan as data, or the refusal as its class and message. */
function outcome(planner: Planner, snapshot: HostSnapshot, addresses: readonly string[], options: PlanOptions): unknown {
  try {
    return { plan: planner(snapshot, addresses, options) };
  } catch (error) {
    return { refused: (error as Error).name, message: (error as Error).message };
  }
}

const FIXTURES = [...BUILTIN_HOSTS.keys()];

for (const fixture of FIXTURES) {
  test(`${fixture}: detach and reattach plans from the targeted read equal those from the whole host, for every device`, async (t) => {
    const sim = await makeSim(t, fixture);
    const whole = await readHost(sim.kernel);
    // Every address, plus the short form, a malformed one and one that names no device.
    const requests = [...[...whole.devices.keys()].map((a) => [a]), ['0b:00.0'], ['0b:00'], ['0000:7f:1f.7'], []];
    for (const addresses of requests) {
      const targeted = await readHostFor(sim.kernel, addresses);
      for (const force of [false, true]) {
        const options = { owner: vmOwner('win10'), force };
        t.deepEqual(
          outcome(planDetach, targeted, addresses, options),
          outcome(planDetach, whole, addresses, options),
          `detach ${addresses.join(' ')} force=${force}`,
        );
        t.deepEqual(
          outcome(planReattach, targeted, addresses, options),
          outcome(planReattach, whole, addresses, options),
          `reattach ${addresses.join(' ')} force=${force}`,
        );
      }
      for (const [address, device] of targeted.devices) {
        t.deepEqual(device, whole.devices.get(address), `${address} reads the same`);
        t.deepEqual(targeted.dependencies.get(address), whole.dependencies.get(address), `${address}: the same host dependencies`);
      }
      for (const [number, group] of targeted.groups) t.deepEqual(group, whole.groups.get(number), `group ${number} is whole`);
      t.deepEqual(targeted.processes, whole.processes, 'the same process table');
      t.is(targeted.vfioLoaded, whole.vfioLoaded);
    }
  });
}

test('after a detach, the reattach plans from both reads are the same, with and without the claims', async (t) => {
  for (const fixture of FIXTURES) {
    const sim = await makeSim(t, fixture);
    const whole = await readHost(sim.kernel);
    for (const address of whole.devices.keys()) {
      let claims: ReadonlyMap<string, Claim>;
      try {
        ({ claims } = await sim.engine.detach([address], { owner: vmOwner('win10'), force: true }));
      } catch {
        continue; // refused (chipset, bridge, no group): the first test compares those
      }
      const after = await readHost(sim.kernel);
      const group = after.devices.get(address)!.iommuGroup!;
      for (const addresses of [[address], after.groups.get(group)!.devices.filter((a) => !after.devices.get(a)!.isBridge)]) {
        const targeted = await readHostFor(sim.kernel, addresses);
        for (const options of [{ owner: vmOwner('win10'), claims }, { owner: vmOwner('win10') }, { owner: vmOwner('other'), claims }]) {
          t.deepEqual(
            outcome(planReattach, targeted, addresses, options),
            outcome(planReattach, after, addresses, options),
            `${fixture}: reattach ${addresses.join(' ')}`,
          );
        }
      }
      await sim.engine.reattach([address], { owner: vmOwner('win10'), claims });
    }
  }
});

test('the targeted read of the RX 590 holds its group and nothing of the RX 580, the NVMe or the NIC', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const snapshot = await readHostFor(sim.kernel, ['0000:0b:00.0']);
  t.deepEqual([...snapshot.devices.keys()].sort(), ['0000:0b:00.0', '0000:0b:00.1']);
  t.deepEqual([...snapshot.groups.values()], [{ number: 25, devices: ['0000:0b:00.0', '0000:0b:00.1'] }]);
});

test('a process holding the other function of the group is still found, through the targeted read', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  // The audio is asked for; the GPU joins as its card and group, and its render node is held.
  await addSimProcess(sim.kernel.host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/renderD129'] });
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.1'], { owner: vmOwner('win10') }), { instanceOf: DeviceBusy });
  t.is(
    error.message,
    "Cannot detach '0000:0b:00.1': '0000:0b:00.0' is held by 'looking-glass' (pid 4242) through '/dev/dri/renderD129'; close it, refusing",
  );
  t.is(await sim.driverOf('0000:0b:00.0'), 'amdgpu');
});

test('QEMU holding the group is still found by the targeted read of a reattach', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  await addSimProcess(sim.kernel.host, { pid: 5150, comm: 'qemu-system-x86', fds: ['/dev/vfio/vfio', '/dev/vfio/25'] });
  const snapshot = await sim.engine.inspectFor(['0000:0b:00.1']);
  const error = t.throws(() => planReattach(snapshot, ['0000:0b:00.1'], { owner: vmOwner('win10'), claims }), { instanceOf: DeviceBusy });
  t.regex(error.message, /IOMMU group 25 is in use by 'qemu-system-x86' \(pid 5150\) through '\/dev\/vfio\/25'/);
});

test('a LUKS volume outside the PCI tree, on a partition of the disk, is still seen by the targeted read', async (t) => {
  const sim = await makeSim(t, 'nvidia-host');
  const sys = path.join(sim.dir, 'sys');
  // dm-0 (cryptroot) lives under devices/virtual, beneath no PCI device; it holds nvme0n1p1.
  const dm = path.join(sys, 'devices/virtual/block/dm-0');
  await fs.mkdir(path.join(dm, 'dm'), { recursive: true });
  await fs.writeFile(path.join(dm, 'dev'), '254:0\n');
  await fs.writeFile(path.join(dm, 'dm', 'name'), 'cryptroot\n');
  await fs.symlink('../../devices/virtual/block/dm-0', path.join(sys, 'class/block/dm-0'));
  const part = await fs.realpath(path.join(sys, 'class/block/nvme0n1p1'));
  await fs.symlink('../../../../../../../virtual/block/dm-0', path.join(part, 'holders', 'dm-0'));
  await fs.writeFile(path.join(sim.dir, 'proc/self/mountinfo'), '30 1 254:0 / /home rw - ext4 /dev/mapper/cryptroot rw\n');
  const snapshot = await sim.engine.inspectFor(['0000:02:00.0']);
  t.deepEqual(snapshot.dependencies.get('0000:02:00.0'), [
    { kind: 'mount', description: "'/home' is mounted from 'dm-0' (ext4) on top of 'nvme0n1p1'" },
  ]);
  const error = await t.throwsAsync(sim.engine.detach(['0000:02:00.0'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(error.message, /'\/home' is mounted from 'dm-0' \(ext4\) on top of 'nvme0n1p1'/);
});

test('the console of the boot VGA (a virtual device) is still seen by the targeted read', async (t) => {
  const sim = await makeSim(t, 'single-gpu-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:01:00.1'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(error.message, /'0000:01:00\.0' \(VGA compatible controller\), same card as '0000:01:00\.1': the console 'vtcon1'/);
  t.is(await sim.driverOf('0000:01:00.0'), 'amdgpu');
});
