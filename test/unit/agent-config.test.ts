/**
 * agent.toml's problems, read like the daemon's configuration: InvalidConfig,
 * every problem at once, `source:line:column: [vm.NAME] key: what`.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { loadAgentConfig, parseAgentConfig } from '../../lib/agent/agent-config.js';
import { InvalidConfig } from '../../lib/errors.js';

const F = 'agent.toml';

const refused: ReadonlyArray<readonly [string, string, string]> = [
  ['a TOML syntax error', '[vm.win10\n', `${F}:1:10: invalid TOML: illegal character in key`],
  [
    'a template without an instance',
    '[vm.win10]\nunits = ["looking-glass-client@.service"]\n',
    `${F}:2:10: [vm.win10] units: invalid unit name 'looking-glass-client@.service': a template needs an instance, e.g. 'looking-glass-client@looking-glass.service'`,
  ],
  ['a misspelt key in a VM table', '[vm.win10]\nunit = []\n', `${F}:2:1: [vm.win10] unit: unknown key 'unit'; did you mean 'units'?`],
  ['a key outside [vm.NAME]', 'units = []\n', `${F}:1:1: units: unknown table or key 'units' (only [vm.NAME] tables are read)`],
  [
    'a misspelt vm table',
    '[vms.win10]\n',
    `${F}:1:2: vms: unknown table or key 'vms' (only [vm.NAME] tables are read); did you mean 'vm'?`,
  ],
  ['vm that is not a table', 'vm = 3\n', `${F}:1:6: vm: expected tables of VMs ([vm.NAME]), got integer 3`],
  ['a VM that is not a table', '[vm]\nwin10 = "yes"\n', `${F}:2:9: [vm.win10]: expected a table, got string 'yes'`],
  ['an invalid VM name', '[vm."a/b"]\n', `${F}:1:5: [vm."a/b"]: invalid VM name 'a/b': must not contain '/'`],
  [
    'units that are not an array',
    '[vm.win10]\nunits = "a.service"\n',
    `${F}:2:9: [vm.win10] units: expected an array, got string 'a.service'`,
  ],
  [
    'a unit that is not a string',
    '[vm.win10]\nunits = ["a.service", 1]\n',
    `${F}:2:23: [vm.win10] units: expected a string, got integer 1`,
  ],
  [
    'a unit type the agent does not start',
    '[vm.win10]\nunits = ["a.device"]\n',
    `${F}:2:10: [vm.win10] units: invalid unit name 'a.device': the type must be one of '.service', '.socket', '.target', '.timer', '.path'`,
  ],
];

for (const [what, text, message] of refused) {
  test(`refuses ${what}`, (t) => {
    t.throws(() => parseAgentConfig(text, F), { instanceOf: InvalidConfig, message });
  });
}

test('every problem of the file is reported at once, in file order', (t) => {
  const text = [
    /* 1 */ '[vm."Windows 10"]',
    /* 2 */ 'usr = "alex"',
    /* 3 */ 'units = ["x@.service"]',
    /* 4 */ '[vm.linux]',
    /* 5 */ 'units = ["ok.service", "a.device"]',
    /* 6 */ 'colour = "blue"',
  ].join('\n');
  t.throws(() => parseAgentConfig(text, F), {
    instanceOf: InvalidConfig,
    message: [
      `${F}:2:1: [vm."Windows 10"] usr: unknown key 'usr'`,
      `${F}:3:10: [vm."Windows 10"] units: invalid unit name 'x@.service': a template needs an instance, e.g. 'x@looking-glass.service'`,
      `${F}:5:24: [vm.linux] units: invalid unit name 'a.device': the type must be one of '.service', '.socket', '.target', '.timer', '.path'`,
      `${F}:6:1: [vm.linux] colour: unknown key 'colour'`,
    ].join('\n'),
  });
});

test('a file with one bad VM gives no VMs at all', (t) => {
  t.throws(() => parseAgentConfig('[vm.good]\nunits = ["a.service"]\n[vm.bad]\nunits = 1\n', F), { instanceOf: InvalidConfig });
});

test('loading names the file in each problem', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-agent-config-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'agent.toml');
  await fs.writeFile(file, '[vm.win10]\nunit = []\n');
  await t.throwsAsync(loadAgentConfig(file), {
    instanceOf: InvalidConfig,
    message: `${file}:2:1: [vm.win10] unit: unknown key 'unit'; did you mean 'units'?`,
  });
});

test('a file that cannot be read is InvalidConfig', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-agent-config-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  await t.throwsAsync(loadAgentConfig(dir), {
    instanceOf: InvalidConfig,
    message: `Cannot read '${dir}': EISDIR: illegal operation on a directory, read`,
  });
});
