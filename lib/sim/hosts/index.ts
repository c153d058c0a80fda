/** The built-in simulated hosts, by name (`vfio-hookctl --simulate NAME`). */
import type { FixtureInput } from '../fixture.js';
import { referenceHost } from './reference-host.js';
import { singleGpuHost } from './single-gpu-host.js';
import { nvidiaHost } from './nvidia-host.js';
import { splitBoardHost } from './split-board-host.js';
import { chipsetHost } from './chipset-host.js';

export const BUILTIN_HOSTS: ReadonlyMap<string, FixtureInput> = new Map(
  [referenceHost, singleGpuHost, nvidiaHost, splitBoardHost, chipsetHost].map((h) => [h.name, h]),
);
