/**
 * Plans are data: their order is asserted here without running them.
 */
import { vmOwner } from '../../lib/pci/owner.js';
import test from 'ava';
import { planDetach, planReattach, type Plan } from '../../lib/pci/plan.js';
import { PlanExecutor } from '../../lib/pci/executor.js';
import { GroupNotViable, HostDependency } from '../../lib/errors.js';
import { driversOf, fixtureCopy, makeSim } from '../helpers/sim.js';

/** Every address a plan's steps touch, in step order, without repeats. */
function touched(plan: Plan): string[] {
  return [...new Set(plan.steps.flatMap((s) => ('address' in s ? [s.address] : [])))];
}

test('detach plan: audio before the GPU it is linked to, then the group checks', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const plan = planDetach(await sim.engine.inspect(), ['0000:0b:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(plan.steps, [
    { op: 'set-override', address: '0000:0b:00.1', driver: 'vfio-pci' },
    { op: 'unbind', address: '0000:0b:00.1', driver: 'snd_hda_intel' },
    { op: 'probe', address: '0000:0b:00.1', expect: 'vfio-pci' },
    { op: 'set-override', address: '0000:0b:00.0', driver: 'vfio-pci' },
    { op: 'unbind', address: '0000:0b:00.0', driver: 'amdgpu' },
    { op: 'probe', address: '0000:0b:00.0', expect: 'vfio-pci' },
    { op: 'await-vfio-node', group: 25 },
    { op: 'check-viable', group: 25 },
  ]);
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.reason]),
    [
      ['0000:0b:00.1', "same card as '0000:0b:00.0'"],
      ['0000:0b:00.0', 'requested'],
    ],
  );
  t.deepEqual(
    await driversOf(sim, ['0000:0b:00.0', '0000:0b:00.1']),
    { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' },
    'planning changed nothing',
  );
});

test('reattach plan: the GPU first, each with a cleared override and its original driver expected', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const plan = planReattach(await sim.engine.inspect(), ['0000:0b:00.1'], { owner: vmOwner('win10'), claims });
  t.deepEqual(plan.steps, [
    { op: 'clear-override', address: '0000:0b:00.0' },
    { op: 'unbind', address: '0000:0b:00.0', driver: 'vfio-pci' },
    { op: 'probe', address: '0000:0b:00.0', expect: 'amdgpu' },
    { op: 'clear-override', address: '0000:0b:00.1' },
    { op: 'unbind', address: '0000:0b:00.1', driver: 'vfio-pci' },
    { op: 'probe', address: '0000:0b:00.1', expect: 'snd_hda_intel' },
  ]);
});

test('reattach without a record accepts whatever host driver the kernel binds', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const plan = planReattach(await sim.engine.inspect(), ['0000:0b:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.steps.filter((s) => s.op === 'probe'),
    [
      { op: 'probe', address: '0000:0b:00.0', expect: null },
      { op: 'probe', address: '0000:0b:00.1', expect: null },
    ],
  );
});

test('a device that was on vfio-pci before we came stays there on reattach', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const claims = new Map([
    ['0000:0b:00.0', { owner: vmOwner('win10'), originalDriver: 'vfio-pci', originalOverride: null, originalKnown: true }],
    ['0000:0b:00.1', { owner: vmOwner('win10'), originalDriver: 'snd_hda_intel', originalOverride: null, originalKnown: true }],
  ]);
  const plan = planReattach(await sim.engine.inspect(), ['0000:0b:00.0'], { owner: vmOwner('win10'), claims });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.changes]),
    [
      ['0000:0b:00.0', false],
      ['0000:0b:00.1', true],
    ],
  );
});

test('a split group pulls in every endpoint and no bridge, with the reason for each', async (t) => {
  const sim = await makeSim(t, 'split-board-host');
  const plan = planDetach(await sim.engine.inspect(), ['0000:05:00.0'], { owner: vmOwner('win10'), force: true });
  t.deepEqual(plan.devices.map((d) => d.address).sort(), ['0000:02:00.0', '0000:04:00.0', '0000:05:00.0', '0000:05:00.1']);
  t.is(plan.devices.find((d) => d.address === '0000:04:00.0')?.reason, "IOMMU group 13 with '0000:05:00.0'");
  t.false(plan.steps.some((s) => 'address' in s && ['0000:00:01.3', '0000:02:00.2', '0000:03:01.0', '0000:03:04.0'].includes(s.address)));
});

test('a group with one function still on its host driver is reported not viable', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  // Only the audio function goes to vfio-pci, by hand, as a user might.
  const half: Plan = {
    kind: 'detach',
    owner: vmOwner('test'),
    groups: [25],
    devices: [],
    steps: [
      { op: 'set-override', address: '0000:0b:00.1', driver: 'vfio-pci' },
      { op: 'unbind', address: '0000:0b:00.1', driver: 'snd_hda_intel' },
      { op: 'probe', address: '0000:0b:00.1', expect: 'vfio-pci' },
      { op: 'check-viable', group: 25 },
    ],
  };
  const error = await t.throwsAsync(new PlanExecutor(sim.kernel).run(half), { instanceOf: GroupNotViable });
  t.regex(
    error.message,
    /^IOMMU group 25 is not viable after detaching: '0000:0b:00\.0' is on 'amdgpu'; every device in the group must be on vfio-pci, pci-stub, driverless, or a bridge/,
  );
  t.regex(error.message, /rolled back: '0000:0b:00\.1' restored to 'snd_hda_intel'\)$/);
  t.is(await sim.driverOf('0000:0b:00.1'), 'snd_hda_intel');
});

