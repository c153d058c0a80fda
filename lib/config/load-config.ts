/**
 * Reading the configuration file from disk.
 *
 * A missing file is an empty configuration, not an error: vfio-hookd with no
 * file manages only the VMs that carry their own metadata. A file that exists
 * but cannot be read, is not UTF-8, or is implausibly large is InvalidConfig.
 *
 * The file decides which devices leave the host and which files root
 * chowns, so it is only read when no one but root could have written it:
 * the file, once every symlink is resolved, and every folder above it must
 * be owned by root and not writable by group or others. Symlinks are
 * followed on purpose: NixOS's `/etc/vfio-hookd/vfio-hookd.toml` links to
 * `/etc/static/...`, which links into `/nix/store`; what counts is where the
 * links lead. Three details:
 *
 * - The file is opened first (following links, O_NONBLOCK so a FIFO cannot
 *   block us) and checked with fstat on that descriptor, and the text is
 *   read from the same descriptor, so a file swapped in after the check is
 *   never read. Its resolved path (realpath) must name the same inode, or
 *   the file changed while being checked.
 * - A folder with the sticky bit may be writable by others (`/tmp`, and
 *   NixOS's `/nix/store`, mode 1775 root:nixbld): there nobody but an
 *   entry's owner can rename or remove it, so a root-owned entry stays put.
 * - Root is not the only trusted owner: the daemon's own effective uid is
 *   too. A daemon running as an ordinary user (tests, a demo on the
 *   simulated host) can do nothing that user could not, so a file that user
 *   owns gives away nothing; as root, it is root alone.
 */

