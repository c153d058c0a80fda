import { readFileSync } from 'node:fs';

import test from 'ava';

import { InvalidArgs, InvalidConfig } from '../../lib/errors.js';
import { hugepagesNotes, mergeVmSettings, parseConfig, vmSettingsWarnings, type VmSettings } from '../../lib/config/index.js';
import { VFIO_XMLNS, parseDomainXml, type DomainInfo } from '../../lib/domain/index.js';

const MiB = 1024 * 1024;
const WIN10 = readFileSync(new URL('../fixtures/domains/win10.xml', import.meta.url), 'utf8');

/** The reference domain, with `<vfio:vm>` metadata when given, after `edit`. */
function xml(metadata: string | null = null, edit: (text: string) => string = (x) => x): DomainInfo {
  let text = edit(WIN10);
  if (metadata !== null) {
    text = text.replace('</metadata>', `<vfio:vm xmlns:vfio="${VFIO_XMLNS}">${metadata}</vfio:vm>\n  </metadata>`);
  }
  return parseDomainXml(text);
}

/** The `[vm.win10]` table of a configuration text. */
function table(text: string): VmSettings {
  const settings = parseConfig(text, 'test.toml').vms.get('win10');
  if (settings === undefined) throw new Error('no [vm.win10] in the test text');
  return settings;
}

const REFERENCE = `
[vm.win10]
devices = ["0b:00.0"]
user = "alex"
[vm.win10.looking-glass]
resolution = "1920x1080"
group = "qemu-libvirtd"
[vm.win10.scream]
`;

// --- managed or not ---

test('a VM with neither a table nor metadata is not managed, even with managed=no hostdevs and shmems', (t) => {
  const info = xml();
  t.is(info.hostdevs.length, 2);
  t.is(mergeVmSettings(undefined, info), null);
});

test('an empty <vfio:vm/> opts the VM in, and its managed=no hostdevs become its devices', (t) => {
  t.deepEqual(mergeVmSettings(undefined, xml('')), {
    name: 'win10',
    devices: ['0000:0b:00.0', '0000:0b:00.1'],
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
  });
});

// --- the file alone ---

test('the reference host: the audio function joins from the XML, sizes agree', (t) => {
  t.deepEqual(mergeVmSettings(table(REFERENCE), xml()), {
    name: 'win10',
    devices: ['0000:0b:00.0', '0000:0b:00.1'],
    user: 'alex',
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
    units: [],
  });
});

test('refuses a Looking Glass size that disagrees with the <shmem> size, before QEMU sees it', (t) => {
  const config = table(REFERENCE.replace('1920x1080', '2560x1440'));
  t.throws(() => mergeVmSettings(config, xml()), {
    instanceOf: InvalidConfig,
    message: "VM 'win10': <shmem name='looking-glass'> is 32M in the domain XML but 64M in the configuration (2560x1440); make them agree",
  });
});

test('an HDR resolution shows in the size message; an explicit size shows no resolution', (t) => {
  const hdr = table(REFERENCE.replace('resolution = "1920x1080"', 'resolution = "1920x1080"\nhdr = true'));
  t.throws(() => mergeVmSettings(hdr, xml()), {
    instanceOf: InvalidConfig,
    message:
      "VM 'win10': <shmem name='looking-glass'> is 32M in the domain XML but 64M in the configuration (1920x1080 HDR); make them agree",
  });
  const sized = table(REFERENCE.replace('resolution = "1920x1080"', 'size = "128M"'));
  t.throws(() => mergeVmSettings(sized, xml()), {
    instanceOf: InvalidConfig,
    message: "VM 'win10': <shmem name='looking-glass'> is 32M in the domain XML but 128M in the configuration; make them agree",
  });
});

test('refuses a Scream size that disagrees, and reports both shm problems together', (t) => {
  const config = table(REFERENCE.replace('1920x1080', '3840x2160').replace('[vm.win10.scream]', '[vm.win10.scream]\nsize = "4M"'));
  const error = t.throws(() => mergeVmSettings(config, xml()), { instanceOf: InvalidConfig });
  t.deepEqual(error.message.split('\n'), [
    "VM 'win10': <shmem name='looking-glass'> is 32M in the domain XML but 128M in the configuration (3840x2160); make them agree",
    "VM 'win10': <shmem name='scream'> is 2M in the domain XML but 4M in the configuration; make them agree",
  ]);
});

