/**
 * Fault injection for the crash tests: SIGKILL this process right after the
 * Nth completed sysfs write or the Nth state save, as `VFIO_HOOKD_CRASH_AFTER`
 * says (`write:3`, `save:2`). The daemon honours it only on a simulated host
 * (`--simulate`); on a real one the variable is refused at start, so it can
 * never take a real machine down.
 */
import { InvalidArgs, q } from '../errors.js';
import type { KernelPort } from '../pci/kernel-port.js';

export const CRASH_ENV = 'VFIO_HOOKD_CRASH_AFTER';

interface CrashPoint {
  readonly kind: 'write' | 'save';
  readonly count: number;
}

export function parseCrashPoint(text: string | undefined): CrashPoint | null {
  if (text === undefined || text === '') return null;
  const m = /^(write|save):([1-9]\d{0,5})$/.exec(text);
  if (!m) throw new InvalidArgs(`Invalid ${CRASH_ENV} ${q(text)}: expected write:N or save:N`);
  return { kind: m[1] as 'write' | 'save', count: Number(m[2]) };
}

/** Counts events of one kind and kills the process at the chosen one. */
export class CrashCounter {
  readonly #point: CrashPoint | null;
  #writes = 0;
  #saves = 0;

  constructor(point: CrashPoint | null) {
    this.#point = point;
  }

  wrote(): void {
    this.#writes++;
    if (this.#point?.kind === 'write' && this.#writes === this.#point.count) process.kill(process.pid, 'SIGKILL');
  }

  saved(): void {
    this.#saves++;
    if (this.#point?.kind === 'save' && this.#saves === this.#point.count) process.kill(process.pid, 'SIGKILL');
  }

  /** The port with every completed write counted. */
  wrap(port: KernelPort): KernelPort {
    if (this.#point === null) return port;
    return {
      roots: port.roots,
      readFile: (file) => port.readFile(file),
      readLockedFile: (file) => port.readLockedFile(file),
      readLink: (file) => port.readLink(file),
      realPath: (file) => port.realPath(file),
      readDir: (dir) => port.readDir(dir),
      exists: (file) => port.exists(file),
      close: () => port.close(),
      write: async (file, data, signal) => {
        await port.write(file, data, signal);
        this.wrote();
      },
    };
  }
}
