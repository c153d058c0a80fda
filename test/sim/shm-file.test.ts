/**
 * ensureShmFile / removeShmFile / inspectShmFile against a real directory
 * standing in for /dev/shm. These run as root, as the daemon does, so chown
 * and the symlink/hard-link traps are real: every refusal test also asserts
 * that the thing the trap points at is untouched afterwards.
 */

import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { InvalidArgs, InvalidConfig, UnsafePath } from '../../lib/errors.js';
import { ensureShmFile, inspectShmFile, removeShmFile, type ShmFileSpec } from '../../lib/shm/index.js';
import { tempDir as helperTempDir } from '../helpers/temp-dir.js';

/**
 * Decided once, before the tests: a test that cannot provoke its failure on
 * this file system is skipped, with the reason in its title, never passed.
 */
const HUGE_REFUSED = await (async () => {
  const dir = await fsp.mkdtemp(join(os.tmpdir(), 'vfio-hookd-probe-'));
  try {
    return await refusesHugeFiles(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
})();
const onHugeRefusal = HUGE_REFUSED ? test : test.skip;
const SKIP_REASON = HUGE_REFUSED
  ? ''
  : ` (skipped: ${os.tmpdir()} takes a 2^53-1 byte file as sparse, so the failure cannot be provoked here)`;

const MiB = 1024 * 1024;
const USER = 1000;
const GROUP = 1001;
const QEMU = 64055;
const STRANGER = 1234;

if (process.getuid?.() !== 0) {
  throw new Error('test/sim/shm-file.test.ts must run as root: it checks chown and owner-based refusals');
}

/**
 * Account lookups from a passwd of our own, so that refusals name users the
 * same way on every machine (64055 is Debian's libvirt-qemu, 301 NixOS's
 * qemu-libvirtd; STRANGER has no entry).
 */
const ETC = await fsp.mkdtemp(join(os.tmpdir(), 'vfio-hookd-shm-etc-'));
await fsp.writeFile(
  join(ETC, 'passwd'),
  `root:x:0:0::/root:/bin/sh\nlibvirt-qemu:x:${QEMU}:${QEMU}::/var/lib/libvirt:/usr/sbin/nologin\nqemu-libvirtd:x:301:301::/var/empty:/run/current-system/sw/bin/nologin\n`,
);
const ACCOUNTS = { getent: null, etcRoot: ETC };

/**
 * Whether this process may mount a tmpfs (root, and not in a container that
 * forbids it); the reason when not, for the skipped tests' titles.
 */
async function tmpfsUnavailable(): Promise<string | null> {
  const dir = await fsp.mkdtemp(join(os.tmpdir(), 'vfio-hookd-shm-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' });
    execFileSync('umount', [dir], { stdio: 'pipe' });
    return null;
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    return `cannot mount a tmpfs here: ${stderr || (error as Error).message}`;
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
const NO_TMPFS = await tmpfsUnavailable();
// Hooks and tests are declared only after the last top-level await (ava wants them in one go).
test.after.always(() => fsp.rm(ETC, { recursive: true, force: true }));
const tmpfsTest = NO_TMPFS === null ? test : (title: string, _fn: unknown) => test.skip(`${title} (skipped: ${NO_TMPFS})`, () => {});

/** A fresh directory under the system temp dir, removed after the test. */
function tempDir(t: ExecutionContext, label: string): Promise<string> {
  return helperTempDir(t, `vfio-hookd-shm-${label}-`);
}

function lgSpec(root: string, overrides: Partial<ShmFileSpec> = {}): ShmFileSpec {
  return { root, name: 'looking-glass', size: 32 * MiB, uid: USER, gid: GROUP, mode: 0o660, ...overrides };
}

/** Owner, group, permission bits, size, link count and inode of a path, not following links. */
async function snapshot(path: string) {
  const st = await fsp.lstat(path);
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, size: st.size, nlink: st.nlink, ino: st.ino };
}

/** A file with known content, owner and mode. */
async function makeFile(path: string, content: string | Buffer, uid: number, gid: number, mode: number, size?: number) {
  await fsp.writeFile(path, content);
  if (size !== undefined) await fsp.truncate(path, size);
  await fsp.chown(path, uid, gid);
  await fsp.chmod(path, mode);
}

// --- ensureShmFile: the normal paths ---

test('creates a missing file with size, owner, group and mode', async (t) => {
  const root = await tempDir(t, 'root');
  const result = await ensureShmFile(lgSpec(root));

  const path = join(root, 'looking-glass');
  t.deepEqual(result, {
    path,
    action: 'created',
    changes: [],
    warnings: [],
    after: { uid: USER, gid: GROUP, mode: 0o660, size: 32 * MiB },
  });
  const st = await fsp.lstat(path);
  t.true(st.isFile());
  t.is(st.size, 32 * MiB);
  t.true(st.blocks * 512 >= 32 * MiB, 'its memory is reserved, not a sparse file');
  t.is(st.uid, USER);
  t.is(st.gid, GROUP);
  t.is(st.mode & 0o7777, 0o660);
  t.is(st.nlink, 1);
  t.deepEqual(await fsp.readdir(root), ['looking-glass']);
});

test.serial('sets the exact mode on a new file whatever the umask', async (t) => {
  const root = await tempDir(t, 'root');
  const old = process.umask(0o077);
  t.teardown(() => void process.umask(old));
  await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB, mode: 0o664 }));
  t.is((await fsp.stat(join(root, 'scream'))).mode & 0o7777, 0o664);
});

