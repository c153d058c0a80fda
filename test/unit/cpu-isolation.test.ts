/**
 * CPU isolation's pure half: the cpulist parser (table-driven), its
 * formatter, systemd's `ay` encoding, and the refusals plan makes before it
 * asks systemd anything. The systemd half runs against a real systemd in the
 * system tier (test/system/guest/cpus.sh).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { HostDependency, InvalidConfig } from '../../lib/errors.js';
import { cpusFromDbus, cpusToDbus, formatCpuList, parseCpuList, planCpuIsolation } from '../../lib/host/cpu-isolation.js';
import { rootsUnder } from '../../lib/roots.js';
import { tempDir } from '../helpers/temp-dir.js';

const parsed: [string, number[]][] = [
  ['0', [0]],
  ['0-3', [0, 1, 2, 3]],
  ['0-3,8-11', [0, 1, 2, 3, 8, 9, 10, 11]],
  ['3,1,2,1', [1, 2, 3]],
  [' 0 - 1 '.replace(/ /g, ''), [0, 1]],
  ['0-7:2', [0, 2, 4, 6]],
  ['8191', [8191]],
];
for (const [text, want] of parsed) {
  test(`parses the cpulist '${text}'`, (t) => {
    t.deepEqual(parseCpuList(text), want);
  });
}

const refused: [string, string][] = [
  ['', "Invalid host-cpus '': expected a CPU list such as '0-3,8-11', refusing"],
  ['a', "Invalid host-cpus 'a': 'a' is not a CPU or a range such as '8-11', refusing"],
  ['0-3,', "Invalid host-cpus '0-3,': '' is not a CPU or a range such as '8-11', refusing"],
  ['3-1', "Invalid host-cpus '3-1': range '3-1' runs backwards, refusing"],
  ['8192', "Invalid host-cpus '8192': CPU 8192 is above 8191, refusing"],
  ['0-3:0', "Invalid host-cpus '0-3:0': the step in '0-3:0' must be at least 1, refusing"],
];
for (const [text, message] of refused) {
  test(`refuses the cpulist '${text}'`, (t) => {
    t.throws(() => parseCpuList(text), { instanceOf: InvalidConfig, message });
  });
}

test('formats a CPU set as the shortest cpulist', (t) => {
  t.is(formatCpuList([0, 1, 2, 3, 8, 10, 11]), '0-3,8,10-11');
  t.is(formatCpuList([]), '');
  t.is(formatCpuList(parseCpuList('0-3,8-11')), '0-3,8-11');
});

test("encodes CPUs as systemd's ay bitmask, byte i bit j = CPU 8i+j, and back", (t) => {
  t.deepEqual([...cpusToDbus([0, 1])], [0b11]);
  t.deepEqual([...cpusToDbus([0, 9])], [0b1, 0b10]);
  t.deepEqual([...cpusToDbus([])], []);
  t.deepEqual(cpusFromDbus(cpusToDbus([0, 2, 8, 15, 16])), [0, 2, 8, 15, 16]);
  t.deepEqual(cpusFromDbus([]), []);
  t.deepEqual(cpusFromDbus(new Uint8Array([0x0f, 0x0f])), [0, 1, 2, 3, 8, 9, 10, 11]);
  t.throws(() => cpusFromDbus('0-3'), { instanceOf: TypeError });
});

async function hostWithCpus(t: Parameters<typeof tempDir>[0], online: string | null) {
  const roots = rootsUnder(await tempDir(t));
  if (online !== null) {
    await fs.mkdir(path.join(roots.sysfs, 'devices', 'system', 'cpu'), { recursive: true });
    await fs.writeFile(path.join(roots.sysfs, 'devices', 'system', 'cpu', 'online'), online);
  }
  return roots;
}

test('refuses CPUs the host does not have, naming the ones it has', async (t) => {
  const roots = await hostWithCpus(t, '0-3\n');
  await t.throwsAsync(planCpuIsolation({ hostCpus: '0-1,6-7' }, { roots, systemd: null }), {
    instanceOf: InvalidConfig,
    message: "Invalid host-cpus '0-1,6-7': CPU 6-7 is not online (the host has 0-3); list only CPUs the host has, refusing",
  });
});

test('refuses a list of every CPU: nothing would be left for the VM', async (t) => {
  const roots = await hostWithCpus(t, '0-3\n');
  await t.throwsAsync(planCpuIsolation({ hostCpus: '0-3' }, { roots, systemd: null }), {
    instanceOf: InvalidConfig,
    message: /^Invalid host-cpus '0-3': that is every CPU the host has/,
  });
});

test('refuses when the online CPUs cannot be read', async (t) => {
  const roots = await hostWithCpus(t, null);
  await t.throwsAsync(planCpuIsolation({ hostCpus: '0' }, { roots, systemd: null }), {
    instanceOf: InvalidConfig,
    message: /^Cannot check host-cpus '0': '.*\/devices\/system\/cpu\/online' cannot be read, refusing$/,
  });
});

test('refuses without a systemd manager, after checking the list', async (t) => {
  const roots = await hostWithCpus(t, '0-3\n');
  await t.throwsAsync(planCpuIsolation({ hostCpus: '0-1' }, { roots, systemd: null }), {
    instanceOf: HostDependency,
    message: /^Cannot isolate the host on its CPUs: there is no systemd manager on the system bus/,
  });
});
