/**
 * The kernel tunables the host changes write (hugepage counts,
 * compact_memory, a device's reset_method): plain files under the injected
 * roots. One small port, so the simulator (lib/sim/sim-hugepages.ts) can
 * answer a write as the kernel does; the real one is the files themselves.
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';

import { existsPath, readFileOrNull } from '../pci/fs-reads.js';

export interface TunableFiles {
  /** The file's text, null when it is missing. */
  read(path: string): Promise<string | null>;
  /** One write of `text` to an existing file (never created: a missing tunable is an error). */
  write(path: string, text: string): Promise<void>;
  /** Whether the entry is there (compact_memory is write-only: it cannot be read to tell). */
  exists(path: string): Promise<boolean>;
}

export const REAL_TUNABLES: TunableFiles = {
  read: readFileOrNull,
  // O_WRONLY alone: compact_memory is mode 0200, so a read-write open is refused (EACCES, seen on 6.12);
  // no O_CREAT, no O_TRUNC: a tunable is never made, and a sysfs value is set by one write(2).
  async write(path, text) {
    const handle = await fs.open(path, constants.O_WRONLY);
    try {
      await handle.write(text);
    } finally {
      await handle.close();
    }
  },
  exists: existsPath,
};