test('repairs owner, mode and size of an existing file and reports each change', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, 'frame header', USER, USER, 0o644, 2 * MiB);
  const { ino } = await snapshot(path);

  const result = await ensureShmFile(lgSpec(root));

  t.deepEqual(result, {
    path,
    action: 'repaired',
    changes: [`owner ${USER}:${USER} -> ${USER}:${GROUP}`, 'mode 0644 -> 0660', 'size 2M -> 32M', 'reserved 32M'],
    warnings: [],
    before: { uid: USER, gid: USER, mode: 0o644, size: 2 * MiB },
    after: { uid: USER, gid: GROUP, mode: 0o660, size: 32 * MiB },
  });
  t.deepEqual(await snapshot(path), { uid: USER, gid: GROUP, mode: 0o660, size: 32 * MiB, nlink: 1, ino });
  t.true((await fsp.stat(path)).blocks * 512 >= 32 * MiB);
  // Growing keeps what was there.
  const head = Buffer.alloc(12);
  const fh = await fsp.open(path, 'r');
  await fh.read(head, 0, 12, 0);
  await fh.close();
  t.is(head.toString(), 'frame header');
});

test('adopts and repairs a file QEMU created when the qemu uid is trusted', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, '', QEMU, QEMU, 0o644, 32 * MiB);
  const { ino } = await snapshot(path);

  const result = await ensureShmFile(lgSpec(root), { trustedOwners: [0, USER, QEMU] });

  t.is(result.action, 'repaired');
  // QEMU makes its file with ftruncate: sparse, so its memory is reserved too.
  t.deepEqual(result.changes, [`owner ${QEMU}:${QEMU} -> ${USER}:${GROUP}`, 'mode 0644 -> 0660', 'reserved 32M']);
  t.deepEqual(await snapshot(path), { uid: USER, gid: GROUP, mode: 0o660, size: 32 * MiB, nlink: 1, ino });
});

test('repairs a shrunk file down to size as well as up', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'scream');
  await makeFile(path, '', USER, GROUP, 0o660, 64 * MiB);
  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }));
  t.deepEqual(result.changes, ['size 64M -> 2M', 'reserved 2M']);
  t.is((await fsp.stat(path)).size, 2 * MiB);
});

