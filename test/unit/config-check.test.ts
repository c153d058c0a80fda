/**
 * checkConfigFile (vfio-hookd --check-config): the daemon's loader and schema
 * over one file; every problem a line `FILE:LINE:COLUMN: message`; trust
 * reported, never counted.
 */
import { Buffer } from 'node:buffer';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';

import { checkConfigFile } from '../../lib/config/check-config.js';
import { tempDir } from '../helpers/temp-dir.js';

const EXAMPLE = fileURLToPath(new URL('../../lib/config/example.toml', import.meta.url));

async function file(t: ExecutionContext, text: string | Buffer, mode = 0o644): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-check-', 0o755);
  const at = path.join(dir, 'vfio-hookd.toml');
  await fs.writeFile(at, text, { mode });
  await fs.chmod(at, mode);
  return at;
}

test('a good file passes silently: the shipped example with every key', async (t) => {
  t.deepEqual(await checkConfigFile(EXAMPLE), { code: 0, stderr: [] });
});

test('a good file with an unwise mode passes with its warning, positioned', async (t) => {
  const at = await file(t, '[vm.win10]\nuser = "alex"\n[vm.win10.scream]\nmode = "0664"\n');
  const r = await checkConfigFile(at);
  t.is(r.code, 0);
  t.is(r.stderr.length, 1);
  t.true(r.stderr[0]!.startsWith(`${at}:4:8: vm.win10.scream.mode: `), r.stderr[0]);
  t.true(r.stderr[0]!.endsWith(', ignoring'), r.stderr[0]);
});

test('a TOML syntax error is one line with its position', async (t) => {
  const at = await file(t, '[vm.win10]\ndevices = ["0b:00.0"\n');
  const r = await checkConfigFile(at);
  t.is(r.code, 1);
  t.is(r.stderr.length, 1);
  t.regex(r.stderr[0]!, new RegExp(`^${escape(at)}:\\d+:\\d+: invalid TOML: `));
});

test('every schema problem of the file is reported at once, a line each, in file order', async (t) => {
  const at = await file(
    t,
    [
      '[daemon]',
      'write-timeout = "1ms"',
      '[vm.win10]',
      'devices = ["0b:00"]',
      'usr = "alex"',
      '[vm.win10.looking-glass]',
      'size = "3M"',
      '[vm.other]',
      'devices = ["0000:0b:00.0"]',
      '[vm.win11]',
      'devices = ["0000:0c:00.0"]',
      '[vm.win12]',
      'devices = ["0000:0c:00.0"]',
      '',
    ].join('\n'),
  );
  t.deepEqual(await checkConfigFile(at), {
    code: 1,
    stderr: [
      `${at}:2:17: daemon.write-timeout: invalid write timeout '1ms': must be from 100ms to 10m`,
      `${at}:4:12: vm.win10.devices[0]: invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)`,
      `${at}:5:1: vm.win10.usr: unknown key 'usr'; did you mean 'user'?`,
      `${at}:7:8: vm.win10.looking-glass.size: invalid Looking Glass size '3M': must be a power of two of at least 1M (it becomes a PCI BAR); use '4M'`,
      `${at}:13:12: vm.win12.devices[0]: device '0000:0c:00.0' is also in VM 'win11' (line 11); a device belongs to one VM, remove it from one of them`,
    ],
  });
});

test('a byte that is not UTF-8 is reported where it is', async (t) => {
  const at = await file(t, Buffer.concat([Buffer.from('[vm.win10]\nuser = "al'), Buffer.from([0xc3, 0x28]), Buffer.from('ex"\n')]));
  t.deepEqual(await checkConfigFile(at), { code: 1, stderr: [`${at}:2:11: not valid UTF-8 (TOML files are UTF-8)`] });
  const lone = await file(t, Buffer.concat([Buffer.from('# é\n[vm.'), Buffer.from([0x80]), Buffer.from(']\n')]));
  t.deepEqual(await checkConfigFile(lone), { code: 1, stderr: [`${lone}:2:5: not valid UTF-8 (TOML files are UTF-8)`] });
});

test('a missing file, a directory and an unreadable path exit 2 with one line', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-check-', 0o755);
  const missing = path.join(dir, 'nope.toml');
  t.deepEqual(await checkConfigFile(missing), {
    code: 2,
    stderr: [`vfio-hookd: Cannot read configuration '${missing}': no such file`],
  });
  t.deepEqual(await checkConfigFile(dir), { code: 2, stderr: [`vfio-hookd: Cannot read configuration '${dir}': it is a directory`] });
  const loop = path.join(dir, 'loop.toml');
  await fs.symlink(loop, loop);
  t.deepEqual(await checkConfigFile(loop), {
    code: 2,
    stderr: [`vfio-hookd: Cannot read configuration '${loop}': too many levels of symbolic links`],
  });
});

test('a file the build user owns (as a build sandbox makes it) passes: trust is reported, not counted', async (t) => {
  // As a build sandbox makes it: owned by the build user (nixbld), mode 0644.
  const at = await file(t, '[vm.win10]\ndevices = ["0b:00.0"]\n');
  await fs.chown(at, 30001, 30000);
  const r = await checkConfigFile(at);
  t.deepEqual(r, {
    code: 0,
    stderr: [
      `${at}: warning: Cannot trust configuration '${at}': the file is owned by uid 30001; ` +
        `it decides which devices leave the host, so only root may be able to change it; run "chown root:root '${at}'"; ` +
        'the daemon would refuse the file where it is now (a check of the text does not count this)',
    ],
  });
  // Its problems still count.
  await fs.writeFile(at, '[vm.win10]\ndevices = ["0b:00"]\n');
  const bad = await checkConfigFile(at);
  t.is(bad.code, 1);
  t.is(bad.stderr.length, 2);
  t.true(bad.stderr[0]!.startsWith(`${at}:2:12: vm.win10.devices[0]: invalid PCI address '0b:00'`));
  t.true(bad.stderr[1]!.startsWith(`${at}: warning: Cannot trust configuration`));
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
