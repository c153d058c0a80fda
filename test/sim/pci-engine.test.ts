/**
 * The PCI engine against the simulated kernel: the reference host's RX 590
 * round trip, and every refusal and failure path with the state afterwards.
 */
import { vmOwner } from '../../lib/pci/owner.js';
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { addSimProcess, removeSimProcess } from '../../lib/sim/index.js';
import {
  BindFailed,
  DeviceBusy,
  DeviceClaimed,
  GroupNotViable,
  HostDependency,
  InvalidArgs,
  NoSuchDevice,
  Timeout,
} from '../../lib/errors.js';
import { PlanExecutor } from '../../lib/pci/executor.js';
import { planReattach } from '../../lib/pci/plan.js';
import { driversOf, fixtureCopy, makeSim } from '../helpers/sim.js';

const RX580 = ['0000:0a:00.0', '0000:0a:00.1'];
const RX590 = ['0000:0b:00.0', '0000:0b:00.1'];
const HOST_DRIVERS_580 = { '0000:0a:00.0': 'amdgpu', '0000:0a:00.1': 'snd_hda_intel' };
const HOST_DRIVERS_590 = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' };
const VFIO_590 = { '0000:0b:00.0': 'vfio-pci', '0000:0b:00.1': 'vfio-pci' };

test('detach moves the RX 590 and its audio to vfio-pci and leaves the RX 580 alone', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const result = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });

  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
  t.deepEqual(await driversOf(sim, RX580), HOST_DRIVERS_580);
  t.is(await sim.overrideOf('0000:0b:00.0'), 'vfio-pci');
  t.true(await sim.exists('dev/vfio/25'));
  t.false(await sim.exists('dev/dri/card1'), 'amdgpu took its DRM node with it');
  t.true(await sim.exists('dev/dri/card0'), "the host card's node is still there");
  t.deepEqual(Object.fromEntries(result.claims), {
    '0000:0b:00.1': { owner: vmOwner('win10'), originalDriver: 'snd_hda_intel', originalOverride: null, originalKnown: true },
    '0000:0b:00.0': { owner: vmOwner('win10'), originalDriver: 'amdgpu', originalOverride: null, originalKnown: true },
  });
});

test('reattach returns both functions to their original drivers and clears the override', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  await sim.engine.reattach(['0000:0b:00.0'], { owner: vmOwner('win10'), claims });

  t.deepEqual(await driversOf(sim, RX590), HOST_DRIVERS_590);
  t.deepEqual(await driversOf(sim, RX580), HOST_DRIVERS_580);
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:0b:00.1'), '(null)');
  t.false(await sim.exists('dev/vfio/25'));
  t.true(await sim.exists('dev/dri/card1'), 'amdgpu made its DRM node again');
});

test('detaching by the audio function takes the whole card', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await sim.engine.detach(['0b:00.1'], { owner: vmOwner('win10') });
  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
});

test('detach is idempotent for the same owner and keeps the first original driver', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const first = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const second = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10'), claims: first.claims });
  t.deepEqual(
    second.plan.steps.filter((s) => 'address' in s),
    [],
    'no device step: everything is already on vfio-pci',
  );
  t.is(second.claims.get('0000:0b:00.0')?.originalDriver, 'amdgpu');
});

test('refuses to detach a device held by a process, naming its pid and command, and changes nothing', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await addSimProcess(sim.kernel.host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/renderD129'] });
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') }), { instanceOf: DeviceBusy });
  t.is(
    error.message,
    "Cannot detach '0000:0b:00.0': '0000:0b:00.0' is held by 'looking-glass' (pid 4242) through '/dev/dri/renderD129'; close it, refusing",
  );
  t.deepEqual(await driversOf(sim, RX590), HOST_DRIVERS_590);
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
  t.false(await sim.exists('dev/vfio/25'));
});

