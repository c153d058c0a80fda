/**
 * Simulated hosts: a product feature (the demo without hardware) and the
 * ground the sim and bus test tiers stand on.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgs, q } from '../errors.js';
import { BUILTIN_HOSTS } from './hosts/index.js';
import { loadFixtureFile, type FixtureInput } from './fixture.js';
import { SIM_STATE_FILE, buildSimHost } from './sim-host.js';
import { SimKernel } from './sim-kernel.js';

export { SimKernel, SIM_UEVENT_LOG } from './sim-kernel.js';
export { startSimCompositor, type SimCompositor } from './sim-compositor.js';
export { SimSystemd } from './sim-systemd.js';
export type { Fixture, FixtureInput } from './fixture.js';
export { parseFixture } from './fixture.js';
export { buildSimHost, openSimHost, addSimProcess, removeSimProcess, type SimHost } from './sim-host.js';
export { BUILTIN_HOSTS } from './hosts/index.js';

/** A built-in host by name, or a JSON fixture by path (anything with a `/` or ending in `.json`). */
async function resolveFixture(nameOrPath: string): Promise<FixtureInput> {
  if (nameOrPath.includes('/') || nameOrPath.endsWith('.json')) return loadFixtureFile(nameOrPath);
  const builtin = BUILTIN_HOSTS.get(nameOrPath);
  if (!builtin) {
    throw new InvalidArgs(
      `Unknown simulated host ${q(nameOrPath)}: choose one of ${[...BUILTIN_HOSTS.keys()].map((n) => q(n)).join(', ')}, or give a path to a JSON fixture`,
    );
  }
  return builtin;
}

/** Where a simulated host lives unless told: `$XDG_RUNTIME_DIR` (or the temp folder)`/vfio-hookd-sim/<name>`. */
function defaultSimDir(name: string): string {
  const base = process.env['XDG_RUNTIME_DIR'] || os.tmpdir();
  return path.join(base, 'vfio-hookd-sim', path.basename(name).replace(/\.json$/, ''));
}

interface OpenSimOptions {
  /** The host's folder. Default: defaultSimDir(fixture). */
  readonly dir?: string;
  /** Throw away the folder and build it afresh from the fixture. Default false. */
  readonly reset?: boolean;
}

/**
 * Open the simulated host for `fixture`, building its folder on first use.
 * Later calls reuse the folder, so a detach in one command is seen by the next.
 */
export async function openSimulation(fixture: string, options: OpenSimOptions = {}): Promise<SimKernel> {
  const dir = options.dir ?? defaultSimDir(fixture);
  if (options.reset) await fs.rm(dir, { recursive: true, force: true });
  const built = await fs
    .access(path.join(dir, SIM_STATE_FILE))
    .then(() => true)
    .catch(() => false);
  if (!built) {
    await fs.mkdir(dir, { recursive: true });
    await buildSimHost(await resolveFixture(fixture), dir);
  }
  return SimKernel.open(dir);
}
