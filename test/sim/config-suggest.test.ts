/**
 * `vfio-hookctl config suggest VM` on a root of the test's own (libvirt's
 * saved definition of the blog's win10 under etc/libvirt/qemu): the table it
 * proposes loads in the daemon's parser and says what the XML says; the XML
 * changes are named; --write appends once and refuses the second time.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { runHookctl } from '../../lib/cli/hookctl.js';
import { parseConfig } from '../../lib/config/index.js';
import { tempDir } from '../helpers/temp-dir.js';
import { WIN10_XML } from '../helpers/win10.js';

async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runHookctl(argv, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr };
}

async function root(t: ExecutionContext, xml = WIN10_XML): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-suggest-');
  await fs.mkdir(path.join(dir, 'etc/libvirt/qemu'), { recursive: true });
  await fs.writeFile(path.join(dir, 'etc/libvirt/qemu/win10.xml'), xml);
  return dir;
}

test('proposes the table from the domain: its PCI hostdevs by address and its shm sizes; it loads as it is', async (t) => {
  const dir = await root(t);
  const r = await cli('config', 'suggest', 'win10', '--root', dir, '--json');
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as { table: string; xmlChanges: string[] };
  t.deepEqual(s.xmlChanges, []);
  const config = parseConfig(s.table, 'suggested.toml');
  const vm = config.vms.get('win10')!;
  t.deepEqual(vm.devices, ['0000:0b:00.0', '0000:0b:00.1']);
  t.is(vm.lookingGlass?.sizeBytes, 32 * 1024 * 1024);
  t.is(vm.scream?.sizeBytes, 2 * 1024 * 1024);
  const text = await cli('config', 'suggest', 'win10', '--root', dir);
  t.regex(text.stdout, /^# \[vm\.win10\] for .*vfio-hookd\.toml, from .*win10\.xml:$/m);
  t.regex(text.stdout, /^# Add it with: vfio-hookctl config suggest win10 --write$/m);
});

test("names the XML changes: managed='yes' on a PCI hostdev", async (t) => {
  const dir = await root(t, WIN10_XML.replace("managed='no'", "managed='yes'"));
  const r = await cli('config', 'suggest', 'win10', '--root', dir);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^# {3}<hostdev> 0000:0b:00\.0: set managed='no' \(libvirt would detach it itself, racing vfio-hookd\)$/m);
});

test('writes nothing unless asked; --write appends the table once, keeps the file loading, and refuses a second time', async (t) => {
  const dir = await root(t);
  const config = path.join(dir, 'etc/vfio-hookd/vfio-hookd.toml');
  t.is((await cli('config', 'suggest', 'win10', '--root', dir)).code, 0);
  await t.throwsAsync(fs.access(config), undefined, 'no file written without --write');
  await fs.mkdir(path.dirname(config), { recursive: true });
  await fs.writeFile(config, '[vm.linux]\ndevices = []\n', { mode: 0o640 });
  const w = await cli('config', 'suggest', 'win10', '--root', dir, '--write');
  t.is(w.code, 0, w.stderr);
  t.regex(w.stderr, /added \[vm\.win10\] to /);
  const after = parseConfig(await fs.readFile(config, 'utf8'), config);
  t.deepEqual([...after.vms.keys()].sort(), ['linux', 'win10']);
  t.is((await fs.stat(config)).mode & 0o777, 0o640, 'the file keeps its mode');
  const again = await cli('config', 'suggest', 'win10', '--root', dir, '--write');
  t.is(again.code, 1);
  t.regex(again.stderr, /already has \[vm\.win10\]; edit it there, refusing/);
  t.deepEqual((await fs.readdir(path.dirname(config))).sort(), ['vfio-hookd.toml'], 'no temporary file left');
});

test('a VM libvirt does not have, or a bad call, is a clear error', async (t) => {
  const dir = await root(t);
  const missing = await cli('config', 'suggest', 'win11', '--root', dir);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^vfio-hookctl: Cannot read the domain 'win11': no domain definition at .*win11\.xml/);
  t.is((await cli('config')).code, 2);
  t.is((await cli('config', 'suggest')).code, 2);
  t.is((await cli('config', 'suggest', '--', '-x')).code, 2);
  t.is((await cli('devices', '--write')).code, 2);
});