test('refuses to detach the NVMe controller that holds the mounted root filesystem, naming the mount', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(
    error.message,
    /^Cannot detach '0000:01:00\.0': the host depends on it: '0000:01:00\.0' \(Non-Volatile memory controller\), requested: /,
  );
  t.regex(error.message, /'\/' is mounted from 'nvme0n1p2' \(ext4\)/);
  t.regex(error.message, /swap is on 'nvme0n1p3'/);
  t.regex(error.message, /refusing$/);
  t.is(await sim.driverOf('0000:01:00.0'), 'nvme');
  t.true(await sim.exists('dev/nvme0n1p2'));
});

test('refuses to detach a NIC that is up, and --force overrides the rail', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:05:00.0'], { owner: vmOwner('x') }), { instanceOf: HostDependency });
  t.regex(error.message, /network interface 'enp5s0' is up/);
  t.is(await sim.driverOf('0000:05:00.0'), 'igb');

  await sim.engine.detach(['0000:05:00.0'], { owner: vmOwner('x'), force: true });
  t.is(await sim.driverOf('0000:05:00.0'), 'vfio-pci');
  t.is(await sim.driverOf('0000:03:05.0'), 'pcieport', 'the bridge in the same group stays');
});

test('refuses the boot VGA while the frame-buffer console is drawn on it', async (t) => {
  const sim = await makeSim(t, 'single-gpu-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(error.message, /the console 'vtcon1' \(\(M\) frame buffer device\) is drawn on the boot VGA/);
  t.is(await sim.driverOf('0000:01:00.0'), 'amdgpu');
});

test('single-GPU host: forced detach takes the card, leaves its root port, and reattach gives it back', async (t) => {
  const sim = await makeSim(t, 'single-gpu-host');
  const { claims } = await sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10'), force: true });
  t.deepEqual(await driversOf(sim, ['0000:00:01.0', '0000:01:00.0', '0000:01:00.1']), {
    '0000:00:01.0': 'pcieport',
    '0000:01:00.0': 'vfio-pci',
    '0000:01:00.1': 'vfio-pci',
  });
  await sim.engine.reattach(['0000:01:00.0'], { owner: vmOwner('win10'), claims });
  t.deepEqual(await driversOf(sim, ['0000:01:00.0', '0000:01:00.1']), { '0000:01:00.0': 'amdgpu', '0000:01:00.1': 'snd_hda_intel' });
});

test('a GPU sharing its group with an up NIC is refused, naming the NIC and why it is included', async (t) => {
  const sim = await makeSim(t, 'split-board-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:05:00.0'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(
    error.message,
    /'0000:04:00\.0' \(Ethernet controller\), IOMMU group 13 with '0000:0[0-9]:00\.[0-9]': network interface 'enp4s0' is up/,
  );
  t.deepEqual(await driversOf(sim, ['0000:04:00.0', '0000:05:00.0', '0000:05:00.1']), {
    '0000:04:00.0': 'r8169',
    '0000:05:00.0': 'nouveau',
    '0000:05:00.1': 'snd_hda_intel',
  });
});

test('the four functions of an NVIDIA card go together, consumers before the GPU', async (t) => {
  const sim = await makeSim(t, 'nvidia-host');
  const result = await sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') });
  const fns = ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3'];
  t.deepEqual(Object.values(await driversOf(sim, fns)), ['vfio-pci', 'vfio-pci', 'vfio-pci', 'vfio-pci']);
  t.deepEqual(
    result.plan.devices.map((d) => d.address),
    ['0000:01:00.1', '0000:01:00.0', '0000:01:00.2', '0000:01:00.3'],
  );
  t.is(await sim.driverOf('0000:00:02.0'), 'i915', 'the host iGPU is untouched');
});

test("refuses another VM's device with DeviceClaimed and leaves the first VM's binding as it is", async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win11'), claims }), {
    instanceOf: DeviceClaimed,
  });
  t.is(
    error.message,
    "Cannot detach '0000:0b:00.1' for VM 'win11': it belongs to VM 'win10'; shut that VM down first (virsh shutdown 'win10'), refusing",
  );
  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
});

