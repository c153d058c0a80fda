import { readFileSync } from 'node:fs';

import test from 'ava';

import { InvalidArgs, InvalidConfig } from '../../lib/errors.js';
import {
  DEFAULT_WRITE_TIMEOUT_MS,
  emptyConfig,
  formatDuration,
  parseConfig,
  parseDuration,
  parseFileMode,
  parseShmMode,
  type Config,
  type VmSettings,
} from '../../lib/config/index.js';
import { validateUnitName } from '../../lib/names/index.js';

const MiB = 1024 * 1024;
const FILE = '/etc/vfio-hookd/vfio-hookd.toml';
const EXAMPLE = readFileSync(new URL('../../lib/config/example.toml', import.meta.url), 'utf8');

function vm(name: string, overrides: Partial<VmSettings> = {}): VmSettings {
  return {
    name,
    devices: [],
    user: null,
    force: false,
    removeShmOnStop: false,
    hold: 'vm',
    onBusy: 'refuse',
    stopUnits: [],
    busyTimeoutMs: 10_000,
    singleGpu: false,
    hostCpus: null,
    hugepages: null,
    resetMethods: [],
    lookingGlass: null,
    scream: null,
    units: [],
    ...overrides,
  };
}

function only(config: Config): VmSettings {
  t_assert(config.vms.size === 1, `expected one VM, got ${config.vms.size}`);
  return [...config.vms.values()][0]!;
}

function t_assert(ok: boolean, message: string): void {
  if (!ok) throw new Error(message);
}

// --- good files ---

test('an empty file is an empty configuration with the daemon defaults', (t) => {
  t.deepEqual(parseConfig('', FILE), emptyConfig());
  t.deepEqual(parseConfig('# nothing here\n\n', FILE), {
    daemon: { qemuUser: null, writeTimeoutMs: DEFAULT_WRITE_TIMEOUT_MS },
    vms: new Map(),
    warnings: [],
  });
});

test('the shipped example.toml parses to what its comments say', (t) => {
  const config = parseConfig(EXAMPLE, 'example.toml');
  t.deepEqual(config.daemon, { qemuUser: 'libvirt-qemu', writeTimeoutMs: 10_000 });
  t.deepEqual(
    only(config),
    vm('win10', {
      devices: ['0000:0b:00.0'],
      user: 'alex',
      units: ['looking-glass-client@looking-glass.service', 'scream-receiver@scream.service'],
      lookingGlass: {
        name: 'looking-glass',
        sizeBytes: 64 * MiB,
        resolution: '2560x1440',
        hdr: false,
        group: 'qemu-libvirtd',
        mode: 0o660,
        kvmfr: 'auto',
      },
      scream: { name: 'scream', sizeBytes: 2 * MiB, group: 'qemu-libvirtd', mode: 0o660 },
    }),
  );
});

