/**
 * A simulated hugetlb pool behind the TunableFiles port (lib/host/hugepages.ts):
 * files in a folder laid out as the kernel's, where a write to `nr_hugepages`
 * gets what the simulated memory can give, as the real kernel does: at most
 * `capacity` pages (fragmentation is what makes it short). Pages in use
 * above the persistent count are surplus (`surplus_hugepages`), freed as
 * they are unmapped; `nr_hugepages` shows the persistent pool, as the
 * kernel's does, and `free_hugepages` follows. `compact_memory` writes are
 * counted, so a test can see compaction came first.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import type { TunableFiles } from '../host/tunable-files.js';
import { PLAIN_TUNABLES } from './sim-tunables.js';
import { existsPath, readFileOrNull } from '../pci/fs-reads.js';
import type { HostRoots } from '../roots.js';

export interface SimHugepagesOptions {
  /** Page size in KiB. Default 2048. */
  readonly pageKiB?: number;
  /** Pages in the pool at the start. Default 0. */
  readonly nr?: number;
  /** Of those, how many are in use (mapped by someone). Default 0. */
  readonly used?: number;
  /** The most pages a write can get. Default unlimited. */
  readonly capacity?: number;
  /** Whether `<proc>/sys/vm/compact_memory` exists (CONFIG_COMPACTION). Default true. */
  readonly compaction?: boolean;
}

export class SimHugepages implements TunableFiles {
  readonly pageKiB: number;
  /** Every write in order, `path=text`, paths relative to the roots' parent. */
  readonly writes: string[] = [];
  #used: number;
  #persistent: number;
  readonly #capacity: number;
  readonly #roots: HostRoots;

  private constructor(roots: HostRoots, options: SimHugepagesOptions) {
    this.#roots = roots;
    this.pageKiB = options.pageKiB ?? 2048;
    this.#used = options.used ?? 0;
    this.#persistent = options.nr ?? 0;
    this.#capacity = options.capacity ?? Number.MAX_SAFE_INTEGER;
  }

  /** Lay out the pool's files under `roots` and return the simulation. */
  static async create(roots: HostRoots, options: SimHugepagesOptions = {}): Promise<SimHugepages> {
    const sim = new SimHugepages(roots, options);
    await fs.mkdir(sim.poolDir, { recursive: true });
    await sim.#show();
    if (options.compaction ?? true) {
      await fs.mkdir(path.join(roots.proc, 'sys', 'vm'), { recursive: true });
      await fs.writeFile(path.join(roots.proc, 'sys', 'vm', 'compact_memory'), '');
    }
    return sim;
  }

  get poolDir(): string {
    return path.join(this.#roots.sysfs, 'kernel', 'mm', 'hugepages', `hugepages-${this.pageKiB}kB`);
  }

  /** Pages in use, as a running VM maps them (`use(n)` maps n more, negative unmaps). */
  async use(delta: number): Promise<void> {
    this.#used += delta;
    await this.#show();
  }

  async nr(): Promise<number> {
    return Number((await this.read(path.join(this.poolDir, 'nr_hugepages')))!.trim());
  }

  read(file: string): Promise<string | null> {
    return readFileOrNull(file);
  }

  exists(file: string): Promise<boolean> {
    return existsPath(file);
  }

  async write(file: string, text: string): Promise<void> {
    this.writes.push(`${path.basename(path.dirname(file))}/${path.basename(file)}=${text.trim()}`);
    if (file === path.join(this.poolDir, 'nr_hugepages')) {
      const asked = Number(text.trim());
      if (!Number.isSafeInteger(asked) || asked < 0) throw Object.assign(new Error('EINVAL'), { code: 'EINVAL' });
      this.#persistent = Math.min(asked, this.#capacity);
      await this.#show();
      return;
    }
    // Any other tunable (compact_memory, a device's reset_method): as a plain tree's, a write sets the whole value.
    await PLAIN_TUNABLES.write(file, text);
  }

  /** The pool as the kernel shows it: mapped pages above the persistent count are surplus. */
  async #show(): Promise<void> {
    const surplus = Math.max(this.#used - this.#persistent, 0);
    const free = Math.max(this.#persistent - this.#used, 0);
    await fs.writeFile(path.join(this.poolDir, 'nr_hugepages'), `${this.#persistent}\n`);
    await fs.writeFile(path.join(this.poolDir, 'free_hugepages'), `${free}\n`);
    await fs.writeFile(path.join(this.poolDir, 'surplus_hugepages'), `${surplus}\n`);
  }
}