test('a <shmem> in libvirt decimal units is compared in bytes', (t) => {
  // 32MB is 32,000,000 bytes: not 32 MiB, so QEMU would refuse the file.
  const info = xml(null, (text) => text.replace("<size unit='M'>32</size>", "<size unit='MB'>32</size>"));
  t.throws(() => mergeVmSettings(table(REFERENCE), info), {
    instanceOf: InvalidConfig,
    message:
      "VM 'win10': <shmem name='looking-glass'> is 32000000 bytes in the domain XML but 32M in the configuration (1920x1080); make them agree",
  });
});

test('a <shmem> without <size> or of another name is not compared', (t) => {
  const noSize = xml(null, (text) => text.replace("<size unit='M'>32</size>", ''));
  t.is(mergeVmSettings(table(REFERENCE.replace('1920x1080', '2560x1440')), noSize)?.lookingGlass?.sizeBytes, 64 * MiB);
  const renamed = table(REFERENCE.replace('group = "qemu-libvirtd"', 'name = "lg-other"'));
  t.is(mergeVmSettings(renamed, xml())?.lookingGlass?.name, 'lg-other');
});

test("refuses a configured device that is <hostdev managed='yes'>: one writer per device", (t) => {
  const info = xml(null, (text) => text.replace("managed='no'", "managed='yes'"));
  t.throws(() => mergeVmSettings(table(REFERENCE), info), {
    instanceOf: InvalidConfig,
    message:
      "VM 'win10': device '0000:0b:00.0' is <hostdev managed='yes'> in the domain XML, so libvirt would detach it too; set managed='no' and let vfio-hookd detach it",
  });
});

test("a <hostdev managed='yes'> that is not configured stays libvirt's and is not added", (t) => {
  const info = xml(null, (text) =>
    text.replace(/managed='no'>(\s*<source>\s*<address domain='0x0000' bus='0x0b' slot='0x00' function='0x1')/, "managed='yes'>$1"),
  );
  t.deepEqual(
    info.hostdevs.map((h) => h.managed),
    [false, true],
  );
  t.deepEqual(mergeVmSettings(table(REFERENCE), info)?.devices, ['0000:0b:00.0']);
});

test('a configured device absent from the XML is kept (vfio-hookd owns devices not in the XML too)', (t) => {
  const config = table(REFERENCE.replace('devices = ["0b:00.0"]', 'devices = ["0000:0c:00.0"]'));
  t.deepEqual(mergeVmSettings(config, xml())?.devices, ['0000:0c:00.0', '0000:0b:00.0', '0000:0b:00.1']);
});

test('refuses settings of another VM (a caller bug)', (t) => {
  const other = parseConfig('[vm.linux]\n', 'test.toml').vms.get('linux')!;
  t.throws(() => mergeVmSettings(other, xml()), {
    instanceOf: InvalidArgs,
    message: "Cannot merge the settings of VM 'linux' with the domain XML of VM 'win10'",
  });
});

// --- metadata alone, and with the file ---

test('metadata alone gives validated, normalised settings with the defaults', (t) => {
  const merged = mergeVmSettings(
    undefined,
    xml(`
    <vfio:device address='0b:00.0'/>
    <vfio:user>alex</vfio:user>
    <vfio:looking-glass resolution='1920x1080' mode='0600'/>
    <vfio:scream/>
    <vfio:unit>looking-glass-client.service</vfio:unit>`),
  );
  t.deepEqual(merged, {
    name: 'win10',
    devices: ['0000:0b:00.0', '0000:0b:00.1'],
    user: 'alex',
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
    lookingGlass: {
      name: 'looking-glass',
      sizeBytes: 32 * MiB,
      resolution: '1920x1080',
      hdr: false,
      group: null,
      mode: 0o600,
      kvmfr: 'auto',
    },
    scream: { name: 'scream', sizeBytes: 2 * MiB, group: null, mode: 0o660 },
    units: ['looking-glass-client.service'],
  });
});

test('invalid metadata values are reported with the config key they mirror, all at once', (t) => {
  const info = xml("<vfio:device address='0b:00'/><vfio:looking-glass resolution='1920x1080' mode='0669'/>");
  const error = t.throws(() => mergeVmSettings(undefined, info), { instanceOf: InvalidConfig });
  t.deepEqual(error.message.split('\n'), [
    "Invalid vfio-hookd metadata in VM 'win10': devices[0]: invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)",
    "Invalid vfio-hookd metadata in VM 'win10': looking-glass.mode: invalid mode '0669': expected an octal mode like '0660'",
  ]);
});

