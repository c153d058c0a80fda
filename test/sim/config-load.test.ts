import { Buffer } from 'node:buffer';
import { execFile, execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import test, { type ExecutionContext } from 'ava';

import { InvalidConfig } from '../../lib/errors.js';
import { CONFIG_MAX_BYTES, emptyConfig, loadConfigFile } from '../../lib/config/index.js';
import { tempDir } from '../helpers/temp-dir.js';

test('a missing file is the empty configuration, not an error', async (t) => {
  const dir = await tempDir(t);
  t.deepEqual(await loadConfigFile(join(dir, 'vfio-hookd.toml')), emptyConfig());
  t.deepEqual(await loadConfigFile(join(dir, 'no-such-dir', 'vfio-hookd.toml')), emptyConfig());
});

test('a valid file is parsed, and its path names it in messages', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, '[vm.win10]\ndevices = ["0b:00.0"]\n');
  t.deepEqual((await loadConfigFile(path)).vms.get('win10')?.devices, ['0000:0b:00.0']);
  await fsp.writeFile(path, '[vm.win10]\ndevices = ["0b:00"]\n');
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `${path}:2:12: vm.win10.devices[0]: invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)`,
  });
});

test('a directory where the file should be is InvalidConfig', async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(() => loadConfigFile(dir), {
    instanceOf: InvalidConfig,
    message: `Cannot read configuration '${dir}': it is a directory`,
  });
});

test('a file that is not UTF-8 is InvalidConfig rather than text with replacement characters', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, Buffer.from([0x5b, 0x76, 0x6d, 0x2e, 0xff, 0x5d, 0x0a]));
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot read configuration '${path}': not valid UTF-8 (TOML files are UTF-8)`,
  });
});

test('an implausibly large file is refused', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, `# ${'x'.repeat(CONFIG_MAX_BYTES)}\n`);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot read configuration '${path}': ${CONFIG_MAX_BYTES + 3} bytes, more than the ${CONFIG_MAX_BYTES} accepted`,
  });
});

// --- trust: only root may be able to change the file ---

const GOOD = '[vm.win10]\ndevices = ["0b:00.0"]\n';
const WHY = 'it decides which devices leave the host, so only root may be able to change it';

/** A root-owned 0644 configuration file in a fresh 0700 folder. */
async function goodFile(t: ExecutionContext): Promise<{ dir: string; path: string }> {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, GOOD, { mode: 0o644 });
  return { dir, path };
}

test('refuses a group-writable file, saying how to fix it', async (t) => {
  const { path } = await goodFile(t);
  await fsp.chmod(path, 0o664);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${path}': the file is writable by group (mode 0664); ${WHY}; run "chmod go-w '${path}'", refusing`,
  });
  // Fixed as told, it loads.
  await fsp.chmod(path, 0o644);
  t.deepEqual((await loadConfigFile(path)).vms.get('win10')?.devices, ['0000:0b:00.0']);
});

test('refuses a file in a world-writable folder', async (t) => {
  const { dir, path } = await goodFile(t);
  await fsp.chmod(dir, 0o777);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${path}': the folder '${dir}' is writable by group and others (mode 0777); ${WHY}; run "chmod go-w '${dir}'", refusing`,
  });
});

test('refuses a file owned by another user, and names every fault at once', async (t) => {
  const { dir, path } = await goodFile(t);
  await fsp.chown(path, 12345, 12345);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${path}': the file is owned by uid 12345; ${WHY}; run "chown root:root '${path}'", refusing`,
  });
  await fsp.chmod(path, 0o646);
  await fsp.chown(dir, 12345, 0);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message:
      `Cannot trust configuration '${path}': the file is owned by uid 12345 and writable by others (mode 0646), ` +
      `the folder '${dir}' is owned by uid 12345; ${WHY}; run "chown root:root '${path}' '${dir}'; chmod go-w '${path}'", refusing`,
  });
});

test('refuses a file whose folder is safe but a folder above it is not', async (t) => {
  const top = await tempDir(t);
  const conf = join(top, 'etc', 'vfio-hookd');
  await fsp.mkdir(conf, { recursive: true, mode: 0o755 });
  const path = join(conf, 'vfio-hookd.toml');
  await fsp.writeFile(path, GOOD, { mode: 0o644 });
  // Whoever may rename 'etc' may put a folder of their own in its place.
  await fsp.chmod(join(top, 'etc'), 0o775);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${path}': the folder '${join(top, 'etc')}' is writable by group (mode 0775); ${WHY}; run "chmod go-w '${join(top, 'etc')}'", refusing`,
  });
});