const goodVms: ReadonlyArray<readonly [string, string, VmSettings]> = [
  [
    "the blog's reference host, short PCI address",
    `
[vm.win10]
devices = ["0b:00.0"]
user = "alex"
[vm.win10.looking-glass]
resolution = "1920x1080"
group = "qemu-libvirtd"
[vm.win10.scream]
`,
    vm('win10', {
      devices: ['0000:0b:00.0'],
      user: 'alex',
      lookingGlass: {
        name: 'looking-glass',
        sizeBytes: 32 * MiB,
        resolution: '1920x1080',
        hdr: false,
        group: 'qemu-libvirtd',
        mode: 0o660,
        kvmfr: 'auto',
      },
      scream: { name: 'scream', sizeBytes: 2 * MiB, group: null, mode: 0o660 },
    }),
  ],
  ['a quoted VM name with a space', '[vm."Windows 10"]\nforce = true\n', vm('Windows 10', { force: true })],
  ['a literal-quoted VM name', "[vm.'win.10']\nremove-shm-on-stop = true\n", vm('win.10', { removeShmOnStop: true })],
  ['an empty VM table (devices come from the XML)', '[vm.win10]\n', vm('win10')],
  [
    'hold = "boot" with its devices',
    '[vm.win10]\ndevices = ["0b:00.0"]\nhold = "boot"\n',
    vm('win10', { devices: ['0000:0b:00.0'], hold: 'boot' }),
  ],
  ['hold = "vm", the default, said aloud', '[vm.win10]\nhold = "vm"\n', vm('win10')],
  [
    'inline tables',
    '[vm.win10]\nlooking-glass = { size = "64MiB", mode = "600" }\nscream = { size = "4M", name = "audio" }\n',
    vm('win10', {
      lookingGlass: { name: 'looking-glass', sizeBytes: 64 * MiB, resolution: null, hdr: false, group: null, mode: 0o600, kvmfr: 'auto' },
      scream: { name: 'audio', sizeBytes: 4 * MiB, group: null, mode: 0o660 },
    }),
  ],
  [
    'dotted keys',
    'vm.win10.looking-glass.resolution = "3840x2160"\nvm.win10.looking-glass.hdr = true\n',
    vm('win10', {
      lookingGlass: {
        name: 'looking-glass',
        sizeBytes: 256 * MiB,
        resolution: '3840x2160',
        hdr: true,
        group: null,
        mode: 0o660,
        kvmfr: 'auto',
      },
    }),
  ],
  [
    'numeric user and group ids',
    '[vm.win10]\nuser = "1000"\n[vm.win10.looking-glass]\nsize = "32M"\ngroup = "78"\n',
    vm('win10', {
      user: '1000',
      lookingGlass: { name: 'looking-glass', sizeBytes: 32 * MiB, resolution: null, hdr: false, group: '78', mode: 0o660, kvmfr: 'auto' },
    }),
  ],
  [
    'CRLF line endings and comments everywhere',
    '# top\r\n[vm.win10] # a VM\r\ndevices = [ # the GPU\r\n  "0000:0b:00.0", # video\r\n  "0000:0b:00.1", # audio\r\n]\r\n',
    vm('win10', {
      devices: ['0000:0b:00.0', '0000:0b:00.1'],
    }),
  ],
  [
    'units without a user (the metadata may give one; merge checks)',
    '[vm.win10]\nunits = ["a.service"]\n',
    vm('win10', { units: ['a.service'] }),
  ],
  [
    'a Scream table with its own group and mode',
    '[vm.win10]\nuser = "alex"\n[vm.win10.scream]\ngroup = "qemu-libvirtd"\nmode = "0600"\n',
    vm('win10', {
      user: 'alex',
      scream: { name: 'scream', sizeBytes: 2 * MiB, group: 'qemu-libvirtd', mode: 0o600 },
    }),
  ],
  [
    'a template unit with its instance',
    '[vm.win10]\nuser = "alex"\nunits = ["looking-glass-client@lg.service", "scream.target"]\n',
    vm('win10', {
      user: 'alex',
      units: ['looking-glass-client@lg.service', 'scream.target'],
    }),
  ],
];

for (const [label, text, expected] of goodVms) {
  test(`parses ${label}`, (t) => {
    t.deepEqual(only(parseConfig(text, FILE)), expected);
  });
}

const goodDaemons: ReadonlyArray<readonly [string, Config['daemon']]> = [
  ['[daemon]\n', { qemuUser: null, writeTimeoutMs: 10_000 }],
  ['[daemon]\nqemu-user = "qemu"\n', { qemuUser: 'qemu', writeTimeoutMs: 10_000 }],
  ['[daemon]\nwrite-timeout = "500ms"\n', { qemuUser: null, writeTimeoutMs: 500 }],
  ['[daemon]\nwrite-timeout = "2m"\n', { qemuUser: null, writeTimeoutMs: 120_000 }],
  ['[daemon]\nwrite-timeout = "100ms"\n', { qemuUser: null, writeTimeoutMs: 100 }],
  ['[daemon]\nwrite-timeout = "10m"\n', { qemuUser: null, writeTimeoutMs: 600_000 }],
];

for (const [text, expected] of goodDaemons) {
  test(`parses the daemon table ${JSON.stringify(text)}`, (t) => {
    t.deepEqual(parseConfig(text, FILE).daemon, expected);
  });
}

test('several VMs keep their names and order', (t) => {
  const config = parseConfig('[vm.b]\n[vm.a]\n[vm."c d"]\n', FILE);
  t.deepEqual([...config.vms.keys()], ['b', 'a', 'c d']);
});

// --- bad files: the exact message, with line and column ---

