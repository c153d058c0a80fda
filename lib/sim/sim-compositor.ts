/**
 * A simulated compositor: a process holding a card's DRM node that closes
 * it when the simulated kernel sends a `remove` uevent for that node (as
 * wlroots and KWin do for a GPU they can give up, lib/host/drm-release.ts),
 * and takes it again on `add`. It stands in for a compositor; it is not one.
 *
 * It follows SIM_UEVENT_LOG (the simulator's netlink socket) with fs.watch:
 * the event, not a timer.
 */
import { watch, type FSWatcher } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { processFd } from '../pci/sysfs-layout.js';
import { addSimProcess, type SimHost } from './sim-host.js';
import { SIM_UEVENT_LOG } from './sim-kernel.js';

export interface SimCompositor {
  /** Resolves once the node was let go (after a `remove`). */
  readonly released: Promise<void>;
  /** Stop following (the process stays, holding whatever it holds). */
  close(): void;
}

export async function startSimCompositor(
  host: Pick<SimHost, 'roots' | 'dir'>,
  process: { pid: number; comm: string; node: string },
): Promise<SimCompositor> {
  const device = `/dev/dri/${process.node}`;
  await addSimProcess(host, { pid: process.pid, comm: process.comm, fds: [device] });
  const log = path.join(host.dir, SIM_UEVENT_LOG);
  let seen = 0;
  let resolveReleased: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (resolveReleased = resolve));
  let busy = Promise.resolve();
  const check = (): void => {
    busy = busy.then(async () => {
      const lines = ((await fs.readFile(log, 'utf8').catch(() => '')) || '').split('\n').filter(Boolean);
      for (const line of lines.slice(seen)) {
        const [action, node] = line.split(' ');
        if (node !== process.node) continue;
        // fd 3 is the one addSimProcess made for the node.
        if (action === 'remove') {
          await fs.rm(processFd(host.roots, process.pid, 'fd', '3'), { force: true });
          resolveReleased();
        }
      }
      seen = lines.length;
    });
  };
  const watcher: FSWatcher = watch(host.dir, (_event, name) => {
    if (name === SIM_UEVENT_LOG || name === null) check();
  });
  check();
  return {
    released,
    close: () => watcher.close(),
  };
}
