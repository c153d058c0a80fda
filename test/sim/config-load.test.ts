import { Buffer } from 'node:buffer';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { InvalidConfig } from '../../lib/errors.js';
import { CONFIG_MAX_BYTES, emptyConfig, loadConfigFile } from '../../lib/config/index.js';

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await fsp.mkdtemp(join(os.tmpdir(), 'vfio-hookd-load-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

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
