/**
 * The kvmfr device on a fake dev and sysfs root. These run as root, as the
 * daemon does: the node is a real character device made with mknod (1:3,
 * the number of /dev/null, in a temp folder: chown and chmod change the
 * temp node only), so the type, device-number and owner checks are real.
 * The kernel tier cannot load kvmfr (out-of-tree) and says SKIPPED there.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { InvalidConfig, NoSuchDevice, UnsafePath } from '../../lib/errors.js';
import { rootsUnder } from '../../lib/roots.js';
import { kvmfrModuleSize, kvmfrPresent, parseStaticSizes, planKvmfr, undoKvmfr } from '../../lib/shm/kvmfr.js';
import { tempDir } from '../helpers/temp-dir.js';

const MiB = 1024 * 1024;
const IS_ROOT = process.getuid?.() === 0;
const asRoot = IS_ROOT ? test : test.skip;
const WHY = IS_ROOT ? '' : ' (skipped: needs root for mknod and chown)';

async function host(
  t: Parameters<typeof tempDir>[0],
  opts: { cmdline?: string; modprobe?: Record<string, string>; sysDev?: string | null; node?: 'char' | 'file' | 'link' } = {},
) {
  const top = await tempDir(t);
  const roots = rootsUnder(top);
  await fs.mkdir(roots.dev, { recursive: true });
  await fs.mkdir(roots.proc, { recursive: true });
  await fs.writeFile(path.join(roots.proc, 'cmdline'), opts.cmdline ?? 'BOOT_IMAGE=/vmlinuz root=/dev/sda1\n');
  const modprobeDir = path.join(top, 'etc', 'modprobe.d');
  await fs.mkdir(modprobeDir, { recursive: true });
  for (const [name, text] of Object.entries(opts.modprobe ?? {})) await fs.writeFile(path.join(modprobeDir, name), text);
  if (opts.sysDev !== null) {
    await fs.mkdir(path.join(roots.sysfs, 'class', 'kvmfr', 'kvmfr0'), { recursive: true });
    await fs.writeFile(path.join(roots.sysfs, 'class', 'kvmfr', 'kvmfr0', 'dev'), `${opts.sysDev ?? '1:3'}\n`);
  }
  const node = path.join(roots.dev, 'kvmfr0');
  if ((opts.node ?? 'char') === 'char') {
    execFileSync('mknod', ['-m', '0600', node, 'c', '1', '3']);
  } else if (opts.node === 'file') {
    await fs.writeFile(node, '');
  } else {
    await fs.writeFile(path.join(top, 'elsewhere'), '');
    await fs.symlink(path.join(top, 'elsewhere'), node);
  }
  const stat = async () => {
    const st = await fs.lstat(node);
    return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
  };
  return { roots, context: { roots }, options: { modprobeDirs: [modprobeDir] }, node, stat, top };
}

const SETTINGS = { size: 32 * MiB, uid: 1000, gid: 1001, mode: 0o660 };

test('parses static_size_mb from the kernel command line and from modprobe.d lines', (t) => {
  t.deepEqual(parseStaticSizes('root=/dev/sda1 kvmfr.static_size_mb=32,64 quiet', 'cmdline'), [32, 64]);
  t.is(parseStaticSizes('root=/dev/sda1 quiet', 'cmdline'), null);
  t.deepEqual(parseStaticSizes('# Looking Glass\noptions kvmfr static_size_mb=128\n', 'modprobe'), [128]);
  t.is(parseStaticSizes('options kvm ignore_msrs=1\n#options kvmfr static_size_mb=64\n', 'modprobe'), null);
  t.is(parseStaticSizes('options kvmfr static_size_mb=lots\n', 'modprobe'), null);
});

asRoot(`sets owner, group and mode on the open node, and undo puts back what the record says${WHY}`, async (t) => {
  const { context, options, stat } = await host(t, { modprobe: { 'kvmfr.conf': 'options kvmfr static_size_mb=32\n' } });
  t.true(await kvmfrPresent(context.roots));
  const change = await planKvmfr(SETTINGS, context, options);
  t.like(change.record, { kind: 'kvmfr', rdev: '1:3', uid: 0, gid: 0, mode: 0o600 });
  t.deepEqual(change.moduleSize?.bytes, 32 * MiB);
  t.deepEqual(change.warnings, []);
  t.is(await stat(), '0:0 0600', 'plan changes nothing');
  await change.apply();
  t.is(await stat(), '1000:1001 0660');
  await undoKvmfr(change.record, context);
  t.is(await stat(), '0:0 0600');
  await undoKvmfr(change.record, context);
  t.is(await stat(), '0:0 0600', 'a second undo changes nothing');
});

asRoot(`refuses a module size that differs from the configured one, changing nothing${WHY}`, async (t) => {
  const { context, options, stat } = await host(t, {
    cmdline: 'quiet kvmfr.static_size_mb=64\n',
    modprobe: { 'kvmfr.conf': 'options kvmfr static_size_mb=32\n' },
  });
  await t.throwsAsync(planKvmfr(SETTINGS, context, options), {
    instanceOf: InvalidConfig,
    message:
      /^Cannot use '.*\/dev\/kvmfr0': kvmfr was loaded with 64M for it \('.*\/proc\/cmdline'\), the configured Looking Glass size is 32M; set static_size_mb=32 and reload kvmfr, or change the size, refusing$/,
  });
  t.is(await stat(), '0:0 0600');
});

asRoot(`an unknown module size is a warning, not a refusal${WHY}`, async (t) => {
  const { context, options } = await host(t);
  const change = await planKvmfr(SETTINGS, context, options);
  t.is(change.moduleSize, null);
  t.is(change.warnings.length, 1);
  t.regex(change.warnings[0]!, /is not known .* so it is not checked against 32M, ignoring$/);
});

test('reads the size for kvmfrN by its index, the later modprobe.d file winning', async (t) => {
  const top = await tempDir(t);
  const roots = rootsUnder(top);
  await fs.mkdir(roots.proc, { recursive: true });
  await fs.writeFile(path.join(roots.proc, 'cmdline'), 'quiet\n');
  const dir = path.join(top, 'modprobe.d');
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, '10-kvmfr.conf'), 'options kvmfr static_size_mb=16\n');
  await fs.writeFile(path.join(dir, '50-lg.conf'), 'options kvmfr static_size_mb=32,128\n');
  t.deepEqual(await kvmfrModuleSize(roots, 1, [dir]), { bytes: 128 * MiB, from: path.join(dir, '50-lg.conf') });
  t.is(await kvmfrModuleSize(roots, 2, [dir]), null);
});

asRoot(`refuses a node that is not kvmfr's: another device number, a file, a symlink, no module${WHY}`, async (t) => {
  const other = await host(t, { sysDev: '240:0' });
  await t.throwsAsync(planKvmfr(SETTINGS, other.context, other.options), {
    instanceOf: UnsafePath,
    message: /it is device 1:3, but kvmfr's 'kvmfr0' is 240:0; remove the stale node/,
  });
  t.is(await other.stat(), '0:0 0600');
  const file = await host(t, { node: 'file' });
  await t.throwsAsync(planKvmfr(SETTINGS, file.context, file.options), { instanceOf: UnsafePath, message: /it is not a character device/ });
  const link = await host(t, { node: 'link' });
  await t.throwsAsync(planKvmfr(SETTINGS, link.context, link.options), { instanceOf: UnsafePath, message: /it is not a character device/ });
  t.is((await fs.lstat(path.join(link.top, 'elsewhere'))).uid, 0, "the link's target is untouched");
  const none = await host(t, { sysDev: null });
  await t.throwsAsync(planKvmfr(SETTINGS, none.context, none.options), {
    instanceOf: NoSuchDevice,
    message: /the kvmfr module has no 'kvmfr0'/,
  });
});

asRoot(`refuses a node owned by someone else, and a mode others could write${WHY}`, async (t) => {
  const { context, options, node, stat } = await host(t);
  await fs.chown(node, 4242, 0);
  await t.throwsAsync(planKvmfr(SETTINGS, context, options), {
    instanceOf: UnsafePath,
    message: /owned by uid 4242, not root or the VM's user/,
  });
  t.is(await stat(), '4242:0 0600');
  await t.throwsAsync(planKvmfr({ ...SETTINGS, mode: 0o666 }, context, options), {
    instanceOf: InvalidConfig,
    message: /^Invalid mode '0666' for 'kvmfr0': other users could write/,
  });
});

asRoot(`undo leaves a node kvmfr made again (another device number) alone${WHY}`, async (t) => {
  const { context, options, node, stat, roots } = await host(t);
  const change = await planKvmfr(SETTINGS, context, options);
  await change.apply();
  // kvmfr reloaded: a new node with another number, made by udev with its own rule.
  await fs.rm(node);
  execFileSync('mknod', ['-m', '0640', node, 'c', '1', '5']);
  await fs.writeFile(path.join(roots.sysfs, 'class', 'kvmfr', 'kvmfr0', 'dev'), '1:5\n');
  await undoKvmfr(change.record, context);
  t.is(await stat(), '0:0 0640');
  await fs.rm(node);
  await undoKvmfr(change.record, context);
  t.false(await kvmfrPresent(context.roots), 'a node that is gone is not an error');
});
