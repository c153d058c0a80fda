/**
 * Reserving a shared-memory file's memory, not just setting its size.
 *
 * ftruncate alone makes a sparse file, which succeeds on a full (or too
 * small) tmpfs, and QEMU would then die of SIGBUS at the guest's first frame.
 * Node has no posix_fallocate, so the space is reserved by writing through
 * the descriptor (tmpfs allocates a page when it is first written): zeros
 * into a file we created, the bytes read back into an existing one, so its
 * contents are kept. Before writing, the free space of the shm root (statfs)
 * is compared with what is missing, so a file that cannot fit is refused
 * without filling the host's /dev/shm even for a moment; a write that still
 * runs out of space (someone else filled it meanwhile) is undone by the
 * caller the same way.
 */

import type { FileHandle } from 'node:fs/promises';
import * as fsp from 'node:fs/promises';

import { InvalidConfig, q } from '../errors.js';
import { errorCode } from './shm-entry.js';
import type { ShmFileSpec } from './shm-file-spec.js';

/** Bytes written at a time while reserving a file's space. */
const RESERVE_CHUNK = 1024 * 1024;

/** st_blocks counts 512-byte units, whatever the file system's block size. */
const BLOCK_UNIT = 512;

/** Bytes of the file backed by memory now (st_blocks), whatever its size says. */
export async function backedBytes(handle: FileHandle): Promise<number> {
  return (await handle.stat()).blocks * BLOCK_UNIT;
}

/** What is missing from the shm root; thrown by reserve, turned into a refusal once the undo is done. */
class SpaceShortage extends Error {
  constructor(readonly missing: number) {
    super(`${missing} bytes short`);
  }
}

/**
 * Back every page of the file's `spec.size` bytes with memory, by writing
 * through the descriptor: zeros (a new file), or each chunk read back
 * (`keep`, an existing file; a hole reads as zeros, so this never changes
 * what is there). First compares what is missing with the root's free
 * space, so a file that cannot fit never fills the root.
 *
 * @throws SpaceShortage when it does not fit, or the root fills up while writing.
 */
export async function reserve(handle: FileHandle, spec: Pick<ShmFileSpec, 'root' | 'size'>, fill: 'zeros' | 'keep'): Promise<void> {
  const missing = Math.max(0, spec.size - (await backedBytes(handle)));
  if (missing === 0) return;
  if (missing > (await freeBytes(spec.root))) throw new SpaceShortage(missing);
  const chunk = Buffer.alloc(Math.min(RESERVE_CHUNK, spec.size));
  try {
    for (let offset = 0; offset < spec.size;) {
      const length = Math.min(chunk.length, spec.size - offset);
      if (fill === 'keep') {
        let read = 0;
        while (read < length) {
          const { bytesRead } = await handle.read(chunk, read, length - read, offset + read);
          // The file shrank under us (someone truncated it): the rest reads as zeros.
          if (bytesRead === 0) {
            chunk.fill(0, read, length);
            break;
          }
          read += bytesRead;
        }
      }
      let written = 0;
      while (written < length) {
        const { bytesWritten } = await handle.write(chunk, written, length - written, offset + written);
        written += bytesWritten;
      }
      offset += length;
    }
  } catch (error) {
    if (errorCode(error) === 'ENOSPC') throw new SpaceShortage(missing);
    throw error;
  }
}

/** Free space of the root for an unprivileged writer (f_bavail), in bytes. */
async function freeBytes(root: string): Promise<number> {
  const fs = await fsp.statfs(root);
  return fs.bavail * fs.bsize;
}

/** The error to throw after an undo: a SpaceShortage becomes the refusal, with the free space left now. */
export async function refusalFor(error: unknown, path: string, root: string, existing: boolean): Promise<unknown> {
  if (!(error instanceof SpaceShortage)) return error;
  let free: string;
  try {
    free = formatAmount(await freeBytes(root), 1);
  } catch {
    free = 'too little';
  }
  return new InvalidConfig(
    `Cannot reserve shared memory file ${q(path)}: needs ${formatAmount(error.missing)}${existing ? ' more' : ''}, ` +
      `${q(root)} has ${free} free; free space there or make it larger (mount -o remount,size=... ${q(root)}), refusing`,
  );
}

/**
 * An amount of memory as people read it: `32 MiB`, `512 B`; with `decimals`,
 * always that many (`1.0 MiB`, as df -h), else only when not a whole number.
 */
export function formatAmount(bytes: number, decimals?: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  const shown = decimals !== undefined ? value.toFixed(decimals) : Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${shown} ${units[unit]}`;
}
