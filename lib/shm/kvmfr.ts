/**
 * Looking Glass's kvmfr device (`/dev/kvmfr0`), which Looking Glass now
 * recommends over a `/dev/shm` file (its doc/ivshmem_kvmfr.rst: the module
 * is loaded with `static_size_mb=32[,64...]`, one device per value, and a
 * udev rule sets owner, group and mode). Here, when the device exists, its
 * size is checked against the configured Looking Glass size and its owner,
 * group and mode are set as for an shm file, on the open descriptor, after
 * the same checks; the record keeps what they were, undo puts that back.
 *
 * The size: the module (module/kvmfr.c) answers it only through the
 * KVMFR_DMABUF_GETSIZE ioctl, which Node cannot make; it makes no sysfs
 * attribute for it, and declares `static_size_mb` with permission 0000, so
 * `/sys/module/kvmfr/parameters/static_size_mb` does not exist. What the
 * module was loaded with is read where modprobe takes it from instead: the
 * kernel command line (`kvmfr.static_size_mb=`, `<proc>/cmdline`, which
 * modprobe applies after the files) and then the `options kvmfr` lines of
 * modprobe.d. A file edited after the module was loaded is not what the
 * module has: the check then says the wrong thing, and says where it read.
 * When neither names a size, the size is not checked and a warning says so.
 * The PCI (VM-to-VM) mode's devices take their size from the ivshmem BAR
 * and are not handled.
 *
 * The device node is udev's, in /dev, not a file any user can make: still it
 * is lstat'ed (no symlink), opened O_NOFOLLOW, fstat'ed (the same inode, a
 * character device), and its device number must be the one sysfs gives for
 * `<sysfs>/class/kvmfr/kvmfrN/dev`, so nothing but kvmfr's node is changed.
 */
import { constants, type Stats } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

import * as v from 'valibot';

import { DamagedState, InvalidArgs, InvalidConfig, NoSuchDevice, UnsafePath, q } from '../errors.js';
import { readFileOrNull, readDirOrEmpty } from '../pci/fs-reads.js';
import { under, type HostRoots } from '../roots.js';
import { checkId, formatMode } from './shm-file-spec.js';
import { shmModeProblem } from './shm-mode.js';
import { formatSize, MiB } from './size.js';

/** Where modprobe reads its options (modprobe.d(5)), earlier ones first. Not under a root: they are configuration, not kernel state. */
/** The record kind (lib/host/undo.ts finds the undo by it). */
export const KVMFR_KIND = 'kvmfr';

export const MODPROBE_DIRS = ['/etc/modprobe.d', '/run/modprobe.d', '/usr/local/lib/modprobe.d', '/usr/lib/modprobe.d', '/lib/modprobe.d'];

/** Undo writes only the record's values, onto the node the record names: whoever owns it now (the VM's user, by our apply). */
const ANY_OWNER: ReadonlySet<number> = { has: () => true } as unknown as ReadonlySet<number>;

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

export interface KvmfrSettings {
  /** The device's name under the dev root. Default `kvmfr0`. */
  readonly device?: string;
  /** The configured Looking Glass size in bytes (from `resolution` or `size`). */
  readonly size: number;
  readonly uid: number;
  readonly gid: number;
  /** Permission bits, e.g. `0o660`. */
  readonly mode: number;
}

export interface KvmfrOptions {
  /** Where to read `options kvmfr` lines. Default MODPROBE_DIRS. */
  readonly modprobeDirs?: readonly string[];
  /** Uids that may own the node we change. Default `[0, uid]`: udev makes it root's, a former prepare made it the user's. */
  readonly trustedOwners?: readonly number[];
}

/**
 * The record and change below have the shape of lib/host/host-change.ts's
 * HostChangeRecord and HostChange (structurally: lib/host imports lib/shm,
 * so lib/shm does not import it back).
 */
export interface KvmfrRecord {
  readonly kind: 'kvmfr';
  readonly [field: string]: unknown;
  readonly path: string;
  /** `major:minor`: undo changes this node only. */
  readonly rdev: string;
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

const ID = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xfffffffe));
/** What undo trusts of a record read back from state.json: a kvmfr node's name (undo opens it under the dev root), ids, bits. */
const RECORD_SCHEMA = v.object({
  kind: v.literal(KVMFR_KIND),
  path: v.pipe(v.string(), v.regex(/(^|\/)kvmfr\d$/)),
  rdev: v.pipe(v.string(), v.regex(/^\d+:\d+$/)),
  uid: ID,
  gid: ID,
  mode: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0o7777)),
});

export interface KvmfrChange {
  readonly record: KvmfrRecord;
  readonly describe: string;
  readonly phase: 'before-detach' | 'after-detach';
  apply(): Promise<void>;
  /** The size the module was loaded with, as far as it could be found; null when it was not. */
  readonly moduleSize: { readonly bytes: number; readonly from: string } | null;
  /** Problems that did not stop it, each ending in ', ignoring'. */
  readonly warnings: readonly string[];
}

