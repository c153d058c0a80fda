/**
 * `vfio-hookctl devices` shows each device's reset methods and Resizable
 * BARs (issue 14), read through the simulated kernel's sysfs: the
 * reference host's RX 590 with `reset_method` from the fixture and a
 * `resource0_resize` file added as the kernel lays it out.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { devicesView, formatDevices } from '../../lib/cli/device-view.js';
import { makeSim } from '../helpers/sim.js';

const RX590 = '0000:0b:00.0';
const MiB = 1024 * 1024;

test('devices shows reset methods and Resizable BARs, in the listing and the view', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const dir = await fs.realpath(path.join(sim.dir, 'sys', 'bus', 'pci', 'devices', RX590));
  // 256M now, 256M to 8G possible (bits 8..13); BAR 2 a fixed 2M window.
  await fs.writeFile(path.join(dir, 'resource0_resize'), '0000000000003f00\n');
  await fs.writeFile(
    path.join(dir, 'resource'),
    '0x000000e000000000 0x000000e00fffffff 0x000000000014220c\n' +
      '0x0000000000000000 0x0000000000000000 0x0000000000000000\n' +
      '0x000000e010000000 0x000000e0101fffff 0x000000000014220c\n',
  );
  const view = devicesView(await sim.engine.inspect(), new Map());
  const gpu = view.devices.find((d) => d.address === RX590)!;
  t.deepEqual(gpu.resetMethods, ['bus']);
  t.deepEqual(gpu.resizableBars, [{ bar: 0, current: 256 * MiB, sizes: [256, 512, 1024, 2048, 4096, 8192].map((m) => m * MiB) }]);
  t.deepEqual(view.devices.find((d) => d.address === '0000:0b:00.1')!.resizableBars, [], 'no resize files: none');
  const listing = formatDevices(view, { width: 200 });
  t.regex(listing, /0000:0b:00\.0 .*\n +.*reset bus; ReBAR BAR0 256M \(sizes 256M-8G\)\n/);
});