const F = FILE;
const badFiles: ReadonlyArray<readonly [string, string, string]> = [
  // TOML syntax: smol-toml's position and reason.
  ['an unterminated string', '[vm.win10]\nuser = "alex\n', `${F}:2:13: invalid TOML: control characters are not allowed in strings`],
  ['a missing value', '[vm.win10]\nuser =\n', `${F}:2:7: invalid TOML: invalid value`],
  [
    'a key defined twice',
    '[vm.win10]\nuser = "a"\nuser = "b"\n',
    `${F}:3:1: invalid TOML: trying to redefine an already defined table or value`,
  ],
  [
    'a hold that is neither vm nor boot',
    '[vm.win10]\ndevices = ["0b:00.0"]\nhold = "always"\n',
    `${F}:3:8: vm.win10.hold: expected "vm" (while the VM runs) or "boot" (from vfio-hookd's start on), got string 'always'`,
  ],
  [
    'hold = "boot" without devices in the table',
    '[vm.win10]\nhold = "boot"\n',
    `${F}:2:8: vm.win10.hold: hold = "boot" needs devices listed here: vfio-hookd takes them at its start, before any domain XML is read`,
  ],
  ['a table defined twice', '[vm.win10]\n[vm.win10]\n', `${F}:2:2: invalid TOML: trying to redefine an already defined table or value`],
  // The example from the design: a bad mode, pointed at its value.
  [
    'a mode that is not octal',
    '[vm.win10]\ndevices = ["0000:0b:00.0"]\nuser = "alex"\n\n[vm.win10.looking-glass]\nresolution = "2560x1440"\nmode = "0669"\n',
    `${F}:7:8: vm.win10.looking-glass.mode: invalid mode '0669': expected an octal mode like '0660'`,
  ],
  [
    'a mode with set-id bits',
    '[vm.win10.looking-glass]\nsize = "32M"\nmode = "4660"\n',
    `${F}:3:8: vm.win10.looking-glass.mode: invalid mode '4660': only permission bits are allowed (at most '0777'), no set-id or sticky bits`,
  ],
  [
    'an unquoted mode',
    '[vm.win10.looking-glass]\nsize = "32M"\nmode = 0o660\n',
    `${F}:3:8: vm.win10.looking-glass.mode: expected a string, got integer 432`,
  ],
  // shm modes: nobody else may write the guest's screen or sound, nothing executes a shm file.
  [
    'a Looking Glass mode writable by others',
    '[vm.win10.looking-glass]\nsize = "32M"\nmode = "0666"\n',
    `${F}:3:8: vm.win10.looking-glass.mode: invalid mode '0666': other users could write to it, and so into the guest's screen or sound; use '0660'`,
  ],
  [
    'a Looking Glass mode with an execute bit',
    '[vm.win10.looking-glass]\nsize = "32M"\nmode = "0670"\n',
    `${F}:3:8: vm.win10.looking-glass.mode: invalid mode '0670': execute bits mean nothing on a shared memory file and only widen what it allows; use '0660'`,
  ],
  [
    'a Scream mode with both',
    '[vm.win10.scream]\nmode = "777"\n',
    `${F}:2:8: vm.win10.scream.mode: invalid mode '777': other users could write to it, and so into the guest's screen or sound; ` +
      "execute bits mean nothing on a shared memory file and only widen what it allows; use '0660'",
  ],
  [
    'a Scream mode with only an owner execute bit',
    '[vm.win10.scream]\nmode = "0740"\n',
    `${F}:2:8: vm.win10.scream.mode: invalid mode '0740': execute bits mean nothing on a shared memory file and only widen what it allows; use '0640'`,
  ],
  [
    'a Scream group starting with a dash',
    '[vm.win10.scream]\ngroup = "-audio"\n',
    `${F}:2:9: vm.win10.scream.group: invalid group name '-audio': must not start with '-'`,
  ],
  // Unknown keys, at the key, with a suggestion when one is close.
  ['a misspelt key', '[vm.win10]\nusr = "alex"\n', `${F}:2:1: vm.win10.usr: unknown key 'usr'; did you mean 'user'?`],
  [
    'an underscore for a dash',
    '[vm.win10]\nremove_shm_on_stop = true\n',
    `${F}:2:1: vm.win10.remove_shm_on_stop: unknown key 'remove_shm_on_stop'; did you mean 'remove-shm-on-stop'?`,
  ],
  ['an unknown key with nothing close', '[vm.win10]\ncolour = "blue"\n', `${F}:2:1: vm.win10.colour: unknown key 'colour'`],
  [
    'a misspelt table',
    '[vm.win10.lookingglass]\nsize = "32M"\n',
    `${F}:1:11: vm.win10.lookingglass: unknown key 'lookingglass'; did you mean 'looking-glass'?`,
  ],
  ['a misspelt top-level table', '[vms.win10]\n', `${F}:1:2: vms: unknown key 'vms'; did you mean 'vm'?`],
  [
    'an unknown key in an inline table',
    '[vm.win10]\nscream = { size = "2M", nmae = "s" }\n',
    `${F}:2:25: vm.win10.scream.nmae: unknown key 'nmae'; did you mean 'name'?`,
  ],
  // Values.
  [
    'an invalid PCI address in an array',
    '[vm.win10]\ndevices = [\n  "0000:0b:00.0",\n  "0b:00",\n]\n',
    `${F}:4:3: vm.win10.devices[1]: invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)`,
  ],
  [
    'a device listed twice in one VM',
    '[vm.win10]\ndevices = ["0000:0b:00.0", "0b:00.0"]\n',
    `${F}:2:28: vm.win10.devices[1]: device '0000:0b:00.0' is listed twice (also devices[0]); list it once`,
  ],
  [
    'devices that is not an array',
    '[vm.win10]\ndevices = "0000:0b:00.0"\n',
    `${F}:2:11: vm.win10.devices: expected an array, got string '0000:0b:00.0'`,
  ],
  ['a boolean as a string', '[vm.win10]\nforce = "yes"\n', `${F}:2:9: vm.win10.force: expected true or false, got string 'yes'`],
  [
    'a user name with a colon',
    '[vm.win10]\nuser = "alex:x"\n',
    `${F}:2:8: vm.win10.user: invalid user name 'alex:x': must not contain ':', '/', spaces or control characters`,
  ],
  [
    'a group name starting with a dash',
    '[vm.win10.looking-glass]\nsize = "32M"\ngroup = "-kvm"\n',
    `${F}:3:9: vm.win10.looking-glass.group: invalid group name '-kvm': must not start with '-'`,
  ],
  [
    'a resolution and a size',
    '[vm.win10.looking-glass]\nresolution = "1920x1080"\nsize = "32M"\n',
    `${F}:3:8: vm.win10.looking-glass.size: set either resolution or size, not both`,
  ],
  [
    'neither resolution nor size',
    '[vm.win10]\nuser = "alex"\n\n[vm.win10.looking-glass]\ngroup = "kvm"\n',
    `${F}:4:1: vm.win10.looking-glass: needs resolution (e.g. resolution = "2560x1440") or size (e.g. size = "64M")`,
  ],
  [
    'hdr with a size',
    '[vm.win10.looking-glass]\nsize = "64M"\nhdr = true\n',
    `${F}:3:7: vm.win10.looking-glass.hdr: hdr only applies with resolution; with size = '64M' the size is already final, remove hdr`,
  ],
  [
    'a bad resolution',
    '[vm.win10.looking-glass]\nresolution = "2560*1440"\n',
    `${F}:2:14: vm.win10.looking-glass.resolution: invalid resolution '2560*1440': expected WIDTHxHEIGHT in pixels, e.g. '2560x1440'`,
  ],
  [
    'a Looking Glass size that is not a power of two',
    '[vm.win10.looking-glass]\nsize = "48M"\n',
    `${F}:2:8: vm.win10.looking-glass.size: invalid Looking Glass size '48M': must be a power of two of at least 1M (it becomes a PCI BAR); use '64M'`,
  ],
  [
    'a decimal size unit',
    '[vm.win10.looking-glass]\nsize = "64MB"\n',
    `${F}:2:8: vm.win10.looking-glass.size: invalid size '64MB': decimal units are not accepted, sizes are binary; use '64M' for 64 MiB`,
  ],
  [
    'a Scream size that is not a power of two',
    '[vm.win10.scream]\nsize = "3M"\n',
    `${F}:2:8: vm.win10.scream.size: invalid Scream size '3M': must be a power of two; use '2M' (the Scream default)`,
  ],
  [
    'a shm name with a slash',
    '[vm.win10.scream]\nname = "../scream"\n',
    `${F}:2:8: vm.win10.scream.name: invalid shared memory name '../scream': must not contain '/'; use a plain file name such as 'looking-glass'`,
  ],
  [
    'Looking Glass and Scream on one file',
    '[vm.win10.looking-glass]\nsize = "32M"\nname = "shm"\n[vm.win10.scream]\nname = "shm"\n',
    `${F}:5:8: vm.win10.scream.name: Looking Glass and Scream would share the shm file 'shm'; give them different names`,
  ],
  [
    'a bare template unit',
    '[vm.win10]\nuser = "alex"\nunits = ["looking-glass-client@.service"]\n',
    `${F}:3:10: vm.win10.units[0]: invalid unit name 'looking-glass-client@.service': a template needs an instance, e.g. 'looking-glass-client@looking-glass.service'`,
  ],
  [
    'a unit of an unknown type',
    '[vm.win10]\nuser = "alex"\nunits = ["x.device"]\n',
    `${F}:3:10: vm.win10.units[0]: invalid unit name 'x.device': the type must be one of '.service', '.socket', '.target', '.timer', '.path'`,
  ],
  ['a VM name with a slash', '[vm."a/b"]\n', `${F}:1:5: vm."a/b": invalid VM name 'a/b': must not contain '/'`],
  ['an empty VM name', '[vm.""]\n', `${F}:1:5: vm."": invalid VM name '': must not be empty`],
  [
    'a VM name with a control character',
    '[vm."a\\u0007b"]\n',
    `${F}:1:5: vm."a\\u0007b": invalid VM name 'a\\x07b': must not contain control characters`,
  ],
  ['a VM that is not a table', '[vm]\nwin10 = "yes"\n', `${F}:2:9: vm.win10: expected a table, got string 'yes'`],
  ['vm that is not a table', 'vm = ["win10"]\n', `${F}:1:6: vm: expected tables of VMs ([vm.NAME]), got an array`],
  ['a datetime where a table belongs', '[vm]\nwin10 = 1979-05-27\n', `${F}:2:9: vm.win10: expected a table, got datetime 1979-05-27`],
  [
    'a duration without unit',
    '[daemon]\nwrite-timeout = "10"\n',
    `${F}:2:17: daemon.write-timeout: invalid duration '10': expected a whole number and a unit (ms, s, m, h), e.g. '10s', '500ms' or '2m'`,
  ],
  [
    'a duration out of range',
    '[daemon]\nwrite-timeout = "1h"\n',
    `${F}:2:17: daemon.write-timeout: invalid write timeout '1h': must be from 100ms to 10m`,
  ],
  [
    'a fractional duration',
    '[daemon]\nwrite-timeout = "1.5s"\n',
    `${F}:2:17: daemon.write-timeout: invalid duration '1.5s': expected a whole number and a unit (ms, s, m, h), e.g. '10s', '500ms' or '2m'`,
  ],
];