test('metadata rules that span keys apply too', (t) => {
  t.throws(() => mergeVmSettings(undefined, xml("<vfio:looking-glass group='kvm'/>")), {
    instanceOf: InvalidConfig,
    message: `Invalid vfio-hookd metadata in VM 'win10': looking-glass: needs resolution (e.g. resolution = "2560x1440") or size (e.g. size = "64M")`,
  });
});

test('file and metadata combine: unions for devices and units, each other key from where it is set', (t) => {
  const file = table('[vm.win10]\ndevices = ["0000:0b:00.0"]\nuser = "alex"\nunits = ["a.service"]\n');
  const merged = mergeVmSettings(
    file,
    xml(`
    <vfio:device address='0000:0b:00.1'/>
    <vfio:remove-shm-on-stop>yes</vfio:remove-shm-on-stop>
    <vfio:looking-glass size='32M' group='kvm'/>
    <vfio:unit>a.service</vfio:unit>
    <vfio:unit>b.service</vfio:unit>`),
  );
  t.deepEqual(merged, {
    name: 'win10',
    devices: ['0000:0b:00.0', '0000:0b:00.1'],
    user: 'alex',
    force: false,
    removeShmOnStop: true,
    hold: 'vm',
    onBusy: 'refuse',
    stopUnits: [],
    busyTimeoutMs: 10_000,
    singleGpu: false,
    hostCpus: null,
    hugepages: null,
    resetMethods: [],
    lookingGlass: { name: 'looking-glass', sizeBytes: 32 * MiB, resolution: null, hdr: false, group: 'kvm', mode: 0o660, kvmfr: 'auto' },
    scream: null,
    units: ['a.service', 'b.service'],
  });
});

test('within Looking Glass, a resolution from one side and an equal size from the other agree', (t) => {
  const file = table(REFERENCE);
  const merged = mergeVmSettings(file, xml("<vfio:looking-glass size='32M' mode='0640'/>"));
  t.deepEqual(merged?.lookingGlass, {
    name: 'looking-glass',
    sizeBytes: 32 * MiB,
    resolution: '1920x1080',
    hdr: false,
    group: 'qemu-libvirtd',
    mode: 0o640,
    kvmfr: 'auto',
  });
});

test('a key explicitly set to its default counts as unset', (t) => {
  const file = table('[vm.win10]\nforce = false\n');
  t.true(mergeVmSettings(file, xml('<vfio:force>yes</vfio:force>'))?.force);
});

test('refuses keys set differently in the file and the metadata, naming both values, all at once', (t) => {
  const file = table(REFERENCE.replace('[vm.win10.scream]', '[vm.win10.scream]\nname = "audio"'));
  const info = xml("<vfio:user>bob</vfio:user><vfio:looking-glass size='64M' mode='0600'/><vfio:scream name='sound'/>", (text) =>
    text.replace("<size unit='M'>32</size>", "<size unit='M'>64</size>"),
  );
  const error = t.throws(() => mergeVmSettings(file, info), { instanceOf: InvalidConfig });
  t.deepEqual(error.message.split('\n'), [
    "VM 'win10': user is 'alex' in the configuration file but 'bob' in the domain XML <metadata>; set it in one place",
    "VM 'win10': looking-glass size is '32M' in the configuration file but '64M' in the domain XML <metadata>; set it in one place",
    "VM 'win10': scream.name is 'audio' in the configuration file but 'sound' in the domain XML <metadata>; set it in one place",
    "VM 'win10': <shmem name='looking-glass'> is 64M in the domain XML but 32M in the configuration (1920x1080); make them agree",
  ]);
});

test('Scream group and mode come from the metadata too, and conflict like any key', (t) => {
  const fromMeta = mergeVmSettings(table('[vm.win10]\nuser = "alex"\n'), xml("<vfio:scream group='qemu-libvirtd' mode='0600'/>"));
  t.deepEqual(fromMeta?.scream, { name: 'scream', sizeBytes: 2 * MiB, group: 'qemu-libvirtd', mode: 0o600 });

  const file = table('[vm.win10]\nuser = "alex"\n[vm.win10.scream]\ngroup = "kvm"\nmode = "0640"\n');
  t.deepEqual(mergeVmSettings(file, xml("<vfio:scream group='kvm'/>"))?.scream, {
    name: 'scream',
    sizeBytes: 2 * MiB,
    group: 'kvm',
    mode: 0o640,
  });
  const error = t.throws(() => mergeVmSettings(file, xml("<vfio:scream group='audio' mode='0600'/>")), { instanceOf: InvalidConfig });
  t.deepEqual(error.message.split('\n'), [
    "VM 'win10': scream.group is 'kvm' in the configuration file but 'audio' in the domain XML <metadata>; set it in one place",
    "VM 'win10': scream.mode is '0640' in the configuration file but '0600' in the domain XML <metadata>; set it in one place",
  ]);
});

