/**
 * Tunables on a plain folder (a fake sysfs tree): a write replaces the
 * file's whole text, as one write(2) to a sysfs attribute sets its value.
 * Plain files keep what was written past a shorter one (`r+`), so the real
 * adapter (lib/host/tunable-files.ts) cannot stand in for the kernel here.
 */
import fs from 'node:fs/promises';

import type { TunableFiles } from '../host/tunable-files.js';
import { existsPath, readFileOrNull } from '../pci/fs-reads.js';

export const PLAIN_TUNABLES: TunableFiles = {
  read: readFileOrNull,
  async write(path, text) {
    // Like sysfs: no new attribute appears because someone wrote to it.
    if (!(await existsPath(path))) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    await fs.writeFile(path, text);
  },
  exists: existsPath,
};