for (const [label, text, message] of badFiles) {
  test(`refuses ${label}`, (t) => {
    t.throws(() => parseConfig(text, FILE), { instanceOf: InvalidConfig, message });
  });
}

test('refuses the same device in two VMs, naming both and where the first is', (t) => {
  const text = '[vm.win10]\ndevices = ["0000:0b:00.0"]\n\n[vm.linux]\ndevices = ["0000:0a:00.0", "0b:00.0"]\n';
  t.throws(() => parseConfig(text, FILE), {
    instanceOf: InvalidConfig,
    message: `${F}:5:28: vm.linux.devices[1]: device '0000:0b:00.0' is also in VM 'win10' (line 2); a device belongs to one VM, remove it from one of them`,
  });
});

test('reports every problem of the file at once, a line each, in file order', (t) => {
  const text = [
    '[daemon]',
    'write-timeout = 10',
    '[vm.win10]',
    'usr = "alex"',
    'devices = ["zz"]',
    '[vm.win10.looking-glass]',
    'mode = "999"',
    '[vm."x/y"]',
  ].join('\n');
  const error = t.throws(() => parseConfig(text, FILE), { instanceOf: InvalidConfig });
  t.deepEqual(error.message.split('\n'), [
    `${F}:2:17: daemon.write-timeout: expected a string, got integer 10`,
    `${F}:4:1: vm.win10.usr: unknown key 'usr'; did you mean 'user'?`,
    `${F}:5:12: vm.win10.devices[0]: invalid PCI address 'zz': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)`,
    `${F}:7:8: vm.win10.looking-glass.mode: invalid mode '999': expected an octal mode like '0660'`,
    `${F}:8:5: vm."x/y": invalid VM name 'x/y': must not contain '/'`,
  ]);
});