test('a driver that hangs on unbind times out, and every device it touched is back on its driver', async (t) => {
  const fixture = fixtureCopy('nvidia-host');
  fixture.drivers['nvidia'] = { hangsOnUnbind: true };
  const sim = await makeSim(t, fixture, { writeTimeoutMs: 150 });
  const error = await t.throwsAsync(sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') }), { instanceOf: Timeout });
  t.regex(error.message, /^Writing '0000:01:00\.0' to '.*\/bus\/pci\/drivers\/nvidia\/unbind' did not return within 150 ms/);
  t.regex(error.message, /rolled back: '0000:01:00\.0' restored to 'nvidia'; '0000:01:00\.1' restored to 'snd_hda_intel'\)$/);
  t.deepEqual(await driversOf(sim, ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3']), {
    '0000:01:00.0': 'nvidia',
    '0000:01:00.1': 'snd_hda_intel',
    '0000:01:00.2': 'xhci_hcd',
    '0000:01:00.3': 'nvidia-gpu',
  });
  t.is(await sim.overrideOf('0000:01:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:01:00.1'), '(null)');
});

test('a vfio-pci probe that fails is rolled back to the host drivers', async (t) => {
  const fixture = fixtureCopy('reference-host');
  fixture.drivers['vfio-pci'] = { failsProbe: true };
  const sim = await makeSim(t, fixture, { settleTimeoutMs: 100 });
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') }), { instanceOf: BindFailed });
  t.regex(
    error.message,
    /^Cannot bind '0000:0b:00\.1' to 'vfio-pci': drivers_probe failed|^Cannot bind '0000:0b:00\.1' to 'vfio-pci': bind failed with ENODEV/,
  );
  t.regex(error.message, /rolled back: '0000:0b:00\.1' restored to 'snd_hda_intel'\)$/);
  t.deepEqual(await driversOf(sim, RX590), HOST_DRIVERS_590);
  t.is(await sim.overrideOf('0000:0b:00.1'), '(null)');
});

test('refuses to detach when vfio-pci is not loaded, telling how to load it', async (t) => {
  const fixture = fixtureCopy('reference-host');
  delete fixture.drivers['vfio-pci'];
  const sim = await makeSim(t, fixture);
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') }), { instanceOf: GroupNotViable });
  t.is(error.message, "Cannot detach '0000:0b:00.0': the vfio-pci driver is not loaded; run 'modprobe vfio-pci'");
  t.deepEqual(await driversOf(sim, RX590), HOST_DRIVERS_590);
});

test('refuses to reattach while QEMU holds the group, naming it, and the devices stay on vfio-pci', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  await addSimProcess(sim.kernel.host, { pid: 5150, comm: 'qemu-system-x86', fds: ['/dev/vfio/vfio', '/dev/vfio/25'] });
  const error = await t.throwsAsync(sim.engine.reattach(['0000:0b:00.0'], { owner: vmOwner('win10'), claims }), { instanceOf: DeviceBusy });
  t.is(
    error.message,
    "Cannot reattach '0000:0b:00.0': IOMMU group 25 is in use by 'qemu-system-x86' (pid 5150) through '/dev/vfio/25', which runs VM 'win10'; shut it down first (virsh shutdown 'win10'), refusing",
  );
  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
});