import { constants, type Stats } from 'node:fs';
import { lstat, open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { InvalidConfig, q } from '../errors.js';
import { emptyConfig, parseConfig } from './parse-config.js';
import type { Config } from './types.js';

/** Where the daemon reads its configuration by default. */
export const DEFAULT_CONFIG_PATH = '/etc/vfio-hookd/vfio-hookd.toml';

/** Largest configuration file read, in bytes: 1 MiB, far beyond any real one. */
export const CONFIG_MAX_BYTES = 1024 * 1024;

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
/** S_ISVTX, which Node's fs.constants does not export. */
const STICKY = 0o1000;

/** How `readConfigBytes` treats a file whose owner or mode it cannot trust. */
export interface ReadConfigOptions {
  /**
   * Given, a trust problem is handed here and the file is read all the same
   * (`vfio-hookd --check-config`, which judges the text, not where it lies).
   * Default: refused with InvalidConfig, as the daemon must.
   */
  readonly onUntrusted?: (problem: InvalidConfig) => void;
}

/**
 * The file's text, or `null` when it does not exist.
 *
 * @throws InvalidConfig when it cannot be read, is not a regular file, is
 *   owned by anyone but root (or the caller's euid) or writable by group or
 *   others, as is any folder above it; or is over `CONFIG_MAX_BYTES`, or is
 *   not UTF-8.
 */
export async function readConfigText(path: string): Promise<string | null> {
  const bytes = await readConfigBytes(path);
  if (bytes === null) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: not valid UTF-8 (TOML files are UTF-8)`);
  }
}

/**
 * The file's bytes, or `null` when it does not exist: every check of
 * `readConfigText` but the UTF-8 one.
 *
 * @throws InvalidConfig as `readConfigText` does (trust problems: see `options`).
 */
export async function readConfigBytes(path: string, options: ReadConfigOptions = {}): Promise<Buffer | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, OPEN_FLAGS);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    const why = code === 'EACCES' ? 'permission denied' : code === 'ELOOP' ? 'too many levels of symbolic links' : (error as Error).message;
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: ${why}`);
  }
  let bytes: Buffer;
  try {
    const st = await handle.stat();
    if (st.isDirectory()) throw new InvalidConfig(`Cannot read configuration ${q(path)}: it is a directory`);
    if (!st.isFile()) throw new InvalidConfig(`Cannot read configuration ${q(path)}: it is a ${describeType(st)}, not a regular file`);
    try {
      await checkTrusted(path, st);
    } catch (error) {
      if (!(error instanceof InvalidConfig) || options.onUntrusted === undefined) throw error;
      options.onUntrusted(error);
    }
    if (st.size > CONFIG_MAX_BYTES) throw tooLarge(path, st.size);
    bytes = await readAtMost(handle, CONFIG_MAX_BYTES + 1);
    // It grew since fstat (someone trusted is writing it): still no more than the limit is read.
    if (bytes.length > CONFIG_MAX_BYTES) throw tooLarge(path, bytes.length);
  } catch (error) {
    if (error instanceof InvalidConfig) throw error;
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: ${(error as Error).message}`);
  } finally {
    await handle.close();
  }
  return bytes;
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

function tooLarge(path: string, size: number): InvalidConfig {
  return new InvalidConfig(`Cannot read configuration ${q(path)}: ${size} bytes, more than the ${CONFIG_MAX_BYTES} accepted`);
}

/** Up to `limit` bytes from the start of the file. */
async function readAtMost(handle: FileHandle, limit: number): Promise<Buffer> {
  const buffer = Buffer.alloc(limit);
  let length = 0;
  while (length < limit) {
    const { bytesRead } = await handle.read(buffer, length, limit - length, length);
    if (bytesRead === 0) break;
    length += bytesRead;
  }
  return buffer.subarray(0, length);
}

// --- trust ---

/** Uids that may own the file and its folders: root, and the daemon's own euid (see the module comment). */
function trustedOwners(): ReadonlySet<number> {
  return new Set([0, process.geteuid?.() ?? 0]);
}

interface Untrusted {
  /** `the file`, `its target '...'`, `the folder '...'`. */
  readonly what: string;
  readonly path: string;
  readonly owner: number | null;
  /** The mode, when group or others may write. */
  readonly writableMode: number | null;
}

/**
 * Refuse unless the opened file (`st`, from fstat) and every folder above
 * its resolved path are owned by a trusted uid and not writable by group or
 * others (folders: unless sticky). Every offender is named at once, with one
 * command line that fixes them all.
 */
async function checkTrusted(path: string, st: Stats): Promise<void> {
  const trusted = trustedOwners();
  const real = await realpath(path);
  const now = await stat(real);
  if (now.dev !== st.dev || now.ino !== st.ino) {
    throw new InvalidConfig(`Cannot read configuration ${q(path)}: it was replaced while being checked; try again`);
  }

  const found: Untrusted[] = [];
  const judge = (what: string, at: string, s: Stats, folder: boolean): void => {
    const owner = trusted.has(s.uid) ? null : s.uid;
    const sticky = folder && (s.mode & STICKY) !== 0;
    const writableMode = (s.mode & 0o022) !== 0 && !sticky ? s.mode & 0o7777 : null;
    if (owner !== null || writableMode !== null) found.push({ what, path: at, owner, writableMode });
  };
  judge(real === resolve(path) ? 'the file' : `its target ${q(real)}`, real, st, false);
  for (let dir = dirname(real), previous = ''; dir !== previous; previous = dir, dir = dirname(dir)) {
    // lstat: realpath left no links in this chain, so a link here means it just changed.
    const s = await lstat(dir);
    if (s.isSymbolicLink()) {
      throw new InvalidConfig(`Cannot read configuration ${q(path)}: ${q(dir)} was replaced while being checked; try again`);
    }
    judge(`the folder ${q(dir)}`, dir, s, true);
  }
  if (found.length === 0) return;

  const chown = found.filter((f) => f.owner !== null).map((f) => q(f.path));
  const chmod = found.filter((f) => f.writableMode !== null).map((f) => q(f.path));
  const fix = [
    ...(chown.length > 0 ? [`chown root:root ${chown.join(' ')}`] : []),
    ...(chmod.length > 0 ? [`chmod go-w ${chmod.join(' ')}`] : []),
  ].join('; ');
  throw new InvalidConfig(
    `Cannot trust configuration ${q(path)}: ${found.map(describeUntrusted).join(', ')}; ` +
      `it decides which devices leave the host, so only root may be able to change it; run "${fix}", refusing`,
  );
}

function describeUntrusted(f: Untrusted): string {
  const faults: string[] = [];
  if (f.owner !== null) faults.push(`owned by uid ${f.owner}`);
  if (f.writableMode !== null) {
    const who =
      (f.writableMode & 0o020) !== 0 && (f.writableMode & 0o002) !== 0
        ? 'group and others'
        : (f.writableMode & 0o020) !== 0
          ? 'group'
          : 'others';
    faults.push(`writable by ${who} (mode ${f.writableMode.toString(8).padStart(4, '0')})`);
  }
  return `${f.what} is ${faults.join(' and ')}`;
}

function describeType(st: Stats): string {
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'file of unknown type';
}