test("metadata shm modes follow the file's rules: refused when others may write, a warning when they may read", (t) => {
  t.throws(() => mergeVmSettings(undefined, xml("<vfio:scream mode='0666'/>")), {
    instanceOf: InvalidConfig,
    message:
      "Invalid vfio-hookd metadata in VM 'win10': scream.mode: invalid mode '0666': other users could write to it, and so into the guest's screen or sound; use '0660'",
  });
  const merged = mergeVmSettings(undefined, xml("<vfio:user>alex</vfio:user><vfio:looking-glass size='32M' mode='0644'/><vfio:scream/>"));
  t.deepEqual(vmSettingsWarnings(merged!), [
    "VM 'win10': looking-glass.mode: mode '0644' lets every user on the host read the shared memory file " +
      "(Looking Glass frames are the guest's screen); use '0640' unless that is intended, ignoring",
  ]);
  t.deepEqual(vmSettingsWarnings(mergeVmSettings(table(REFERENCE), xml())!), []);
});

test('units need a user, from either source', (t) => {
  const file = table('[vm.win10]\nunits = ["looking-glass-client.service"]\n');
  t.throws(() => mergeVmSettings(file, xml()), {
    instanceOf: InvalidConfig,
    message: `VM 'win10': units need a user whose agent starts them; set user = "NAME" in the configuration file or <vfio:user> in the metadata`,
  });
  t.is(mergeVmSettings(file, xml('<vfio:user>alex</vfio:user>'))?.user, 'alex');
});

test('the host-tuning keys are file only: kept from the file when metadata is merged, refused in the metadata', (t) => {
  const file = table(
    '[vm.win10]\ndevices = ["0b:00.0"]\nhost-cpus = "0-1"\nhugepages = "4G"\nreset-method = { "0b:00.0" = "flr" }\n' +
      '[vm.win10.looking-glass]\nsize = "32M"\nkvmfr = "off"\n',
  );
  const merged = mergeVmSettings(file, xml("<vfio:looking-glass size='32M' mode='0640'/>"))!;
  t.like(merged, {
    hostCpus: '0-1',
    hugepages: { total: '4G', pageSize: '2M' },
    resetMethods: [{ address: '0000:0b:00.0', methods: ['flr'] }],
  });
  t.is(merged.lookingGlass?.kvmfr, 'off');
  for (const element of [
    '<vfio:host-cpus>0-1</vfio:host-cpus>',
    '<vfio:hugepages>4G</vfio:hugepages>',
    '<vfio:reset-method>flr</vfio:reset-method>',
  ]) {
    t.throws(() => mergeVmSettings(undefined, xml(element)), { instanceOf: InvalidConfig }, element);
  }
  t.throws(() => mergeVmSettings(undefined, xml("<vfio:looking-glass size='32M' kvmfr='kvmfr0'/>")), { instanceOf: InvalidConfig });
});

test('hugepages and the domain: a note when the domain does not use them or its <memory> is another size, none when they agree', (t) => {
  const file = table('[vm.win10]\nhugepages = "8G"\n');
  const backed = (memory: string) => (text: string) =>
    text.replace(/<memory[^>]*>[^<]*<\/memory>/, memory).replace('</domain>', '<memoryBacking><hugepages/></memoryBacking></domain>');
  t.deepEqual(hugepagesNotes(file, xml(null, backed("<memory unit='GiB'>8</memory>"))), []);
  t.deepEqual(hugepagesNotes(file, xml(null, backed("<memory unit='KiB'>8388608</memory>"))), []);
  t.deepEqual(hugepagesNotes(file, xml(null, backed("<memory unit='GiB'>16</memory>"))), [
    "VM 'win10': hugepages: '8G' are reserved, but the domain's <memory> is 16G; make them agree (QEMU needs the whole <memory> in hugepages), ignoring",
  ]);
  t.regex(hugepagesNotes(file, xml())[0] ?? '', /the domain has no <memoryBacking><hugepages\/>, so QEMU does not use them/);
  t.deepEqual(hugepagesNotes(table('[vm.win10]\n'), xml()), [], 'no hugepages, no note');
});
