/**
 * The read half of KernelPort, shared by the real adapter (_internal/) and
 * the simulated kernel (lib/sim): both are folders of files and links. A
 * missing entry reads as null (or []), anything else is thrown.
 */
import fs from 'node:fs/promises';

function missing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENODEV' || code === 'ENXIO';
}

export async function readFileOrNull(path: string): Promise<string | null> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (error) {
    if (missing(error)) return null;
    throw error;
  }
}

export async function readLinkOrNull(path: string): Promise<string | null> {
  try {
    return await fs.readlink(path);
  } catch (error) {
    if (missing(error) || (error as NodeJS.ErrnoException).code === 'EINVAL') return null;
    throw error;
  }
}

export async function realPathOrNull(path: string): Promise<string | null> {
  try {
    return await fs.realpath(path);
  } catch (error) {
    if (missing(error)) return null;
    throw error;
  }
}

export async function readDirOrEmpty(path: string): Promise<string[]> {
  try {
    return await fs.readdir(path);
  } catch (error) {
    if (missing(error)) return [];
    throw error;
  }
}

export async function existsPath(path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch (error) {
    if (missing(error)) return false;
    throw error;
  }
}
