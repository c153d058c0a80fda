/**
 * Reading the configuration file from disk.
 *
 * A missing file is an empty configuration, not an error: vfio-hookd with no
 * file manages only the VMs that carry their own metadata. A file that exists
 * but cannot be read, is not UTF-8, or is implausibly large is InvalidConfig.
 */

import { readFile } from 'node:fs/promises';

import { InvalidConfig, q } from '../errors.js';
import { emptyConfig, parseConfig } from './parse-config.js';
import type { Config } from './types.js';

/** Where the daemon reads its configuration by default. */
export const DEFAULT_CONFIG_PATH = '/etc/vfio-hookd/vfio-hookd.toml';

/** Largest configuration file read, in bytes: 1 MiB, far beyond any real one. */
export const CONFIG_MAX_BYTES = 1024 * 1024;

/**
 * The file's text, or `null` when it does not exist.
 *
 * @throws InvalidConfig when it cannot be read, is over `CONFIG_MAX_BYTES`, or is not UTF-8.
 */
export async function readConfigText(path: string): Promise<string | null> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    const why = code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message;
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: ${why}`);
  }
  if (bytes.length > CONFIG_MAX_BYTES) {
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: ${bytes.length} bytes, more than the ${CONFIG_MAX_BYTES} accepted`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: not valid UTF-8 (TOML files are UTF-8)`);
  }
}

/**
 * Load and validate the configuration file.
 *
 * @throws InvalidConfig as `readConfigText` and `parseConfig` do; a missing file is `emptyConfig()`.
 */
export async function loadConfigFile(path: string = DEFAULT_CONFIG_PATH): Promise<Config> {
  const text = await readConfigText(path);
  return text === null ? emptyConfig() : parseConfig(text, path);
}
