/**
 * Simulated-host fixtures: every built-in host is valid, and a broken one is
 * refused with InvalidConfig naming the source and where in the document the
 * problem is.
 */
import test from 'ava';
import { InvalidConfig } from '../../lib/errors.js';
import { BUILTIN_HOSTS, parseFixture, type FixtureInput } from '../../lib/sim/index.js';
import { fixtureCopy } from '../helpers/sim.js';

type DeviceInput = FixtureInput['devices'][number];

function deviceOf(fixture: FixtureInput, address: string): DeviceInput {
  const device = fixture.devices.find((d) => d.address === address);
  if (!device) throw new Error(`no device ${address} in ${fixture.name}`);
  return device;
}

test('the built-in hosts are the five documented ones', (t) => {
  t.deepEqual([...BUILTIN_HOSTS.keys()], ['reference-host', 'single-gpu-host', 'nvidia-host', 'split-board-host', 'chipset-host']);
});

for (const [name, input] of BUILTIN_HOSTS) {
  test(`parseFixture accepts the built-in host '${name}'`, (t) => {
    const fixture = parseFixture(structuredClone(input), name);
    t.is(fixture.name, name);
    t.is(fixture.devices.length, input.devices.length);
    t.true('vfio-pci' in fixture.drivers, 'detaching needs vfio-pci loaded');
    t.is(new Set(fixture.devices.map((d) => d.address)).size, fixture.devices.length, 'addresses are unique');
  });
}

test('parseFixture fills the defaults of the reference host', (t) => {
  const fixture = parseFixture(fixtureCopy('reference-host'), 'reference-host');
  const bridge = fixture.devices.find((d) => d.address === '0000:00:01.1');
  t.deepEqual(bridge?.drm, []);
  t.deepEqual(bridge?.consumers, []);
  t.deepEqual(fixture.drivers['amdgpu'], { hangsOnUnbind: false, failsProbe: false });
  t.deepEqual(
    fixture.processes.map((p) => [p.pid, p.comm]),
    [
      [1187, 'Xorg'],
      [1502, 'gnome-shell'],
    ],
  );
});

test('parseFixture refuses a device address that appears twice', (t) => {
  const input = fixtureCopy('reference-host');
  input.devices.push({ ...deviceOf(input, '0000:0b:00.1') });
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(error.message, "Invalid simulated host 'my-host.json': device '0000:0b:00.1' appears twice");
});

test('parseFixture refuses a consumer that is not a device of the host', (t) => {
  const input = fixtureCopy('reference-host');
  deviceOf(input, '0000:0b:00.0').consumers = ['0000:0b:00.1', '0000:0b:00.5'];
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(error.message, "Invalid simulated host 'my-host.json': '0000:0b:00.0' names '0000:0b:00.5', which is not a device of this host");
});

test('parseFixture refuses a parent that is not a device of the host', (t) => {
  const input = fixtureCopy('reference-host');
  deviceOf(input, '0000:0b:00.0').parent = '0000:00:07.1';
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(error.message, "Invalid simulated host 'my-host.json': '0000:0b:00.0' names '0000:00:07.1', which is not a device of this host");
});

test('parseFixture refuses a consumer that is not a PCI address, naming its path', (t) => {
  const input = fixtureCopy('reference-host');
  deviceOf(input, '0000:0b:00.0').consumers = ['0b:00.1'];
  const index = input.devices.findIndex((d) => d.address === '0000:0b:00.0');
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(
    error.message,
    `Invalid simulated host 'my-host.json': devices.${index}.consumers.0: expected a PCI address like '0000:0b:00.0', got '0b:00.1'`,
  );
});

for (const field of ['driver', 'hostDriver', 'override'] as const) {
  test(`parseFixture refuses ${field === 'override' ? 'an' : 'a'} ${field} that is not in 'drivers'`, (t) => {
    const input = fixtureCopy('reference-host');
    deviceOf(input, '0000:0b:00.0')[field] = 'nvidia';
    const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
    t.is(error.message, "Invalid simulated host 'my-host.json': '0000:0b:00.0' uses driver 'nvidia', which is not in 'drivers'");
  });
}

const badClassCodes = ['0x3000', '030000', '0x03000G', '0X030000', '0x0300000'];

