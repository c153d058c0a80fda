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
 */
import fs from 'node:fs';

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