test('leaves a correct file unchanged and its contents intact', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'scream');
  const content = Buffer.alloc(2 * MiB);
  for (let i = 0; i < content.length; i += 4096) content.write(`page ${i / 4096}`, i);
  await makeFile(path, content, USER, GROUP, 0o660);
  const before = await fsp.stat(path);

  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }));

  const state = { uid: USER, gid: GROUP, mode: 0o660, size: 2 * MiB };
  t.deepEqual(result, { path, action: 'unchanged', changes: [], warnings: [], before: state, after: state });
  t.true((await fsp.readFile(path)).equals(content));
  const after = await fsp.stat(path);
  t.is(after.ino, before.ino);
  t.is(after.mtimeMs, before.mtimeMs);
});

// --- ensureShmFile: traps ---

test('refuses a symlink pointing at a root-owned file and leaves the target untouched', async (t) => {
  const root = await tempDir(t, 'root');
  const outside = await tempDir(t, 'outside');
  const target = join(outside, 'shadow');
  await makeFile(target, 'root:secret\n', 0, 0, 0o600);
  const targetBefore = await snapshot(target);
  const link = join(root, 'looking-glass');
  await fsp.symlink(target, link);

  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory file '${link}': it is a symbolic link to '${target}'; remove the link, refusing`,
  });

  t.deepEqual(await snapshot(target), targetBefore);
  t.is(await fsp.readFile(target, 'utf8'), 'root:secret\n');
  t.true((await fsp.lstat(link)).isSymbolicLink());
  t.is(await fsp.readlink(link), target);
  t.deepEqual(await fsp.readdir(root), ['looking-glass']);
});

test('refuses a dangling symlink without creating its target', async (t) => {
  const root = await tempDir(t, 'root');
  const outside = await tempDir(t, 'outside');
  const target = join(outside, 'planted');
  const link = join(root, 'looking-glass');
  await fsp.symlink(target, link);

  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory file '${link}': it is a symbolic link to '${target}'; remove the link, refusing`,
  });

  await t.throwsAsync(fsp.lstat(target), { code: 'ENOENT' });
  t.deepEqual(await fsp.readdir(outside), []);
  t.is(await fsp.readlink(link), target);
});

test('refuses a hard link (nlink 2) and leaves both names unchanged', async (t) => {
  const root = await tempDir(t, 'root');
  const outside = await tempDir(t, 'outside');
  const original = join(outside, 'important');
  await makeFile(original, 'keep me\n', 0, 0, 0o600);
  const path = join(root, 'looking-glass');
  await fsp.link(original, path);
  const before = await snapshot(original);
  t.is(before.nlink, 2);

  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory file '${path}': it has 2 hard links, expected 1; remove it, refusing`,
  });

  t.deepEqual(await snapshot(original), before);
  t.deepEqual(await snapshot(path), before);
  t.is(await fsp.readFile(original, 'utf8'), 'keep me\n');
});

test('refuses a FIFO without blocking', async (t) => {
  t.timeout(10_000);
  const root = await tempDir(t, 'root');
  const path = join(root, 'scream');
  execFileSync('mkfifo', ['-m', '0666', path]);

  await t.throwsAsync(ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB })), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory file '${path}': it is a FIFO, not a regular file; remove it, refusing`,
  });

  const st = await fsp.lstat(path);
  t.true(st.isFIFO());
  t.is(st.mode & 0o7777, 0o666);
  t.is(st.uid, 0);
});