/** NixOS's chain: /etc/vfio-hookd/vfio-hookd.toml -> /etc/static/... -> /nix/store/<hash>-vfio-hookd.toml. */
async function nixosChain(t: ExecutionContext): Promise<{ link: string; store: string; target: string }> {
  const top = await tempDir(t);
  const store = join(top, 'nix', 'store');
  await fsp.mkdir(store, { recursive: true, mode: 0o755 });
  // As /nix/store: root:nixbld 1775, group-writable but sticky.
  await fsp.chmod(store, 0o1775);
  const target = join(store, '0a1b2c-vfio-hookd.toml');
  await fsp.writeFile(target, GOOD, { mode: 0o444 });
  const staticDir = join(top, 'etc', 'static', 'vfio-hookd');
  await fsp.mkdir(staticDir, { recursive: true, mode: 0o755 });
  await fsp.symlink(target, join(staticDir, 'vfio-hookd.toml'));
  await fsp.mkdir(join(top, 'etc', 'vfio-hookd'), { mode: 0o755 });
  const link = join(top, 'etc', 'vfio-hookd', 'vfio-hookd.toml');
  await fsp.symlink(join('..', 'static', 'vfio-hookd', 'vfio-hookd.toml'), link);
  return { link, store, target };
}

test("a symlink chain to a root-owned file is fine, even in a sticky group-writable store (NixOS's /etc/static)", async (t) => {
  const { link } = await nixosChain(t);
  t.deepEqual((await loadConfigFile(link)).vms.get('win10')?.devices, ['0000:0b:00.0']);
});

test('a symlink is judged by where it leads: a bad target, or a bad folder of the target, is refused', async (t) => {
  const { link, store, target } = await nixosChain(t);
  await fsp.chmod(target, 0o664);
  await t.throwsAsync(() => loadConfigFile(link), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${link}': its target '${target}' is writable by group (mode 0664); ${WHY}; run "chmod go-w '${target}'", refusing`,
  });
  await fsp.chmod(target, 0o444);
  // Without the sticky bit, anyone in the group could rename the target away and put theirs there.
  await fsp.chmod(store, 0o775);
  await t.throwsAsync(() => loadConfigFile(link), {
    instanceOf: InvalidConfig,
    message: `Cannot trust configuration '${link}': the folder '${store}' is writable by group (mode 0775); ${WHY}; run "chmod go-w '${store}'", refusing`,
  });
});

test('a FIFO where the file should be is refused without blocking', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  execFileSync('mkfifo', ['-m', '0644', path]);
  await t.throwsAsync(() => loadConfigFile(path), {
    instanceOf: InvalidConfig,
    message: `Cannot read configuration '${path}': it is a FIFO, not a regular file`,
  });
});

/**
 * Load `path` in a child process running as `uid`: the devices of 'win10',
 * or the error message. Its TMPDIR (tsx's cache) is `tmp`, so nothing stays behind.
 */
async function loadAs(uid: number, path: string, tmp: string): Promise<string> {
  const repo = fileURLToPath(new URL('../..', import.meta.url));
  const module = join(repo, 'lib', 'config', 'load-config.ts');
  const script =
    `const { loadConfigFile } = await import(${JSON.stringify(module)});` +
    `try { console.log((await loadConfigFile(${JSON.stringify(path)})).vms.get('win10')?.devices.join(',')); }` +
    `catch (error) { console.log(error.message); }`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {
    cwd: repo,
    uid,
    gid: uid,
    env: { ...process.env, TMPDIR: tmp },
  });
  return stdout.trim();
}

test("a daemon that is not root also trusts its own user's file, and still no one else's", async (t) => {
  const top = await tempDir(t);
  await fsp.chmod(top, 0o755);
  const dir = join(top, 'conf');
  await fsp.mkdir(dir, { mode: 0o755 });
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, GOOD, { mode: 0o644 });
  await fsp.chown(dir, 12345, 12345);
  await fsp.chown(path, 12345, 12345);
  const tmp = join(top, 'tmp');
  await fsp.mkdir(tmp, { mode: 0o1777 });
  await fsp.chmod(tmp, 0o1777);
  t.is(await loadAs(12345, path, tmp), '0000:0b:00.0');
  t.is(
    await loadAs(12346, path, tmp),
    `Cannot trust configuration '${path}': the file is owned by uid 12345, the folder '${dir}' is owned by uid 12345; ` +
      `${WHY}; run "chown root:root '${path}' '${dir}'", refusing`,
  );
  // Root's own file is trusted by everyone.
  await fsp.chown(path, 0, 0);
  await fsp.chown(dir, 0, 0);
  t.is(await loadAs(12346, path, tmp), '0000:0b:00.0');
});
