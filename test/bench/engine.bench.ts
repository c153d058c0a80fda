/**
 * Engine figures on the simulated reference host: reading the host (the
 * `devices` listing's cost), planning, and a detach + reattach round trip of
 * the RX 590. Prints figures; never fails on a time.
 *
 * Run alone: node --import tsx test/bench/engine.bench.ts
 */
import { vmOwner } from '../../lib/pci/owner.js';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildSimHost, BUILTIN_HOSTS, SimKernel } from '../../lib/sim/index.js';
import { PciEngine } from '../../lib/pci/engine.js';
import { planDetach } from '../../lib/pci/plan.js';
import { stats, timeRuns } from './figures.js';

const WIN10 = vmOwner('win10');

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-bench-'));
try {
  await buildSimHost(structuredClone(BUILTIN_HOSTS.get('reference-host')!), dir);
  const engine = new PciEngine(await SimKernel.open(dir));
  const rssBefore = process.memoryUsage().rss;

  console.log(`bench engine: read host (25 devices, processes, mounts): ${stats(await timeRuns(200, () => engine.inspect()), 2)}`);
  const snapshot = await engine.inspect();
  console.log(
    `bench engine: plan detach of the RX 590 (pure): ${stats(await timeRuns(2000, async () => planDetach(snapshot, ['0000:0b:00.0'], { owner: WIN10 })), 2)}`,
  );
  const rounds = await timeRuns(100, async () => {
    const { claims } = await engine.detach(['0000:0b:00.0'], { owner: WIN10 });
    await engine.reattach(['0000:0b:00.0'], { owner: WIN10, claims });
  });
  console.log(`bench engine: detach + reattach round trip on the simulated host: ${stats(rounds, 2)}`);
  console.log(
    `bench engine: rss after 100 round trips: ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB (before: ${(rssBefore / 2 ** 20).toFixed(1)} MiB)`,
  );
} finally {
  await fs.rm(dir, { recursive: true, force: true });
}