test('refuses a directory', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await fsp.mkdir(path, { mode: 0o755 });

  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory file '${path}': it is a directory, not a regular file; remove it, refusing`,
  });

  t.true((await fsp.lstat(path)).isDirectory());
  t.deepEqual(await fsp.readdir(path), []);
  t.is((await fsp.lstat(path)).uid, 0);
});

test('refuses a file owned by an untrusted uid and leaves it as it was', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, 'theirs', STRANGER, STRANGER, 0o644);
  const before = await snapshot(path);

  await t.throwsAsync(ensureShmFile(lgSpec(root), { accounts: ACCOUNTS }), {
    instanceOf: UnsafePath,
    message:
      `Cannot use shared memory file '${path}': it is owned by uid ${STRANGER}, which is not trusted (0, ${USER}); ` +
      `if QEMU runs as uid ${STRANGER}, set qemu-user = "${STRANGER}" in [daemon] of the configuration, else remove the file, refusing`,
  });

  t.deepEqual(await snapshot(path), before);
  t.is(await fsp.readFile(path, 'utf8'), 'theirs');
});

test('refuses a file of the qemu user unless that uid is trusted', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, '', QEMU, QEMU, 0o644, 32 * MiB);
  const before = await snapshot(path);

  await t.throwsAsync(ensureShmFile(lgSpec(root), { trustedOwners: [USER], accounts: ACCOUNTS }), {
    instanceOf: UnsafePath,
    message:
      `Cannot use shared memory file '${path}': it is owned by uid ${QEMU} ('libvirt-qemu'), which is not trusted (${USER}); ` +
      `if QEMU runs as 'libvirt-qemu', set qemu-user = "libvirt-qemu" in [daemon] of the configuration, else remove the file, refusing`,
  });
  t.deepEqual(await snapshot(path), before);
});

test("names NixOS's qemu-libvirtd when it owns the file", async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'scream');
  await makeFile(path, '', 301, 301, 0o644, 2 * MiB);
  const before = await snapshot(path);
  await t.throwsAsync(ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }), { accounts: ACCOUNTS }), {
    instanceOf: UnsafePath,
    message:
      `Cannot use shared memory file '${path}': it is owned by uid 301 ('qemu-libvirtd'), which is not trusted (0, ${USER}); ` +
      `if QEMU runs as 'qemu-libvirtd', set qemu-user = "qemu-libvirtd" in [daemon] of the configuration, else remove the file, refusing`,
  });
  t.deepEqual(await snapshot(path), before);
});

test('refuses when the root is a symlink', async (t) => {
  const top = await tempDir(t, 'top');
  const real = join(top, 'real');
  await fsp.mkdir(real);
  const root = join(top, 'shm');
  await fsp.symlink(real, root);

  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory root '${root}': it is a symbolic link to '${real}'; use the real directory, refusing`,
  });
  t.deepEqual(await fsp.readdir(real), []);
});

