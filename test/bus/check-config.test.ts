/**
 * `vfio-hookd --check-config FILE` as a build step runs it: the executable,
 * with no bus (DBUS_SYSTEM_BUS_ADDRESS points nowhere), no simulated host and
 * no root folders; exit 0 silently, 1 with every problem positioned, 2 when
 * the file cannot be read.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { REPO, tempDir } from '../helpers/private-bus.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

async function vfioHookd(args: readonly string[]): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'service', 'vfio-hookd.ts'), ...args], {
    cwd: REPO,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/vfio-hookd-no-bus' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

test('the shipped example passes: exit 0, nothing printed', async (t) => {
  t.deepEqual(await vfioHookd(['--check-config', path.join(REPO, 'lib', 'config', 'example.toml')]), {
    code: 0,
    stdout: '',
    stderr: '',
  });
});

test('a file with problems exits 1 with each on its own stderr line', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-check-', 0o755);
  const file = path.join(dir, 'vfio-hookd.toml');
  await fs.writeFile(file, '[vm.win10]\ndevices = ["0b:00"]\nusr = "alex"\n');
  t.deepEqual(await vfioHookd(['--check-config', file]), {
    code: 1,
    stdout: '',
    stderr:
      `${file}:2:12: vm.win10.devices[0]: invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)\n` +
      `${file}:3:1: vm.win10.usr: unknown key 'usr'; did you mean 'user'?\n`,
  });
});

test('a missing file exits 2 with one line', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-check-', 0o755);
  const file = path.join(dir, 'missing.toml');
  t.deepEqual(await vfioHookd(['--check-config', file]), {
    code: 2,
    stdout: '',
    stderr: `vfio-hookd: Cannot read configuration '${file}': no such file\n`,
  });
});

test('--check-config with a daemon option is a usage error', async (t) => {
  const r = await vfioHookd(['--check-config', '/dev/null', '--simulate', 'reference-host']);
  t.is(r.code, 2);
  t.is(r.stderr.split('\n')[0], 'vfio-hookd: --check-config FILE takes no other option (got --simulate)');
});
