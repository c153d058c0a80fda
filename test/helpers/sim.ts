/**
 * A simulated host per test: its own temp folder, removed in teardown.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { buildSimHost, BUILTIN_HOSTS, SimKernel, type FixtureInput } from '../../lib/sim/index.js';
import { PciEngine } from '../../lib/pci/engine.js';
import type { ExecuteOptions } from '../../lib/pci/executor.js';
import { tempDir } from './temp-dir.js';

export interface TestSim {
  dir: string;
  kernel: SimKernel;
  engine: PciEngine;
  /** Bound driver's name read from the device's `driver` link, or null. */
  driverOf(address: string): Promise<string | null>;
  /** Raw `driver_override` contents, trimmed. */
  overrideOf(address: string): Promise<string>;
  exists(relative: string): Promise<boolean>;
}

/** A deep copy of a built-in host, to change before building. */
export function fixtureCopy(name: string): FixtureInput {
  const fixture = BUILTIN_HOSTS.get(name);
  if (!fixture) throw new Error(`no fixture ${name}`);
  return structuredClone(fixture) as FixtureInput;
}

export async function makeSim(t: ExecutionContext, fixture: string | FixtureInput, options: ExecuteOptions = {}): Promise<TestSim> {
  const dir = await tempDir(t, 'vfio-hookd-sim-');
  await buildSimHost(typeof fixture === 'string' ? fixtureCopy(fixture) : fixture, dir);
  const kernel = await SimKernel.open(dir);
  const engine = new PciEngine(kernel, options);
  const devices = path.join(dir, 'sys', 'bus', 'pci', 'devices');
  return {
    dir,
    kernel,
    engine,
    async driverOf(address) {
      const link = await fs.readlink(path.join(devices, address, 'driver')).catch(() => null);
      return link === null ? null : path.basename(link);
    },
    async overrideOf(address) {
      return (await fs.readFile(path.join(devices, address, 'driver_override'), 'utf8')).trim();
    },
    async exists(relative) {
      return fs.lstat(path.join(dir, relative)).then(
        () => true,
        () => false,
      );
    },
  };
}

/** Drivers of several devices at once, for compact assertions. */
export async function driversOf(sim: TestSim, addresses: readonly string[]): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const a of addresses) out[a] = await sim.driverOf(a);
  return out;
}