test('refuses when the root is missing or not a directory', async (t) => {
  const top = await tempDir(t, 'top');
  const missing = join(top, 'missing');
  await t.throwsAsync(ensureShmFile(lgSpec(missing)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory root '${missing}': it does not exist; mount a tmpfs there or fix the root, refusing`,
  });
  const file = join(top, 'file');
  await fsp.writeFile(file, '');
  await t.throwsAsync(ensureShmFile(lgSpec(file)), {
    instanceOf: UnsafePath,
    message: `Cannot use shared memory root '${file}': it is a regular file, not a directory; use the real directory, refusing`,
  });
  t.deepEqual((await fsp.readdir(top)).sort(), ['file']);
});

test('refuses invalid names before touching anything', async (t) => {
  const top = await tempDir(t, 'top');
  const root = join(top, 'shm');
  await fsp.mkdir(root);
  const fix = "use a plain file name such as 'looking-glass'";
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['../escape', `Invalid shared memory name '../escape': must not contain '/'; ${fix}`],
    ['..', `Invalid shared memory name '..': names a directory, not a file; ${fix}`],
    ['', `Invalid shared memory name '': must not be empty; ${fix}`],
    ['sub/lg', `Invalid shared memory name 'sub/lg': must not contain '/'; ${fix}`],
    ['lg\n', `Invalid shared memory name 'lg\\x0a': must not contain control characters; ${fix}`],
  ];
  for (const [name, message] of cases) {
    await t.throwsAsync(ensureShmFile(lgSpec(root, { name })), { instanceOf: InvalidArgs, message }, name);
    // The name is checked before the root: a missing root still reports the name.
    await t.throwsAsync(ensureShmFile(lgSpec(join(top, 'missing'), { name })), { instanceOf: InvalidArgs, message });
  }
  t.deepEqual(await fsp.readdir(root), []);
  t.deepEqual(await fsp.readdir(top), ['shm']);
});

test('refuses invalid sizes, ids, modes, roots and options before touching anything', async (t) => {
  const root = await tempDir(t, 'root');
  const cases: ReadonlyArray<readonly [Partial<ShmFileSpec>, string]> = [
    [{ size: 0 }, "Invalid size '0' for shared memory file 'looking-glass': must be a whole number of bytes greater than zero"],
    [{ size: 1.5 }, "Invalid size '1.5' for shared memory file 'looking-glass': must be a whole number of bytes greater than zero"],
    [{ size: -1 }, "Invalid size '-1' for shared memory file 'looking-glass': must be a whole number of bytes greater than zero"],
    [{ uid: -1 }, "Invalid uid '-1' for shared memory file 'looking-glass': must be a whole number from 0 to 4294967294"],
    [{ uid: 4294967295 }, "Invalid uid '4294967295' for shared memory file 'looking-glass': must be a whole number from 0 to 4294967294"],
    [{ gid: 1.5 }, "Invalid gid '1.5' for shared memory file 'looking-glass': must be a whole number from 0 to 4294967294"],
    [{ mode: 0o4660 }, "Invalid mode '4660' for shared memory file 'looking-glass': must be permission bits from 0000 to 0777, e.g. 0660"],
    [{ mode: -1 }, "Invalid mode '-1' for shared memory file 'looking-glass': must be permission bits from 0000 to 0777, e.g. 0660"],
    [
      { mode: 0o666 },
      "Invalid mode '0666' for shared memory file 'looking-glass': other users could write to it, and so into the guest's screen or sound; use '0660'",
    ],
    [
      { mode: 0o760 },
      "Invalid mode '0760' for shared memory file 'looking-glass': execute bits mean nothing on a shared memory file and only widen what it allows; use '0660'",
    ],
    [{ root: 'relative/shm' }, "Invalid shared memory root 'relative/shm': must be an absolute path such as '/dev/shm'"],
  ];
  for (const [overrides, message] of cases) {
    await t.throwsAsync(ensureShmFile(lgSpec(root, overrides)), { instanceOf: InvalidArgs, message }, message);
  }
  await t.throwsAsync(ensureShmFile(lgSpec(root), { trustedOwners: [-5] }), {
    instanceOf: InvalidArgs,
    message: "Invalid uid '-5' for shared memory file 'looking-glass': must be a whole number from 0 to 4294967294",
  });
  t.deepEqual(await fsp.readdir(root), []);
});

test('allowResize=false on a wrong-size file throws and changes nothing', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, 'mapped by the guest', USER, USER, 0o644, 64 * MiB);
  const before = await snapshot(path);

  await t.throwsAsync(ensureShmFile(lgSpec(root), { allowResize: false }), {
    instanceOf: InvalidConfig,
    message:
      `Cannot resize shared memory file '${path}': it is 64M, the configuration says 32M, ` +
      "and shrinking a file the VM has mapped would crash the guest; make the configured size match the domain's <shmem> size, refusing",
  });

  // Not even owner and mode, which were wrong too.
  t.deepEqual(await snapshot(path), before);
  const fh = await fsp.open(path, 'r');
  const head = Buffer.alloc(19);
  await fh.read(head, 0, 19, 0);
  await fh.close();
  t.is(head.toString(), 'mapped by the guest');
});

test('allowResize=false still repairs owner and mode of a file of the right size', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, '', QEMU, QEMU, 0o644, 32 * MiB);
  const result = await ensureShmFile(lgSpec(root), { allowResize: false, trustedOwners: [0, USER, QEMU] });
  t.deepEqual(result.changes, [`owner ${QEMU}:${QEMU} -> ${USER}:${GROUP}`, 'mode 0644 -> 0660']);
  t.is((await fsp.stat(path)).size, 32 * MiB);
  // QEMU may have it mapped: its space is not written, only warned about.
  t.deepEqual(result.warnings, [
    `Shared memory file '${path}' is sparse (0 B of 32 MiB backed by memory) and may be mapped already, ` +
      `so its space is not reserved now; if '${root}' fills up the guest dies of SIGBUS, ignoring`,
  ]);
  t.is((await fsp.stat(path)).blocks, 0);
});

test('allowResize=false still creates a missing file', async (t) => {
  const root = await tempDir(t, 'root');
  const result = await ensureShmFile(lgSpec(root), { allowResize: false });
  t.is(result.action, 'created');
  t.is((await fsp.stat(join(root, 'looking-glass'))).size, 32 * MiB);
});

/*
 * To make a step after the open fail we ask for 2^53-1 bytes, which ext4
 * refuses with EFBIG. File systems that take it as a sparse size (tmpfs,
 * xfs) cannot provoke the failure this way; the probe says so in the log.
 */
async function refusesHugeFiles(dir: string): Promise<boolean> {
  const probe = join(dir, '.probe');
  const fh = await fsp.open(probe, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await fh.truncate(Number.MAX_SAFE_INTEGER);
    return false;
  } catch {
    return true;
  } finally {
    await fh.close();
    await fsp.unlink(probe);
  }
}

onHugeRefusal(`removes a file it created when setting it up fails${SKIP_REASON}`, async (t) => {
  const root = await tempDir(t, 'root');
  await t.throwsAsync(ensureShmFile(lgSpec(root, { size: Number.MAX_SAFE_INTEGER })), { code: 'EFBIG' });
  t.deepEqual(await fsp.readdir(root), []);
});

onHugeRefusal(`puts owner and mode back when resizing an existing file fails${SKIP_REASON}`, async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, 'old', USER, USER, 0o644, 2 * MiB);
  const before = await snapshot(path);
  await t.throwsAsync(ensureShmFile(lgSpec(root, { size: Number.MAX_SAFE_INTEGER })), { code: 'EFBIG' });
  t.deepEqual(await snapshot(path), before);
});

// --- the memory is reserved: a real small tmpfs ---

/** A tmpfs of `size` (mount's syntax: '1m', '1536k') on a fresh directory, unmounted and removed after the test. */
async function smallTmpfs(t: ExecutionContext, size: string): Promise<string> {
  const dir = await fsp.mkdtemp(join(os.tmpdir(), 'vfio-hookd-shm-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=1777`, 'tmpfs', dir]);
  t.teardown(async () => {
    execFileSync('umount', [dir]);
    await fsp.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

const fixFor = (root: string): string => `free space there or make it larger (mount -o remount,size=... '${root}'), refusing`;

tmpfsTest('refuses to create a 32M file on a 1M tmpfs, with the free space, and leaves nothing', async (t) => {
  const root = await smallTmpfs(t, '1m');
  await t.throwsAsync(ensureShmFile(lgSpec(root)), {
    instanceOf: InvalidConfig,
    message: `Cannot reserve shared memory file '${join(root, 'looking-glass')}': needs 32 MiB, '${root}' has 1.0 MiB free; ${fixFor(root)}`,
  });
  t.deepEqual(await fsp.readdir(root), []);
});

tmpfsTest('refuses to create a file on a full tmpfs', async (t) => {
  const root = await smallTmpfs(t, '4m');
  await fsp.writeFile(join(root, 'other'), Buffer.alloc(4 * MiB, 1));
  await t.throwsAsync(ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB })), {
    instanceOf: InvalidConfig,
    message: `Cannot reserve shared memory file '${join(root, 'scream')}': needs 2 MiB, '${root}' has 0 B free; ${fixFor(root)}`,
  });
  t.deepEqual(await fsp.readdir(root), ['other']);
});

tmpfsTest('a file that fits takes its memory from the tmpfs at once', async (t) => {
  const root = await smallTmpfs(t, '4m');
  const freeBefore = (await fsp.statfs(root)).bfree;
  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }));
  t.is(result.action, 'created');
  const st = await fsp.stat(join(root, 'scream'));
  t.is(st.blocks * 512, 2 * MiB);
  const fs = await fsp.statfs(root);
  t.is((freeBefore - fs.bfree) * fs.bsize, 2 * MiB);
});