test('if QEMU grabs the group after planning, the failed host probe is rolled back to vfio-pci, not left driverless', async (t) => {
  const sim = await makeSim(t, 'reference-host', { writeTimeoutMs: 200 });
  const { claims } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  const plan = planReattach(await sim.engine.inspect(), ['0000:0b:00.0'], { owner: vmOwner('win10'), claims });
  // The race: QEMU opens the group between the plan and the writes. Unbinding
  // from vfio-pci then blocks until timeout; the executor must restore.
  await addSimProcess(sim.kernel.host, {
    pid: 5151,
    comm: 'qemu-system-x86',
    fds: ['/dev/vfio/vfio', '/dev/vfio/25', 'vfio-device:0000:0b:00.0', 'vfio-device:0000:0b:00.1'],
  });
  const error = await t.throwsAsync(new PlanExecutor(sim.kernel, { writeTimeoutMs: 200 }).run(plan), { instanceOf: Timeout });
  t.regex(error.message, /vfio-pci\/unbind' did not return within 200 ms/);
  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
  t.is(await sim.overrideOf('0000:0b:00.0'), 'vfio-pci', 'override restored for the device that was cleared');
  await removeSimProcess(sim.kernel.host, 5151);
});

test('unknown devices, bridges and malformed addresses are refused before any change', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const noSuch = await t.throwsAsync(sim.engine.detach(['0000:0e:00.0'], { owner: vmOwner('x') }), { instanceOf: NoSuchDevice });
  t.is(noSuch.message, "No PCI device '0000:0e:00.0' on this host; list them with 'vfio-hookctl devices'");
  const bridge = await t.throwsAsync(sim.engine.detach(['0000:00:03.2'], { owner: vmOwner('x') }), { instanceOf: InvalidArgs });
  t.is(bridge.message, "'0000:00:03.2' (PCI bridge) is a PCI bridge; bridges stay with the host, name the device behind it");
  const bad = await t.throwsAsync(sim.engine.detach(['0b:00'], { owner: vmOwner('x') }), { instanceOf: InvalidArgs });
  t.regex(bad.message, /^Invalid PCI address '0b:00': expected 'DDDD:BB:DD\.F'/);
  const none = await t.throwsAsync(sim.engine.detach([], { owner: vmOwner('x') }), { instanceOf: InvalidArgs });
  t.regex(none.message, /^No PCI address given/);
  t.deepEqual(await driversOf(sim, RX590), HOST_DRIVERS_590);
});

test('a device without an IOMMU group is refused with how to turn the IOMMU on', async (t) => {
  const fixture = fixtureCopy('reference-host');
  for (const d of fixture.devices) d.group = null;
  const sim = await makeSim(t, fixture);
  const error = await t.throwsAsync(sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('x') }), { instanceOf: GroupNotViable });
  t.regex(error.message, /has no IOMMU group: the IOMMU is off; .*intel_iommu=on or amd_iommu=on/);
});

test('a LUKS volume on a partition keeps the disk in use', async (t) => {
  const sim = await makeSim(t, 'nvidia-host');
  const sys = path.join(sim.dir, 'sys');
  // dm-0 (cryptroot) on nvme0n1p1, mounted at /home: as sysfs and mountinfo show it.
  const dm = path.join(sys, 'devices/virtual/block/dm-0');
  await fs.mkdir(path.join(dm, 'dm'), { recursive: true });
  await fs.writeFile(path.join(dm, 'dev'), '254:0\n');
  await fs.writeFile(path.join(dm, 'dm', 'name'), 'cryptroot\n');
  await fs.symlink('../../devices/virtual/block/dm-0', path.join(sys, 'class/block/dm-0'));
  const part = await fs.realpath(path.join(sys, 'class/block/nvme0n1p1'));
  await fs.symlink('../../../../../../../virtual/block/dm-0', path.join(part, 'holders', 'dm-0'));
  await fs.writeFile(path.join(sim.dir, 'proc/self/mountinfo'), '30 1 254:0 / /home\\040dir rw - ext4 /dev/mapper/cryptroot rw\n');
  const snapshot = await sim.engine.inspect();
  t.deepEqual(snapshot.dependencies.get('0000:02:00.0'), [
    { kind: 'mount', description: "'/home dir' is mounted from 'dm-0' (ext4) on top of 'nvme0n1p1'" },
  ]);
});

const RX6800 = ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3'];
const CHIPSET = ['0000:00:00.0', '0000:00:00.2', '0000:00:14.0', '0000:00:14.3'];
const CHIPSET_DRIVERS = { '0000:00:00.0': null, '0000:00:00.2': null, '0000:00:14.0': 'piix4_smbus', '0000:00:14.3': null };
const USB = { '0000:03:00.1': 'xhci_hcd', '0000:03:00.3': 'xhci_hcd' };
const CHIPSET_ENDING =
  "A chipset function never leaves the host, not even with --force, and neither does a device in its IOMMU group; check the address ('vfio-hookctl devices'), refusing";

