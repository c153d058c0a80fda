/**
 * The port through which the engine sees and changes the kernel.
 *
 * Reads are plain file reads under the injected roots: the real adapter reads
 * `/sys` and `/proc`, the simulated host reads its own folder laid out the
 * same way. Writes are where the two differ: the real adapter writes sysfs in
 * a child process (a hung unbind must not block the daemon), the simulated
 * kernel applies the kernel's semantics to its folder.
 */
import type { HostRoots } from '../roots.js';

/** A sysfs write the kernel refused; `code` is the errno name (`EINVAL`, `ENODEV`, ...). */
export class KernelWriteError extends Error {
  override readonly name = 'KernelWriteError';
  constructor(
    readonly path: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A write that did not return before its signal aborted (the kernel may still be in it). */
export class KernelWriteTimeout extends Error {
  override readonly name = 'KernelWriteTimeout';
  constructor(readonly path: string) {
    super(`write to '${path}' did not return`);
  }
}

export interface KernelPort {
  readonly roots: HostRoots;
  /** File contents, or null when the file does not exist. */
  readFile(path: string): Promise<string | null>;
  /**
   * An attribute whose show takes the device lock (`driver_override`), or
   * null when missing. Unlike readFile it may wait on the kernel (an unbind or
   * a probe of the device holds the lock), so it must not stop the event
   * loop: the real adapter reads it on the thread pool and rejects with
   * DeviceBusy when the lock is not released in time (fs-reads.ts).
   */
  readLockedFile(path: string): Promise<string | null>;
  /** Link text, or null when there is no link. */
  readLink(path: string): Promise<string | null>;
  /** The link's target resolved to a real path, or null when missing. */
  realPath(path: string): Promise<string | null>;
  /** Entry names, or [] when the directory does not exist. */
  readDir(path: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  /**
   * Write `data` to a sysfs attribute as one write(2). Rejects with
   * KernelWriteError for an errno, KernelWriteTimeout when `signal` aborts
   * first. Paths outside the sysfs root are refused.
   */
  write(path: string, data: string, signal: AbortSignal): Promise<void>;
  /**
   * Get ready to write now rather than at the first write (the real adapter
   * starts its writer process: a node start, which a hook must not pay for).
   * Optional; a no-op where there is nothing to start.
   */
  prepareWrites?(): void;
  /** Release what the adapter holds (the writer process). */
  close(): Promise<void>;
}
