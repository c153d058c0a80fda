/**
 * reset-method on a fake sysfs tree (plain files): parse, validate against
 * what the device's reset_method lists, write, read back, restore. The real
 * kernel's half (its checks, a write it refuses) is the kernel tier's
 * (test/kernel/guest/reset.sh).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { InvalidConfig, NoSuchDevice } from '../../lib/errors.js';
import { parseResetMethod, planResetMethod, undoResetMethod } from '../../lib/host/reset-method.js';
import { rootsUnder } from '../../lib/roots.js';
import { PLAIN_TUNABLES } from '../../lib/sim/sim-tunables.js';
import { tempDir } from '../helpers/temp-dir.js';

const ADDR = '0000:0b:00.0';

async function device(t: Parameters<typeof tempDir>[0], resetMethod: string | null) {
  const roots = rootsUnder(await tempDir(t));
  const dir = path.join(roots.sysfs, 'bus', 'pci', 'devices', ADDR);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'vendor'), '0x1002\n');
  if (resetMethod !== null) await fs.writeFile(path.join(dir, 'reset_method'), resetMethod);
  const read = async () => (await fs.readFile(path.join(dir, 'reset_method'), 'utf8')).trim();
  return { roots, context: { roots, systemd: null }, read };
}
/** A fake tree is plain files: a write replaces the text, as a sysfs write sets the value. */
const files = PLAIN_TUNABLES;

test('parses reset-method as an ordered list, from a string or an array', (t) => {
  t.deepEqual(parseResetMethod('flr bus'), ['flr', 'bus']);
  t.deepEqual(parseResetMethod(' device_specific '), ['device_specific']);
  t.deepEqual(parseResetMethod(['pm', 'bus']), ['pm', 'bus']);
});

test('refuses an unknown, a repeated or no method', (t) => {
  t.throws(() => parseResetMethod('flr warm'), {
    instanceOf: InvalidConfig,
    message:
      "Invalid reset-method 'flr warm': 'warm' is not a reset method Linux knows (device_specific, acpi, flr, af_flr, pm, bus, cxl_bus), refusing",
  });
  t.throws(() => parseResetMethod('bus bus'), {
    instanceOf: InvalidConfig,
    message: "Invalid reset-method 'bus bus': 'bus' is named twice, refusing",
  });
  t.throws(() => parseResetMethod(''), { instanceOf: InvalidConfig, message: /^Invalid reset-method '': expected methods/ });
});

test('writes the methods before detach, reads them back, and restores the old list at undo', async (t) => {
  const { context, read } = await device(t, 'flr pm bus\n');
  const change = await planResetMethod({ address: ADDR, resetMethod: 'bus' }, context, { files });
  t.deepEqual(change.record, { kind: 'reset-method', address: ADDR, before: ['flr', 'pm', 'bus'], methods: ['bus'] });
  t.is(change.phase, 'before-detach');
  t.is(await read(), 'flr pm bus', 'plan changes nothing');
  await change.apply();
  t.is(await read(), 'bus');
  await undoResetMethod(change.record, context, { files });
  t.is(await read(), 'flr pm bus');
  await undoResetMethod(change.record, context, { files });
  t.is(await read(), 'flr pm bus', 'a second undo changes nothing');
});

test('refuses a method the device does not offer, naming those it does, changing nothing', async (t) => {
  const { context, read } = await device(t, 'pm bus\n');
  await t.throwsAsync(planResetMethod({ address: ADDR, resetMethod: 'flr' }, context), {
    instanceOf: InvalidConfig,
    message:
      "Invalid reset-method 'flr' for '0000:0b:00.0': the kernel offers 'pm bus' for it, not 'flr'; choose among those (a module such as vendor-reset adds device_specific), refusing",
  });
  t.is(await read(), 'pm bus');
});

test('refuses where the kernel has no reset_method, and a device that is not there', async (t) => {
  const { context } = await device(t, null);
  await t.throwsAsync(planResetMethod({ address: ADDR, resetMethod: 'bus' }, context), {
    instanceOf: InvalidConfig,
    message: /^Cannot set reset-method of '0000:0b:00.0': the kernel has no reset_method for it \(Linux older than 5.15/,
  });
  await t.throwsAsync(planResetMethod({ address: '0000:0c:00.0', resetMethod: 'bus' }, context), {
    instanceOf: NoSuchDevice,
    message: /^Cannot set reset-method of '0000:0c:00.0': there is no such PCI device/,
  });
});

test('a read-back that differs is refused, and undo puts the old list back', async (t) => {
  const { roots, context, read } = await device(t, 'flr bus\n');
  const change = await planResetMethod({ address: ADDR, resetMethod: 'bus' }, context, { files });
  // A kernel that keeps its own order: the file reads 'flr bus' whatever is written.
  const file = path.join(roots.sysfs, 'bus', 'pci', 'devices', ADDR, 'reset_method');
  const stubborn = {
    read: async () => 'flr bus\n',
    write: async () => {},
    exists: async () => true,
  };
  const refused = await planResetMethod({ address: ADDR, resetMethod: 'bus' }, context, { files: stubborn });
  await t.throwsAsync(refused.apply(), {
    instanceOf: InvalidConfig,
    message: "Cannot set reset_method of '0000:0b:00.0' to 'bus': it reads back 'flr bus', refusing",
  });
  await change.apply();
  t.is(await read(), 'bus');
  await undoResetMethod(change.record, context, { files });
  t.is((await fs.readFile(file, 'utf8')).trim(), 'flr bus');
});

test("undo writes 'default' when the kernel refuses the old list (a listed method no longer probes)", async (t) => {
  const { roots, context, read } = await device(t, 'flr bus\n');
  const change = await planResetMethod({ address: ADDR, resetMethod: 'flr' }, context, { files });
  await change.apply();
  t.is(await read(), 'flr');
  // As 6.12 does for a GPU's bus reset once its HDA shares the bus: 'bus' is refused, 'default' re-probes to 'flr'.
  const file = path.join(roots.sysfs, 'bus', 'pci', 'devices', ADDR, 'reset_method');
  const kernel = {
    ...files,
    async write(p: string, text: string) {
      if (text.trim() === 'default') return files.write(p, 'flr\n');
      if (text.split(/\s+/).includes('bus')) throw Object.assign(new Error('EINVAL'), { code: 'EINVAL' });
      return files.write(p, text);
    },
  };
  await t.throwsAsync(
    planResetMethod({ address: ADDR, resetMethod: 'flr' }, context, { files: kernel }).then(async (c) => {
      await files.write(file, 'flr bus\n');
      const bus = await planResetMethod({ address: ADDR, resetMethod: 'bus' }, context, { files: kernel });
      await bus.apply();
      return c;
    }),
    {
      instanceOf: InvalidConfig,
      message:
        "Cannot set reset_method of '0000:0b:00.0' to 'bus': the kernel refused it (EINVAL), as it does for a method that no longer works for the device (a bus reset once another function shares its bus); choose another of its methods, refusing",
    },
  );
  t.is(await read(), 'flr bus', 'the refused apply changed nothing');
  await files.write(file, 'flr\n');
  await undoResetMethod(change.record, context, { files: kernel });
  t.is(await read(), 'flr', "undo took the kernel's default");
});
