/**
 * Engine figures on the simulated reference host, in-process: reading the
 * host (what `devices` and every plan read), planning, and a detach +
 * reattach round trip of the RX 590; and `vfio-hookctl devices` as a user
 * runs it (the bundle, a new node), against a bare `node -e 0` run
 * alternately on the same machine.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { vmOwner } from '../../lib/pci/owner.js';
import { buildSimHost, BUILTIN_HOSTS, SimKernel } from '../../lib/sim/index.js';
import { PciEngine } from '../../lib/pci/engine.js';
import { planDetach } from '../../lib/pci/plan.js';
import { REPO } from '../helpers/private-bus.js';
import { quantile, timePairs, timeRuns, type Report } from './figures.js';

const run = promisify(execFile);
const WIN10 = vmOwner('win10');

export async function engineFigures(report: Report): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-bench-'));
  try {
    await buildSimHost(structuredClone(BUILTIN_HOSTS.get('reference-host')!), dir);
    const engine = new PciEngine(await SimKernel.open(dir));
    const read = await timeRuns(200, () => engine.inspect());
    report.add({
      id: 'engine-read',
      label: 'engine: read the host (25 devices, processes, mounts), in-process',
      value: quantile(read, 0.5),
      unit: 'ms',
      samples: read,
    });
    const snapshot = await engine.inspect();
    const plan = await timeRuns(2000, async () => planDetach(snapshot, ['0000:0b:00.0'], { owner: WIN10 }));
    report.add({
      id: 'engine-plan',
      label: 'engine: plan the detach of the RX 590 (pure)',
      value: quantile(plan, 0.5),
      unit: 'ms',
      samples: plan,
    });
    const rounds = await timeRuns(100, async () => {
      const { claims } = await engine.detach(['0000:0b:00.0'], { owner: WIN10 });
      await engine.reattach(['0000:0b:00.0'], { owner: WIN10, claims });
    });
    report.add({
      id: 'engine-round-trip',
      label: 'engine: detach + reattach round trip on the simulated host, in-process',
      value: quantile(rounds, 0.5),
      unit: 'ms',
      samples: rounds,
    });

    const cli = path.join(REPO, 'dist/bin/vfio-hookctl.js');
    const simDir = path.join(dir, 'cli-sim');
    // No daemon answers on this bus address: devices reads the simulated sysfs itself, as on a host without the daemon.
    const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${path.join(dir, 'no-bus')}`, COLUMNS: '100' };
    const devices = (): Promise<unknown> =>
      run(process.execPath, [cli, '--simulate', 'reference-host', '--sim-dir', simDir, 'devices'], { env });
    await devices();
    const [ours, bare] = await timePairs(20, devices, () => run(process.execPath, ['-e', '0']));
    report.add({
      id: 'cli-devices',
      label: 'vfio-hookctl devices on the simulated reference host (bundle, new node)',
      value: quantile(ours, 0.5),
      unit: 'ms',
      samples: ours,
      anchor: { label: 'node -e 0', value: quantile(bare, 0.5) },
      goal: { on: 'ratio', max: 2.5 },
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