function deviceName(settings: KvmfrSettings): string {
  const name = settings.device ?? 'kvmfr0';
  if (!/^kvmfr\d$/.test(name)) throw new InvalidConfig(`Invalid kvmfr device ${q(name)}: expected 'kvmfr0' to 'kvmfr9', refusing`);
  return name;
}

/** Whether `<dev>/kvmfrN` is there: the lifecycle then uses it instead of an shm file. */
export async function kvmfrPresent(roots: Pick<HostRoots, 'dev'>, device = 'kvmfr0'): Promise<boolean> {
  try {
    await fsp.lstat(under(roots.dev, device));
    return true;
  } catch {
    return false;
  }
}

/**
 * `static_size_mb` values from a kernel command line or a modprobe.d file, in MiB; null when not named.
 * `kvmfr.static_size_mb=32,64` on the command line, `options kvmfr static_size_mb=32,64` in a file.
 */
export function parseStaticSizes(text: string, from: 'cmdline' | 'modprobe'): number[] | null {
  let found: number[] | null = null;
  const take = (value: string): void => {
    const sizes = value.split(',').map((v) => Number(v.trim()));
    if (sizes.every((s) => Number.isSafeInteger(s) && s > 0)) found = sizes;
  };
  if (from === 'cmdline') {
    for (const word of text.trim().split(/\s+/)) {
      const m = /^kvmfr\.static_size_mb=(\S+)$/.exec(word);
      if (m) take(m[1]!);
    }
    return found;
  }
  for (const line of text.split('\n')) {
    const words = line.replace(/#.*/, '').trim().split(/\s+/);
    if (words[0] !== 'options' || (words[1] !== 'kvmfr' && words[1] !== 'kvmfr.ko')) continue;
    for (const w of words.slice(2)) {
      const m = /^static_size_mb=(\S+)$/.exec(w);
      if (m) take(m[1]!);
    }
  }
  return found;
}

/** The size of `kvmfrN` as the module was loaded, and where that was read; null when nothing says. */
export async function kvmfrModuleSize(
  roots: Pick<HostRoots, 'proc'>,
  index: number,
  modprobeDirs: readonly string[] = MODPROBE_DIRS,
): Promise<{ bytes: number; from: string } | null> {
  const cmdlinePath = under(roots.proc, 'cmdline');
  const cmdline = parseStaticSizes((await readFileOrNull(cmdlinePath)) ?? '', 'cmdline');
  if (cmdline !== null) return cmdline[index] === undefined ? null : { bytes: cmdline[index] * MiB, from: cmdlinePath };
  // modprobe.d: files sorted by name across the folders, a name in an earlier folder hiding the same name later.
  const byName = new Map<string, string>();
  for (const dir of modprobeDirs) {
    for (const name of (await readDirOrEmpty(dir)).filter((n) => n.endsWith('.conf')))
      if (!byName.has(name)) byName.set(name, path.join(dir, name));
  }
  let last: { sizes: number[]; from: string } | null = null;
  for (const name of [...byName.keys()].sort()) {
    const file = byName.get(name)!;
    const sizes = parseStaticSizes((await readFileOrNull(file)) ?? '', 'modprobe');
    if (sizes !== null) last = { sizes, from: file };
  }
  if (last === null || last.sizes[index] === undefined) return null;
  return { bytes: last.sizes[index] * MiB, from: last.from };
}

function rdevOf(st: Stats): string {
  // Linux's dev_t: major in bits 8-19 and 32-43, minor in bits 0-7 and 20-31 (glibc's gnu_dev_major/minor).
  const d = BigInt(st.rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Open the node and check it is kvmfr's character device, owned by a trusted uid. */
async function openNode(
  roots: Pick<HostRoots, 'dev' | 'sysfs'>,
  name: string,
  trusted: ReadonlySet<number>,
  doing: string,
): Promise<{ handle: fsp.FileHandle; st: Stats; rdev: string }> {
  const file = under(roots.dev, name);
  const sysDev = (await readFileOrNull(under(roots.sysfs, 'class', 'kvmfr', name, 'dev')))?.trim() ?? null;
  if (sysDev === null) {
    throw new NoSuchDevice(
      `Cannot ${doing} ${q(file)}: the kvmfr module has no ${q(name)} (${q(under(roots.sysfs, 'class', 'kvmfr', name))} is missing); load it with static_size_mb, refusing`,
    );
  }
  const seen = await fsp.lstat(file);
  if (!seen.isCharacterDevice()) {
    throw new UnsafePath(
      `Cannot ${doing} ${q(file)}: it is not a character device (a symlink or a file is in its place); remove it and reload kvmfr, refusing`,
    );
  }
  const handle = await fsp.open(file, OPEN_FLAGS);
  try {
    const st = await handle.stat();
    const rdev = rdevOf(st);
    if (st.dev !== seen.dev || st.ino !== seen.ino)
      throw new UnsafePath(`Cannot ${doing} ${q(file)}: it was replaced while being checked; try again, refusing`);
    if (rdev !== sysDev) {
      throw new UnsafePath(
        `Cannot ${doing} ${q(file)}: it is device ${rdev}, but kvmfr's ${q(name)} is ${sysDev}; remove the stale node and let udev make it again, refusing`,
      );
    }
    if (!trusted.has(st.uid)) {
      throw new UnsafePath(
        `Cannot ${doing} ${q(file)}: it is owned by uid ${st.uid}, not root or the VM's user; check who changed it, refusing`,
      );
    }
    return { handle, st, rdev };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * Plan the kvmfr device for a VM: check settings, the node and its size,
 * and record its owner, group and mode. Nothing is changed.
 *
 * @throws InvalidArgs for a bad uid, gid or mode.
 * @throws InvalidConfig when the module's size differs from the configured one.
 * @throws NoSuchDevice / UnsafePath when the node is not kvmfr's.
 */
export async function planKvmfr(
  settings: KvmfrSettings,
  context: { readonly roots: HostRoots },
  options: KvmfrOptions = {},
): Promise<KvmfrChange> {
  const name = deviceName(settings);
  checkId('uid', settings.uid, name);
  checkId('gid', settings.gid, name);
  if (!Number.isInteger(settings.mode) || settings.mode < 0 || settings.mode > 0o777) {
    throw new InvalidArgs(`Invalid mode ${q(settings.mode)} for ${q(name)}: expected permission bits such as 0o660`);
  }
  const problem = shmModeProblem(settings.mode);
  if (problem !== null) throw new InvalidConfig(`Invalid mode ${q(formatMode(settings.mode))} for ${q(name)}: ${problem}, refusing`);
  const trusted = new Set(options.trustedOwners ?? [0, settings.uid]);

  const { handle, st, rdev } = await openNode(context.roots, name, trusted, 'use');
  await handle.close();
  const file = under(context.roots.dev, name);
  const moduleSize = await kvmfrModuleSize(context.roots, Number(name.slice(5)), options.modprobeDirs);
  const warnings: string[] = [];
  if (moduleSize === null) {
    warnings.push(
      `The size of ${q(file)} is not known (no kvmfr.static_size_mb on the kernel command line, no 'options kvmfr static_size_mb=' in modprobe.d), so it is not checked against ${formatSize(settings.size)}, ignoring`,
    );
  } else if (moduleSize.bytes !== settings.size) {
    throw new InvalidConfig(
      `Cannot use ${q(file)}: kvmfr was loaded with ${formatSize(moduleSize.bytes)} for it (${q(moduleSize.from)}), the configured Looking Glass size is ${formatSize(settings.size)}; ` +
        `set static_size_mb=${settings.size / MiB} and reload kvmfr, or change the size, refusing`,
    );
  }
  const record: KvmfrRecord = { kind: 'kvmfr', path: file, rdev, uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
  return {
    record,
    moduleSize,
    warnings,
    describe: `set ${file} to ${settings.uid}:${settings.gid} ${formatMode(settings.mode)} (was ${record.uid}:${record.gid} ${formatMode(record.mode)})`,
    phase: 'before-detach',
    apply: () => setNode(context.roots, name, record.rdev, settings, trusted),
  };
}

async function setNode(
  roots: HostRoots,
  name: string,
  rdev: string,
  want: { uid: number; gid: number; mode: number },
  trusted: ReadonlySet<number>,
): Promise<void> {
  const { handle, rdev: now } = await openNode(roots, name, trusted, 'change');
  try {
    if (now !== rdev)
      throw new UnsafePath(
        `Cannot change ${q(under(roots.dev, name))}: it is device ${now} now, not ${rdev} as planned (kvmfr was reloaded); try again, refusing`,
      );
    await handle.chown(want.uid, want.gid);
    // After chown: it clears set-id bits, and fchmod ignores the umask.
    await handle.chmod(want.mode);
    const st = await handle.stat();
    if (st.uid !== want.uid || st.gid !== want.gid || (st.mode & 0o7777) !== want.mode) {
      throw new UnsafePath(
        `Cannot change ${q(under(roots.dev, name))}: it reads back ${st.uid}:${st.gid} ${formatMode(st.mode & 0o7777)}, not ${want.uid}:${want.gid} ${formatMode(want.mode)}, refusing`,
      );
    }
  } finally {
    await handle.close();
  }
}

/**
 * Put owner, group and mode back as the record found them. Idempotent. A
 * node that is gone, or is another device now (kvmfr reloaded: udev made it
 * afresh with its own rule), has nothing of ours left and is not touched.
 */
export async function undoKvmfr(
  record: { readonly kind: string; readonly [field: string]: unknown },
  context: { readonly roots: HostRoots },
): Promise<void> {
  const parsed = v.safeParse(RECORD_SCHEMA, record);
  if (!parsed.success) {
    throw new DamagedState(
      `The record of the kvmfr device's owner and mode is not valid, so it cannot be undone; set them by hand (chown, chmod /dev/kvmfr0)`,
    );
  }
  const r = parsed.output;
  const name = path.basename(r.path);
  let opened;
  try {
    opened = await openNode(context.roots, name, ANY_OWNER, 'restore');
  } catch (error) {
    if (error instanceof NoSuchDevice || (error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  await opened.handle.close();
  if (opened.rdev !== r.rdev) return;
  await setNode(context.roots, name, r.rdev, r, ANY_OWNER);
}
