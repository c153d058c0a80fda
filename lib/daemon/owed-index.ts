/**
 * The hook's index of the VMs the daemon owes a call (`<run>/vfio-hookd/owed`).
 *
 * Why: for a VM whose domain XML has no `<hostdev>`, no `<shmem>` and none of
 * our `<metadata>`, and whose name the daemon neither has in its
 * configuration nor holds anything for, the daemon's answer is always
 * "nothing to do" (daemon-backend.ts: not managed, no record; the
 * did-you-mean note is only given to a VM that passes devices through). Most
 * VMs on a host are such VMs, and a `busctl` call alone costs more than the
 * bash dispatcher hooks it replaces. So the hook answers those itself: it
 * reads this file and calls the daemon only when the name is listed, or the
 * XML passes something through, or the file is missing, not root's, or not
 * whole (then it asks, as before). What such a VM loses: its hooks no longer
 * reach the bus as HookHandled signals (`vfio-hookctl monitor` does not show
 * them); nothing the daemon records or does changes.
 *
 * The names: every Machine object's (configured VMs, VMs with a record or
 * claims, VMs seen since the start), written after every refresh that
 * changes them, before READY=1, and removed at a clean stop (a stopped
 * daemon's hooks then take the "no answer" path, which says so). Atomic:
 * written beside it, then renamed. One name a line as `vm NAME` (so no name
 * can pass for the header or the end line); VM names never contain a newline
 * (lib/names/vm-name.ts refuses control characters), so a line is exact.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { vmNameProblem } from '../names/vm-name.js';

/** First and last lines; a file without both is not trusted by the hook (hooks/qemu, `owed()`). */
export const OWED_HEADER = '# vfio-hookd owed v1';
export const OWED_END = '# end';
export const OWED_FILE = 'owed';

export class OwedIndex {
  readonly #file: string;
  #written: string | null = null;

  constructor(hookDir: string) {
    this.#file = path.join(hookDir, OWED_FILE);
  }

  /** Write the list if it changed since the last write. */
  async write(names: Iterable<string>): Promise<void> {
    const valid = [...new Set(names)].filter((n) => vmNameProblem(n) === null).sort();
    const text = `${OWED_HEADER}\n${valid.map((n) => `vm ${n}\n`).join('')}${OWED_END}\n`;
    if (text === this.#written) return;
    await fs.mkdir(path.dirname(this.#file), { recursive: true, mode: 0o755 });
    const temp = `${this.#file}.${process.pid}.tmp`;
    await fs.writeFile(temp, text, { mode: 0o644 });
    await fs.rename(temp, this.#file);
    this.#written = text;
  }

  /** At a clean stop. */
  async remove(): Promise<void> {
    this.#written = null;
    await fs.rm(this.#file, { force: true });
  }
}