// --- warnings: accepted, but said ---

test('a shm mode readable by others is accepted with a warning for each file, pointed at its value', (t) => {
  const text = '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nsize = "32M"\nmode = "0664"\n[vm.win10.scream]\nmode = "0604"\n';
  const config = parseConfig(text, FILE);
  t.is(config.vms.get('win10')?.lookingGlass?.mode, 0o664);
  t.is(config.vms.get('win10')?.scream?.mode, 0o604);
  t.deepEqual(config.warnings, [
    `${F}:5:8: vm.win10.looking-glass.mode: mode '0664' lets every user on the host read the shared memory file ` +
      "(Looking Glass frames are the guest's screen); use '0660' unless that is intended, ignoring",
    `${F}:7:8: vm.win10.scream.mode: mode '0604' lets every user on the host read the shared memory file ` +
      "(Scream carries the guest's sound); use '0600' unless that is intended, ignoring",
  ]);
});

test('modes that others cannot read give no warning, nor does the example', (t) => {
  for (const mode of ['0660', '0640', '0600', '0620', '0000']) {
    t.deepEqual(parseConfig(`[vm.win10.looking-glass]\nsize = "32M"\nmode = "${mode}"\n`, FILE).warnings, [], mode);
  }
  t.deepEqual(parseConfig(EXAMPLE, 'example.toml').warnings, []);
});

