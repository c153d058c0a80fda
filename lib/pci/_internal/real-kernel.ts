/**
 * The real KernelPort: reads the injected roots, writes sysfs through a child
 * process (see sysfs-writer.ts for why).
 */
import path from 'node:path';
import type { HostRoots } from '../../roots.js';
import { isWithin } from '../../roots.js';
import { UnsafePath, q } from '../../errors.js';
import type { KernelPort } from '../kernel-port.js';
import { existsPath, readDirOrEmpty, readFileOrNull, readLinkOrNull, readLockedFileOrNull, realPathOrNull } from '../fs-reads.js';
import { SysfsWriter } from './sysfs-writer.js';

export class RealKernel implements KernelPort {
  readonly #writer = new SysfsWriter();
  /** The sysfs root's real path, resolved at the first write (a mount point does not move under a running daemon). */
  #realRoot: string | null = null;

  constructor(readonly roots: HostRoots) {}

  readFile = readFileOrNull;
  readLockedFile = (file: string): Promise<string | null> => readLockedFileOrNull(file);
  readLink = readLinkOrNull;
  realPath = realPathOrNull;
  readDir = readDirOrEmpty;
  exists = existsPath;

  async write(file: string, data: string, signal: AbortSignal): Promise<void> {
    // Check the text, then where the file (or its folder) really is: a link inside an
    // injected root (a copied sysfs tree) must not lead a write outside it.
    // The links of a real sysfs all stay inside /sys, so this costs nothing there.
    // Each read costs the engine's path (a slow machine feels a dozen a
    // detach): the root is resolved once, the folder only for a missing file.
    this.#realRoot ??= await realPathOrNull(this.roots.sysfs);
    const root = this.#realRoot;
    const real = (await realPathOrNull(file)) ?? (await realPathOrNull(path.dirname(file)));
    if (!isWithin(this.roots.sysfs, file) || root === null || (real !== null && !isWithin(root, real))) {
      throw new UnsafePath(`Write to ${q(file)} is outside the sysfs root ${q(this.roots.sysfs)}, refusing`);
    }
    await this.#writer.write(file, data, signal);
  }

  prepareWrites(): void {
    this.#writer.start();
  }

  close(): Promise<void> {
    return this.#writer.close();
  }
}