tmpfsTest('fills a sparse file of the right size at prepare, and refuses one that cannot fit, putting it back', async (t) => {
  const root = await smallTmpfs(t, '4m');
  // As QEMU leaves it: ftruncate'd, its own, 0644.
  const path = join(root, 'scream');
  await makeFile(path, '', QEMU, QEMU, 0o644, 2 * MiB);
  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }), { trustedOwners: [0, USER, QEMU] });
  t.deepEqual(result.changes, [`owner ${QEMU}:${QEMU} -> ${USER}:${GROUP}`, 'mode 0644 -> 0660', 'reserved 2M']);
  t.is((await fsp.stat(path)).blocks * 512, 2 * MiB);

  // The same again with the rest of the tmpfs taken: 2 MiB missing, 1 MiB free.
  await fsp.rm(path);
  await fsp.writeFile(join(root, 'other'), Buffer.alloc(3 * MiB, 1));
  await makeFile(path, '', QEMU, QEMU, 0o644, 2 * MiB);
  const before = await snapshot(path);
  await t.throwsAsync(ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }), { trustedOwners: [0, USER, QEMU] }), {
    instanceOf: InvalidConfig,
    message: `Cannot reserve shared memory file '${path}': needs 2 MiB more, '${root}' has 1.0 MiB free; ${fixFor(root)}`,
  });
  t.deepEqual(await snapshot(path), before, 'owner and mode are put back');
  t.is((await fsp.stat(path)).blocks, 0);
});

