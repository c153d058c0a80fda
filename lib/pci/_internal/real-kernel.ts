/**
 * The real KernelPort: reads the injected roots, writes sysfs through a child
 * process (see sysfs-writer.ts for why).
 */
import type { HostRoots } from '../../roots.js';
import { isWithin } from '../../roots.js';
import { UnsafePath, q } from '../../errors.js';
import type { KernelPort } from '../kernel-port.js';
import { existsPath, readDirOrEmpty, readFileOrNull, readLinkOrNull, realPathOrNull } from './fs-reads.js';
import { SysfsWriter } from './sysfs-writer.js';

export class RealKernel implements KernelPort {
  readonly #writer = new SysfsWriter();

  constructor(readonly roots: HostRoots) {}

  readFile = readFileOrNull;
  readLink = readLinkOrNull;
  realPath = realPathOrNull;
  readDir = readDirOrEmpty;
  exists = existsPath;

  async write(path: string, data: string, signal: AbortSignal): Promise<void> {
    if (!isWithin(this.roots.sysfs, path)) {
      throw new UnsafePath(`Write to ${q(path)} is outside the sysfs root ${q(this.roots.sysfs)}, refusing`);
    }
    await this.#writer.write(path, data, signal);
  }

  close(): Promise<void> {
    return this.#writer.close();
  }
}
