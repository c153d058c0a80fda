/**
 * The simulated kernel's write semantics, one kernel behaviour a test: the
 * model the engine is tested against must itself be right (the kernel tier
 * checks the same facts on a real kernel).
 */
import test from 'ava';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addSimProcess, removeSimProcess } from '../../lib/sim/index.js';
import { KernelWriteError, KernelWriteTimeout } from '../../lib/pci/kernel-port.js';
import { UnsafePath } from '../../lib/errors.js';
import { makeSim, type TestSim } from '../helpers/sim.js';

const GPU = '0000:0b:00.0';
const AUDIO = '0000:0b:00.1';

function sys(sim: TestSim, ...parts: string[]): string {
  return path.join(sim.kernel.roots.sysfs, ...parts);
}

function write(sim: TestSim, file: string, data: string, signal = new AbortController().signal): Promise<void> {
  return sim.kernel.write(file, data, signal);
}

const override = (sim: TestSim, a: string): string => sys(sim, 'bus/pci/devices', a, 'driver_override');

/** Put both functions of the RX 590 on vfio-pci with raw writes. */
async function toVfio(sim: TestSim): Promise<void> {
  for (const [a, from] of [
    [AUDIO, 'snd_hda_intel'],
    [GPU, 'amdgpu'],
  ] as const) {
    await write(sim, override(sim, a), 'vfio-pci');
    await write(sim, sys(sim, 'bus/pci/drivers', from, 'unbind'), a);
    await write(sim, sys(sim, 'bus/pci/drivers_probe'), a);
  }
}

test('a zero-byte write to driver_override is ignored, as sysfs never sees it', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await write(sim, override(sim, GPU), 'vfio-pci');
  await write(sim, override(sim, GPU), '');
  t.is(await sim.overrideOf(GPU), 'vfio-pci');
});

test('a newline clears driver_override, which then reads (null)', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await write(sim, override(sim, GPU), 'vfio-pci\n');
  t.is(await sim.overrideOf(GPU), 'vfio-pci', 'the newline is not stored');
  await write(sim, override(sim, GPU), '\n');
  t.is(await sim.overrideOf(GPU), '(null)');
});

test('drivers_probe binds the override driver and makes /dev/vfio/<group>', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  t.is(await sim.driverOf(GPU), 'vfio-pci');
  t.is(await sim.driverOf(AUDIO), 'vfio-pci');
  t.true(await sim.exists('dev/vfio/25'));
});

test('drivers_probe without an override binds the host driver again', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await write(sim, sys(sim, 'bus/pci/drivers/amdgpu/unbind'), GPU);
  t.is(await sim.driverOf(GPU), null);
  t.false(await sim.exists('dev/dri/card1'));
  await write(sim, sys(sim, 'bus/pci/drivers_probe'), GPU);
  t.is(await sim.driverOf(GPU), 'amdgpu');
  t.true(await sim.exists('dev/dri/card1'));
});

test('unbind from a driver the device is not bound to fails with ENODEV', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const error = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), GPU), { instanceOf: KernelWriteError });
  t.is(error.code, 'ENODEV');
  t.is(await sim.driverOf(GPU), 'amdgpu');
});

test('bind fails with EBUSY when bound and ENODEV when the override names another driver', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const busy = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/drivers/amdgpu/bind'), GPU), { instanceOf: KernelWriteError });
  t.is(busy.code, 'EBUSY');
  await write(sim, override(sim, GPU), 'vfio-pci');
  await write(sim, sys(sim, 'bus/pci/drivers/amdgpu/unbind'), GPU);
  const nomatch = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/drivers/amdgpu/bind'), GPU), { instanceOf: KernelWriteError });
  t.is(nomatch.code, 'ENODEV');
  t.is(await sim.driverOf(GPU), null);
});

test('the host driver probe fails with EINVAL while the group is attached to a container, leaving the device driverless', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  // Detach the GPU from vfio-pci first (no holder yet), then QEMU takes the group.
  await write(sim, override(sim, GPU), '\n');
  await write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), GPU);
  await addSimProcess(sim.kernel.host, { pid: 900, comm: 'qemu-system-x86', fds: ['/dev/vfio/vfio', '/dev/vfio/25'] });
  const error = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/drivers_probe'), GPU), { instanceOf: KernelWriteError });
  t.is(error.code, 'EINVAL');
  t.is(await sim.driverOf(GPU), null);
});

test('merely opening the group changes nothing: unbind and the host probe work', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  await addSimProcess(sim.kernel.host, { pid: 899, comm: 'cat', fds: ['/dev/vfio/25'] });
  await write(sim, override(sim, AUDIO), '\n');
  await write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), AUDIO);
  await write(sim, sys(sim, 'bus/pci/drivers_probe'), AUDIO);
  t.is(await sim.driverOf(AUDIO), 'snd_hda_intel');
});

test('unbind from vfio-pci blocks while a process holds the device fd and finishes when it exits', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  await addSimProcess(sim.kernel.host, {
    pid: 901,
    comm: 'qemu-system-x86',
    fds: ['/dev/vfio/vfio', '/dev/vfio/25', `vfio-device:${GPU}`],
  });
  let done = false;
  const pending = write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), GPU).then(() => {
    done = true;
  });
  // "Still blocked" has no event: give a write that wrongly went through 100 ms to finish.
  await sleep(100);
  t.false(done, 'the write is still blocked');
  t.is(await sim.driverOf(GPU), 'vfio-pci');
  await removeSimProcess(sim.kernel.host, 901);
  await pending;
  t.is(await sim.driverOf(GPU), null);
});

test('a blocked unbind gives up when its signal aborts and changes nothing', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  await addSimProcess(sim.kernel.host, {
    pid: 902,
    comm: 'qemu-system-x86',
    fds: ['/dev/vfio/vfio', '/dev/vfio/25', `vfio-device:${GPU}`],
  });
  const error = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), GPU, AbortSignal.timeout(50)), {
    instanceOf: KernelWriteTimeout,
  });
  t.regex(error.message, /vfio-pci\/unbind' did not return/);
  t.is(await sim.driverOf(GPU), 'vfio-pci');
});

test('/dev/vfio/<group> stays while any device of the group is on vfio-pci', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await toVfio(sim);
  await write(sim, override(sim, GPU), '\n');
  await write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), GPU);
  t.true(await sim.exists('dev/vfio/25'));
  await write(sim, override(sim, AUDIO), '\n');
  await write(sim, sys(sim, 'bus/pci/drivers/vfio-pci/unbind'), AUDIO);
  t.false(await sim.exists('dev/vfio/25'));
});

test('writes outside the sysfs root are refused and unsimulated attributes fail with EPERM', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await t.throwsAsync(write(sim, path.join(sim.dir, 'proc', 'swaps'), 'x'), { instanceOf: UnsafePath });
  const error = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/devices', GPU, 'reset'), '1'), { instanceOf: KernelWriteError });
  t.is(error.code, 'EPERM');
  const missing = await t.throwsAsync(write(sim, sys(sim, 'bus/pci/devices', GPU, 'nonexistent'), '1'), { instanceOf: KernelWriteError });
  t.is(missing.code, 'ENOENT');
});