test("a GPU in the host bridge's group: the host bridge stays out of the plan and the IOMMU function beside it is not taken", async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const plan = planDetach(await sim.engine.inspect(), ['0000:01:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.group, d.reason]),
    [
      ['0000:01:00.1', 2, "same card as '0000:01:00.0'"],
      ['0000:01:00.0', 0, 'requested'],
      ['0000:01:00.2', 3, "same card as '0000:01:00.0'"],
      ['0000:01:00.3', 3, "same card as '0000:01:00.0'"],
    ],
  );
  t.deepEqual(plan.groups, [0, 2, 3]);
  t.deepEqual(touched(plan), ['0000:01:00.1', '0000:01:00.0', '0000:01:00.2', '0000:01:00.3']);
  t.deepEqual(
    plan.steps.filter((s) => !('address' in s)),
    [
      { op: 'await-vfio-node', group: 0 },
      { op: 'check-viable', group: 0 },
      { op: 'await-vfio-node', group: 2 },
      { op: 'check-viable', group: 2 },
      { op: 'await-vfio-node', group: 3 },
      { op: 'check-viable', group: 3 },
    ],
  );
});

test('a USB controller does not take its neighbour controller from another group', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const plan = planDetach(await sim.engine.inspect(), ['0000:03:00.3'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.reason]),
    [['0000:03:00.3', 'requested']],
  );
  t.deepEqual(plan.groups, [7]);
  t.deepEqual(plan.steps, [
    { op: 'set-override', address: '0000:03:00.3', driver: 'vfio-pci' },
    { op: 'unbind', address: '0000:03:00.3', driver: 'xhci_hcd' },
    { op: 'probe', address: '0000:03:00.3', expect: 'vfio-pci' },
    { op: 'await-vfio-node', group: 7 },
    { op: 'check-viable', group: 7 },
  ]);
});

test("reference host: the chipset's USB controller comes alone, without its neighbour or the reserved function of its slot", async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const plan = planDetach(await sim.engine.inspect(), ['0000:06:00.3'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.reason]),
    [['0000:06:00.3', 'requested']],
  );
  t.deepEqual(touched(plan), ['0000:06:00.3']);
});

test('a device that joined by its group pulls no slot siblings of its own', async (t) => {
  // The guest's USB controller 03:00.3 moved into the group of the card's USB
  // functions: the GPU's companion brings group 3, and with it 03:00.3, but
  // 03:00.3 brings neither the keyboard's controller 03:00.1 nor 03:00.0.
  const fixture = fixtureCopy('chipset-host');
  fixture.devices.find((d) => d.address === '0000:03:00.3')!.group = 3;
  const sim = await makeSim(t, fixture);
  const plan = planDetach(await sim.engine.inspect(), ['0000:01:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.reason]),
    [
      ['0000:01:00.1', "same card as '0000:01:00.0'"],
      ['0000:01:00.0', 'requested'],
      ['0000:01:00.2', "same card as '0000:01:00.0'"],
      ['0000:01:00.3', "same card as '0000:01:00.0'"],
      ['0000:03:00.3', "IOMMU group 3 with '0000:01:00.2'"],
    ],
  );
});

test('the functions of a graphics card follow a request for any of them, linked or not', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const snapshot = await sim.engine.inspect();
  for (const requested of ['0000:01:00.1', '0000:01:00.2', '0000:01:00.3']) {
    const plan = planDetach(snapshot, [requested], { owner: vmOwner('win10') });
    t.deepEqual(plan.devices.map((d) => d.address).sort(), ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3'], requested);
  }
});

test('reattach takes the same closure: the card, not the host bridge or the IOMMU', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const { claims } = await sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') });
  t.deepEqual([...claims.keys()].sort(), ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3']);
  const plan = planReattach(await sim.engine.inspect(), ['0000:01:00.0'], { owner: vmOwner('win10'), claims });
  t.deepEqual(touched(plan), ['0000:01:00.3', '0000:01:00.2', '0000:01:00.0', '0000:01:00.1']);
});

test('the host bridge is refused alone, without the IOMMU function beside it, force or not', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const snapshot = await sim.engine.inspect();
  for (const force of [false, true]) {
    const error = t.throws(() => planDetach(snapshot, ['0000:00:00.0'], { owner: vmOwner('win10'), force }), {
      instanceOf: HostDependency,
    });
    t.is(
      error.message,
      "Cannot detach '0000:00:00.0': the host depends on it: '0000:00:00.0' (Host bridge), requested: the host bridge, the CPU's link to memory and PCI (a chipset function). " +
        "A chipset function never leaves the host, not even with --force, and neither does a device in its IOMMU group; check the address ('vfio-hookctl devices'), refusing",
    );
  }
});