for (const code of badClassCodes) {
  test(`parseFixture refuses the class code '${code}', naming the device's path`, (t) => {
    const input = fixtureCopy('reference-host');
    const index = input.devices.findIndex((d) => d.address === '0000:0b:00.0');
    deviceOf(input, '0000:0b:00.0').class = code;
    const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
    t.is(error.message, `Invalid simulated host 'my-host.json': devices.${index}.class: expected a class code like '0x030000'`);
  });
}

test('parseFixture lists every schema problem with its path', (t) => {
  const input = fixtureCopy('nvidia-host');
  input.devices[0]!.vendor = '10DE';
  input.devices[1]!.class = 'bridge';
  const error = t.throws(() => parseFixture(input, 'nv.json'), { instanceOf: InvalidConfig });
  t.is(
    error.message,
    "Invalid simulated host 'nv.json': devices.0.vendor: expected four lowercase hex digits; devices.1.class: expected a class code like '0x030000'",
  );
});

test('parseFixture refuses a document that is not a fixture at all', (t) => {
  const error = t.throws(() => parseFixture(null, 'empty.json'), { instanceOf: InvalidConfig });
  t.is(error.message, "Invalid simulated host 'empty.json': (top): Invalid type: Expected Object but received null");
  const missing = t.throws(() => parseFixture({}, 'empty.json'), { instanceOf: InvalidConfig });
  t.regex(missing.message, /^Invalid simulated host 'empty\.json': name: .*; description: .*; drivers: .*; devices: /);
});

test('parseFixture refuses a process comm longer than the kernel keeps', (t) => {
  const input = fixtureCopy('reference-host');
  input.processes = [{ pid: 4242, comm: 'looking-glass-client', fds: ['/dev/dri/card1'] }];
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.regex(error.message, /^Invalid simulated host 'my-host\.json': processes\.0\.comm: /);
});

test('parseFixture fills the input devices of a USB controller, and none elsewhere', (t) => {
  const fixture = parseFixture(fixtureCopy('chipset-host'), 'chipset-host');
  t.deepEqual(fixture.devices.find((d) => d.address === '0000:03:00.1')?.input, [
    { name: 'CHERRY USB keyboard', kind: 'keyboard' },
    { name: 'Logitech USB Optical Mouse', kind: 'mouse' },
  ]);
  t.deepEqual(fixture.devices.find((d) => d.address === '0000:01:00.0')?.input, []);
});

const badInputs: [string, unknown, string][] = [
  ['an unknown kind', { name: 'Wacom Intuos', kind: 'tablet' }, "kind: expected one of 'keyboard', 'mouse', 'gamepad'"],
  ['a missing kind', { name: 'CHERRY USB keyboard' }, 'kind: Invalid key: Expected "kind" but received undefined'],
  [
    'a name with a newline',
    { name: 'evil\nname', kind: 'keyboard' },
    'name: expected a device name of 1 to 80 characters without control characters',
  ],
  ['an empty name', { name: '', kind: 'mouse' }, 'name: expected a device name of 1 to 80 characters without control characters'],
  [
    'a name longer than 80 characters',
    { name: 'k'.repeat(81), kind: 'keyboard' },
    'name: expected a device name of 1 to 80 characters without control characters',
  ],
];

for (const [what, entry, problem] of badInputs) {
  test(`parseFixture refuses an input device with ${what}, naming its path`, (t) => {
    const input = fixtureCopy('chipset-host');
    const index = input.devices.findIndex((d) => d.address === '0000:03:00.1');
    (deviceOf(input, '0000:03:00.1') as { input: unknown[] }).input = [entry];
    const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
    t.is(error.message, `Invalid simulated host 'my-host.json': devices.${index}.input.0.${problem}`);
  });
}

test('parseFixture refuses input devices on a device that is not a USB controller', (t) => {
  const input = fixtureCopy('chipset-host');
  deviceOf(input, '0000:01:00.0').input = [{ name: 'CHERRY USB keyboard', kind: 'keyboard' }];
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(
    error.message,
    "Invalid simulated host 'my-host.json': '0000:01:00.0' has input devices but class '0x030000'; only a USB controller (class 0x0c03xx) carries them",
  );
});

test('parseFixture refuses input devices on a USB controller without a host driver', (t) => {
  const input = fixtureCopy('chipset-host');
  delete deviceOf(input, '0000:03:00.1').driver;
  const error = t.throws(() => parseFixture(input, 'my-host.json'), { instanceOf: InvalidConfig });
  t.is(
    error.message,
    "Invalid simulated host 'my-host.json': '0000:03:00.1' has input devices but no host driver to create them; set 'driver' or 'hostDriver'",
  );
});