test('the RX 6800 takes its four functions across three groups, and the host bridge and the IOMMU stay as they were', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const { plan, claims } = await sim.engine.detach(['0000:01:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => d.address),
    ['0000:01:00.1', '0000:01:00.0', '0000:01:00.2', '0000:01:00.3'],
  );
  t.deepEqual(await driversOf(sim, RX6800), Object.fromEntries(RX6800.map((a) => [a, 'vfio-pci'])));
  t.deepEqual(await driversOf(sim, CHIPSET), CHIPSET_DRIVERS);
  t.is(await sim.overrideOf('0000:00:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:00:00.2'), '(null)');
  t.deepEqual(
    [await sim.exists('dev/vfio/0'), await sim.exists('dev/vfio/1'), await sim.exists('dev/vfio/2'), await sim.exists('dev/vfio/3')],
    [true, false, true, true],
  );

  await sim.engine.reattach(['0000:01:00.0'], { owner: vmOwner('win10'), claims });
  t.deepEqual(await driversOf(sim, RX6800), {
    '0000:01:00.0': 'amdgpu',
    '0000:01:00.1': 'snd_hda_intel',
    '0000:01:00.2': 'xhci_hcd',
    '0000:01:00.3': null,
  });
  t.deepEqual(await driversOf(sim, CHIPSET), CHIPSET_DRIVERS);
});

test('the GPU audio still follows the GPU on the reference host, and nothing of the chipset moves', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const { plan } = await sim.engine.detach(['0000:0b:00.0'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => d.address),
    ['0000:0b:00.1', '0000:0b:00.0'],
  );
  t.deepEqual(await driversOf(sim, RX590), VFIO_590);
  t.deepEqual(await driversOf(sim, ['0000:00:00.0', '0000:00:00.2', '0000:00:14.0', '0000:06:00.1', '0000:06:00.3']), {
    '0000:00:00.0': null,
    '0000:00:00.2': null,
    '0000:00:14.0': 'piix4_smbus',
    '0000:06:00.1': 'xhci_hcd',
    '0000:06:00.3': 'xhci_hcd',
  });
});

test('the guest USB controller is detached alone, and the keyboard and mouse on its neighbour stay with the host', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const { plan } = await sim.engine.detach(['0000:03:00.3'], { owner: vmOwner('win10') });
  t.deepEqual(
    plan.devices.map((d) => [d.address, d.reason]),
    [['0000:03:00.3', 'requested']],
  );
  t.deepEqual(await driversOf(sim, ['0000:03:00.0', '0000:03:00.1', '0000:03:00.3']), {
    '0000:03:00.0': null,
    '0000:03:00.1': 'xhci_hcd',
    '0000:03:00.3': 'vfio-pci',
  });
  t.deepEqual([await sim.exists('sys/class/input/input0'), await sim.exists('sys/class/input/input1')], [true, true]);
  t.false(await sim.exists('sys/class/input/input2'), 'the gamepad went with its controller');
  t.false(await sim.exists('dev/input/event2'));
});

