/**
 * The read half of KernelPort, shared by the real adapter (_internal/) and
 * the simulated kernel (lib/sim): both are folders of files and links. A
 * missing entry reads as null (or []), anything else is thrown.
 *
 * Synchronous calls behind a promise, on purpose: every read here is of a
 * sysfs attribute, a sysfs or procfs link or folder, or mountinfo, which
 * the kernel answers from memory without waiting on hardware (the PCI
 * attributes read are fields of struct pci_dev; nothing reads `config`).
 * An async read costs four trips through libuv's thread pool (open, fstat,
 * read, close), and a host read makes hundreds: measured, the sync reads
 * made the engine's read of the host several times faster (test/bench, the
 * kernel tier's engine figure). What can block — the writes — stays in the
 * writer child (_internal/sysfs-writer.ts).
 *
 * One attribute read is the exception: `driver_override`, whose show takes
 * the device lock on some kernels, which the driver core holds for as long
 * as an unbind or a probe of that device runs. The kernel tier's fact
 * `override-read-blocks` (an unbind from vfio-pci blocked by a held device
 * fd): on Debian's 6.1 the read of driver_override waits for the unbind, on
 * 6.12 it does not, and no other attribute the engine reads waits on either
 * (`KERNEL_TIER_PACKAGE=linux-image-6.1.0-57-amd64 npm run test:kernel`).
 * A probe of amdgpu takes seconds; read synchronously, that read would stop
 * the daemon's event loop, and with it the bus and the watchdog, for as long,
 * forever for an unbind that never returns. readLockedFileOrNull reads it on
 * libuv's thread pool instead, bounded (see there).
 */
import fs from 'node:fs';
import { DeviceBusy, q } from '../errors.js';

function missing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENODEV' || code === 'ENXIO';
}

/** Run a sync read as a promise: its errors reject rather than throw. */
function settled<T>(read: () => T, onMissing: (error: unknown) => T | undefined): Promise<T> {
  try {
    return Promise.resolve(read());
  } catch (error) {
    const fallback = onMissing(error);
    return fallback !== undefined ? Promise.resolve(fallback) : Promise.reject(error as Error);
  }
}

export function readFileOrNull(path: string): Promise<string | null> {
  return settled<string | null>(
    () => fs.readFileSync(path, 'utf8'),
    (e) => (missing(e) ? null : undefined),
  );
}

export function readLinkOrNull(path: string): Promise<string | null> {
  return settled<string | null>(
    () => fs.readlinkSync(path),
    (e) => (missing(e) || (e as NodeJS.ErrnoException).code === 'EINVAL' ? null : undefined),
  );
}

export function realPathOrNull(path: string): Promise<string | null> {
  return settled<string | null>(
    () => fs.realpathSync.native(path),
    (e) => (missing(e) ? null : undefined),
  );
}

export function readDirOrEmpty(path: string): Promise<string[]> {
  return settled<string[]>(
    () => fs.readdirSync(path),
    (e) => (missing(e) ? [] : undefined),
  );
}

export function existsPath(path: string): Promise<boolean> {
  return settled<boolean>(
    () => (fs.lstatSync(path), true),
    (e) => (missing(e) ? false : undefined),
  );
}

/** How long a read of a lock-taking attribute may wait: the engine's default write timeout, for the same reason. */
export const LOCKED_READ_TIMEOUT_MS = 10_000;

/** Reads of lock-taking attributes still in the kernel, by path: one pool thread at most per attribute. */
const lockedReads = new Map<string, Promise<string | null>>();

/**
 * Read an attribute whose show takes the device lock (`driver_override`)
 * off the event loop: opened and read by one read(2) on libuv's thread pool
 * (a sysfs attribute is at most a page, and a show returns it whole; the
 * open is there too, so that whatever blocks, the kernel's lock or a FIFO
 * under an injected root as the tests use, blocks a pool thread). Rejects with
 * DeviceBusy after `timeoutMs` while the read is still waiting on the lock;
 * the read itself stays in the kernel until the lock is released, and a
 * second read of the same attribute joins it instead of taking another pool
 * thread (the pool has four, and every async fs call of the process shares
 * them). A missing attribute reads as null, as readFileOrNull.
 *
 * The price of a read the kernel never lets go: the process cannot exit
 * while it waits (libuv joins its pool threads at exit; the kernel tier
 * shows node exiting once the lock is released). That is the writes' trade
 * the other way round, and the right one here: an event loop stopped on
 * the lock would have stopped the bus, the watchdog and every other VM's
 * hook for as long.
 */
export function readLockedFileOrNull(path: string, timeoutMs = LOCKED_READ_TIMEOUT_MS): Promise<string | null> {
  let read = lockedReads.get(path);
  if (read === undefined) {
    read = poolRead(path).finally(() => lockedReads.delete(path));
    lockedReads.set(path, read);
  }
  return new Promise<string | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(
        new DeviceBusy(
          `Reading ${q(path)} did not return within ${timeoutMs} ms: the kernel holds the device's lock, as it does while ` +
            `an unbind or a driver's probe of it runs; wait for that to finish, or see 'dmesg' for a task blocked on the device`,
        ),
      );
    }, timeoutMs);
    read.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error as Error);
      },
    );
  });
}

const PAGE = 4096;

function poolRead(path: string): Promise<string | null> {
  return new Promise<string | null>((resolve, reject) => {
    const fail = (error: NodeJS.ErrnoException): void => (missing(error) ? resolve(null) : reject(error));
    fs.open(path, fs.constants.O_RDONLY, (openError, fd) => {
      if (openError) return fail(openError);
      const buffer = Buffer.allocUnsafe(PAGE);
      fs.read(fd, buffer, 0, PAGE, null, (readError, bytes) => {
        fs.close(fd, () => {});
        if (readError) fail(readError);
        else resolve(buffer.toString('utf8', 0, bytes));
      });
    });
  });
}