tmpfsTest('refuses to grow a file beyond the free space, and shrinks it back with its contents', async (t) => {
  const root = await smallTmpfs(t, '1536k');
  const path = join(root, 'looking-glass');
  const content = Buffer.alloc(1 * MiB);
  for (let i = 0; i < content.length; i += 4096) content.write(`page ${i / 4096}`, i);
  await makeFile(path, content, USER, USER, 0o644);
  const before = await snapshot(path);

  await t.throwsAsync(ensureShmFile(lgSpec(root, { size: 2 * MiB })), {
    instanceOf: InvalidConfig,
    message: `Cannot reserve shared memory file '${path}': needs 1 MiB more, '${root}' has 512.0 KiB free; ${fixFor(root)}`,
  });
  t.deepEqual(await snapshot(path), before);
  t.true((await fsp.readFile(path)).equals(content));
});

tmpfsTest('a full tmpfs is no problem for a file whose memory is already there', async (t) => {
  const root = await smallTmpfs(t, '2m');
  const path = join(root, 'scream');
  await makeFile(path, Buffer.alloc(2 * MiB, 7), USER, GROUP, 0o644);
  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }));
  t.deepEqual(result.changes, ['mode 0644 -> 0660']);
  t.true((await fsp.readFile(path)).equals(Buffer.alloc(2 * MiB, 7)));
});

tmpfsTest('allowResize=false never writes a sparse file QEMU may have mapped, even with room', async (t) => {
  const root = await smallTmpfs(t, '4m');
  const path = join(root, 'scream');
  await makeFile(path, '', USER, GROUP, 0o660, 2 * MiB);
  const result = await ensureShmFile(lgSpec(root, { name: 'scream', size: 2 * MiB }), { allowResize: false });
  t.is(result.action, 'unchanged');
  t.deepEqual(result.warnings, [
    `Shared memory file '${path}' is sparse (0 B of 2 MiB backed by memory) and may be mapped already, ` +
      `so its space is not reserved now; if '${root}' fills up the guest dies of SIGBUS, ignoring`,
  ]);
  t.is((await fsp.stat(path)).blocks, 0);
});

// --- removeShmFile ---

test('removeShmFile removes a regular file', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'looking-glass');
  await makeFile(path, '', USER, GROUP, 0o660, 32 * MiB);

  const result = await removeShmFile(lgSpec(root));

  t.deepEqual(result, {
    path,
    action: 'removed',
    before: { uid: USER, gid: GROUP, mode: 0o660, size: 32 * MiB },
  });
  t.deepEqual(await fsp.readdir(root), []);
});