test('a file with an error reports the error, not its warnings', (t) => {
  t.throws(() => parseConfig('[vm.win10.looking-glass]\nsize = "32M"\nmode = "0664"\n[vm.win10.scream]\nsize = "3M"\n', FILE), {
    instanceOf: InvalidConfig,
    message: `${F}:5:8: vm.win10.scream.size: invalid Scream size '3M': must be a power of two; use '2M' (the Scream default)`,
  });
});

// --- the small value parsers ---

const durations: ReadonlyArray<readonly [string, number]> = [
  ['1ms', 1],
  ['500ms', 500],
  ['10s', 10_000],
  ['2m', 120_000],
  ['1h', 3_600_000],
];
for (const [text, ms] of durations) {
  test(`parseDuration('${text}') is ${ms} ms and formats back`, (t) => {
    t.is(parseDuration(text), ms);
    t.is(parseDuration(formatDuration(ms)), ms);
  });
}

test('parseDuration refuses zero, bare numbers, spaces and unknown units', (t) => {
  for (const text of ['0s', '10', '10 s', '10sec', '-1s', '1d', '']) t.throws(() => parseDuration(text), { message: /^Invalid duration/ });
});

test('parseFileMode accepts 3 and 4 octal digits up to 0777', (t) => {
  t.is(parseFileMode('660'), 0o660);
  t.is(parseFileMode('0660'), 0o660);
  t.is(parseFileMode('0777'), 0o777);
  t.is(parseFileMode('000'), 0);
  for (const text of ['66', '06600', '0o660', '0x1b6', '1777', '']) t.throws(() => parseFileMode(text), { message: /^Invalid mode/ });
});

const shmModes: ReadonlyArray<readonly [string, number | string]> = [
  ['0660', 0o660],
  ['0600', 0o600],
  ['0640', 0o640],
  ['0664', 0o664],
  ['0644', 0o644],
  ['0000', 0],
  ['0662', "Invalid mode '0662': other users could write to it, and so into the guest's screen or sound; use '0660'"],
  ['0760', "Invalid mode '0760': execute bits mean nothing on a shared memory file and only widen what it allows; use '0660'"],
  ['0100', "Invalid mode '0100': execute bits mean nothing on a shared memory file and only widen what it allows; use '0600'"],
  ['0755', "Invalid mode '0755': execute bits mean nothing on a shared memory file and only widen what it allows; use '0640'"],
  ['0669', "Invalid mode '0669': expected an octal mode like '0660'"],
];
for (const [text, expected] of shmModes) {
  test(`parseShmMode('${text}') ${typeof expected === 'number' ? 'accepts it' : 'refuses it'}`, (t) => {
    if (typeof expected === 'number') t.is(parseShmMode(text), expected);
    else t.throws(() => parseShmMode(text), { instanceOf: InvalidArgs, message: expected });
  });
}

test('validateUnitName accepts the unit types a user session starts', (t) => {
  for (const name of ['a.service', 'a.socket', 'a.target', 'a.timer', 'a.path', 'a@b.service', 'a\\x2db:c_d.e.service']) {
    t.is(validateUnitName(name), name);
  }
  for (const name of ['', 'a', '.service', 'a b.service', 'a/b.service', 'a.scope', `${'x'.repeat(250)}.service`]) {
    t.throws(() => validateUnitName(name), { message: /^Invalid unit name/ });
  }
});