test('a USB controller with the keyboard and mouse beneath is refused, and --force takes it alone', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const error = await t.throwsAsync(sim.engine.detach(['0000:03:00.1'], { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.is(
    error.message,
    "Cannot detach '0000:03:00.1': the host depends on it: '0000:03:00.1' (USB controller), requested: " +
      "the keyboard 'CHERRY USB keyboard' (input0) is connected through it, the mouse 'Logitech USB Optical Mouse' (input1) is connected through it. " +
      "Check the address ('vfio-hookctl devices'); pass --force only if you really mean it, refusing",
  );
  t.deepEqual(await driversOf(sim, Object.keys(USB)), USB);
  t.is(await sim.overrideOf('0000:03:00.1'), '(null)');
  t.true(await sim.exists('sys/class/input/input0'));

  const { plan } = await sim.engine.detach(['0000:03:00.1'], { owner: vmOwner('win10'), force: true });
  t.deepEqual(
    plan.devices.map((d) => d.address),
    ['0000:03:00.1'],
  );
  t.deepEqual(await driversOf(sim, Object.keys(USB)), { '0000:03:00.1': 'vfio-pci', '0000:03:00.3': 'xhci_hcd' });
  t.deepEqual([await sim.exists('sys/class/input/input0'), await sim.exists('dev/input/event1')], [false, false]);
  t.true(await sim.exists('sys/class/input/input2'), 'the gamepad on the other controller stays');
});

const chipsetRefusals: [string, string][] = [
  ['0000:00:00.0', "'0000:00:00.0' (Host bridge), requested: the host bridge, the CPU's link to memory and PCI (a chipset function)"],
  ['0000:00:00.2', "'0000:00:00.2' (IOMMU), requested: the IOMMU itself, which isolates every device passed through (a chipset function)"],
  [
    '0000:00:14.0',
    "'0000:00:14.0' (SMBus), requested: the SMBus, where the memory's SPD, the sensors and fan control sit (a chipset function)",
  ],
  [
    '0000:00:14.3',
    "'0000:00:14.0' (SMBus), IOMMU group 8 with '0000:00:14.3': the SMBus, where the memory's SPD, the sensors and fan control sit (a chipset function); " +
      "'0000:00:14.3' (ISA bridge), requested: the ISA/LPC bridge, which carries the firmware flash, TPM, embedded controller and legacy I/O (a chipset function)",
  ],
  // The FCH's own HD Audio: not a chipset function, but its group holds the SMBus on its driver.
  [
    '0000:00:14.2',
    "'0000:00:14.0' (SMBus), IOMMU group 8 with '0000:00:14.2': the SMBus, where the memory's SPD, the sensors and fan control sit (a chipset function)",
  ],
];

for (const [address, blocked] of chipsetRefusals) {
  for (const force of [false, true]) {
    test(`detaching ${address}${force ? ' with --force' : ''} is refused as a chipset function, and nothing moves`, async (t) => {
      const sim = await makeSim(t, 'chipset-host');
      const error = await t.throwsAsync(sim.engine.detach([address], { owner: vmOwner('win10'), force }), { instanceOf: HostDependency });
      t.is(error.message, `Cannot detach '${address}': the host depends on it: ${blocked}. ${CHIPSET_ENDING}`);
      t.deepEqual(await driversOf(sim, [...CHIPSET, '0000:00:14.2']), { ...CHIPSET_DRIVERS, '0000:00:14.2': 'snd_hda_intel' });
      t.deepEqual(await Promise.all(CHIPSET.map((a) => sim.overrideOf(a))), ['(null)', '(null)', '(null)', '(null)']);
      t.deepEqual(await driversOf(sim, RX6800.slice(0, 1)), { '0000:01:00.0': 'amdgpu' });
    });
  }
}

test('--force lifts the keyboard but not a chipset function in the same request', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const request = ['0000:03:00.1', '0000:00:14.0'];
  const plain = await t.throwsAsync(sim.engine.detach(request, { owner: vmOwner('win10') }), { instanceOf: HostDependency });
  t.regex(
    plain.message,
    /^Cannot detach '0000:03:00\.1', '0000:00:14\.0': the host depends on it: '0000:00:14\.0' \(SMBus\), requested: the SMBus, .* \(a chipset function\); '0000:03:00\.1' \(USB controller\), requested: the keyboard /,
  );
  t.true(plain.message.endsWith(CHIPSET_ENDING));
  const forced = await t.throwsAsync(sim.engine.detach(request, { owner: vmOwner('win10'), force: true }), { instanceOf: HostDependency });
  t.is(
    forced.message,
    "Cannot detach '0000:03:00.1', '0000:00:14.0': the host depends on it: '0000:00:14.0' (SMBus), requested: the SMBus, where the memory's SPD, the sensors and fan control sit (a chipset function). " +
      CHIPSET_ENDING,
  );
  t.deepEqual(await driversOf(sim, ['0000:03:00.1', '0000:00:14.0']), { '0000:03:00.1': 'xhci_hcd', '0000:00:14.0': 'piix4_smbus' });
});

test('the listing names the chipset functions and the input devices the host needs', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const snapshot = await sim.engine.inspect();
  t.deepEqual(
    [...snapshot.dependencies].map(([a, deps]) => [a, deps.map((d) => d.kind)]),
    [
      ['0000:00:00.0', ['chipset']],
      ['0000:00:00.2', ['chipset']],
      ['0000:00:14.0', ['chipset']],
      ['0000:00:14.3', ['chipset']],
      ['0000:03:00.1', ['input', 'input']],
    ],
  );
});