test('removeShmFile refuses a symlink and keeps its target', async (t) => {
  const root = await tempDir(t, 'root');
  const outside = await tempDir(t, 'outside');
  const target = join(outside, 'precious');
  await makeFile(target, 'precious\n', 0, 0, 0o600);
  const link = join(root, 'looking-glass');
  await fsp.symlink(target, link);
  const targetBefore = await snapshot(target);

  await t.throwsAsync(removeShmFile({ root, name: 'looking-glass', uid: USER }), {
    instanceOf: UnsafePath,
    message: `Cannot remove shared memory file '${link}': it is a symbolic link to '${target}'; remove the link, refusing`,
  });

  t.deepEqual(await snapshot(target), targetBefore);
  t.is(await fsp.readFile(target, 'utf8'), 'precious\n');
  t.is(await fsp.readlink(link), target);
});

test('removeShmFile refuses a hard link and a file of an untrusted owner', async (t) => {
  const root = await tempDir(t, 'root');
  const outside = await tempDir(t, 'outside');
  const original = join(outside, 'important');
  await makeFile(original, 'keep', 0, 0, 0o600);
  const linked = join(root, 'looking-glass');
  await fsp.link(original, linked);
  await t.throwsAsync(removeShmFile(lgSpec(root)), {
    instanceOf: UnsafePath,
    message: `Cannot remove shared memory file '${linked}': it has 2 hard links, expected 1; remove it, refusing`,
  });
  t.is((await fsp.lstat(linked)).nlink, 2);

  const theirs = join(root, 'scream');
  await makeFile(theirs, '', STRANGER, STRANGER, 0o600);
  await t.throwsAsync(removeShmFile(lgSpec(root, { name: 'scream' }), { accounts: ACCOUNTS }), {
    instanceOf: UnsafePath,
    message:
      `Cannot remove shared memory file '${theirs}': it is owned by uid ${STRANGER}, which is not trusted (0, ${USER}); ` +
      `if QEMU runs as uid ${STRANGER}, set qemu-user = "${STRANGER}" in [daemon] of the configuration, else remove the file, refusing`,
  });
  t.deepEqual((await fsp.readdir(root)).sort(), ['looking-glass', 'scream']);
});

test('removeShmFile is fine when the file is missing', async (t) => {
  const root = await tempDir(t, 'root');
  const path = join(root, 'scream');
  t.deepEqual(await removeShmFile({ root, name: 'scream', uid: USER }), { path, action: 'absent' });
  await makeFile(path, '', USER, GROUP, 0o660, 2 * MiB);
  t.is((await removeShmFile({ root, name: 'scream', uid: USER })).action, 'removed');
  t.deepEqual(await removeShmFile({ root, name: 'scream', uid: USER }), { path, action: 'absent' });
});

test('removeShmFile refuses an invalid name before touching anything', async (t) => {
  const root = await tempDir(t, 'root');
  await t.throwsAsync(removeShmFile({ root, name: '..', uid: USER }), {
    instanceOf: InvalidArgs,
    message: "Invalid shared memory name '..': names a directory, not a file; use a plain file name such as 'looking-glass'",
  });
  t.true((await fsp.lstat(root)).isDirectory());
});

// --- inspectShmFile ---

test('inspectShmFile reports a file, a symlink with its target, and null when missing', async (t) => {
  const root = await tempDir(t, 'root');
  t.is(await inspectShmFile(root, 'looking-glass'), null);
  t.is(await inspectShmFile(join(root, 'missing-root'), 'looking-glass'), null);

  await ensureShmFile(lgSpec(root));
  t.deepEqual(await inspectShmFile(root, 'looking-glass'), {
    path: join(root, 'looking-glass'),
    type: 'file',
    nlink: 1,
    uid: USER,
    gid: GROUP,
    mode: 0o660,
    size: 32 * MiB,
  });

  await fsp.symlink('/etc/passwd', join(root, 'scream'));
  const link = await inspectShmFile(root, 'scream');
  t.is(link?.type, 'symlink');
  t.is(link?.linkTarget, '/etc/passwd');

  await t.throwsAsync(inspectShmFile(root, 'a/b'), {
    instanceOf: InvalidArgs,
    message: "Invalid shared memory name 'a/b': must not contain '/'; use a plain file name such as 'looking-glass'",
  });
});
