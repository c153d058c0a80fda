import { Buffer } from 'node:buffer';
import { readFileSync } from 'node:fs';

import test from 'ava';

import { InvalidArgs, InvalidConfig } from '../../lib/errors.js';
import {
  DOMAIN_XML_MAX_BYTES,
  VFIO_XMLNS,
  hasPassthroughDevices,
  libvirtUnitScale,
  parseDomainXml,
  parseLibvirtScaledSize,
  type DomainInfo,
} from '../../lib/domain/index.js';
import { validateVmName } from '../../lib/names/index.js';

const MiB = 1024 * 1024;
const WIN10 = readFileSync(new URL('../fixtures/domains/win10.xml', import.meta.url), 'utf8');

/** A minimal domain: `<name>`, then `body` inside `<domain>`. */
function domain(body: string, name = 'win10'): string {
  return `<domain type='kvm'>\n  <name>${name}</name>\n${body}\n</domain>\n`;
}

function devices(inner: string): string {
  return domain(`<devices>${inner}</devices>`);
}

function hostdev(attrs: string, address = "domain='0x0000' bus='0x0b' slot='0x00' function='0x0'"): string {
  return `<hostdev ${attrs}><source><address ${address}/></source></hostdev>`;
}

function shmem(name: string, inner: string): string {
  return `<shmem name='${name}'>${inner}</shmem>`;
}

function metadata(inner: string, prefix = 'vfio'): string {
  return domain(`<metadata><${prefix}:vm xmlns:${prefix}="${VFIO_XMLNS}">${inner}</${prefix}:vm></metadata>`);
}

// --- the reference Windows 10 domain ---

test('reads the reference Windows 10 domain: name, uuid, both GPU functions, both shm devices', (t) => {
  const info = parseDomainXml(WIN10);
  t.deepEqual(info, {
    name: 'win10',
    uuid: '5f3a2b1c-9d8e-4f7a-8b6c-1d2e3f4a5b6c',
    hostdevs: [
      { address: '0000:0b:00.0', managed: false },
      { address: '0000:0b:00.1', managed: false },
    ],
    shmems: [
      { name: 'looking-glass', sizeBytes: 32 * MiB, model: 'ivshmem-plain', role: null },
      { name: 'scream', sizeBytes: 2 * MiB, model: 'ivshmem-plain', role: null },
    ],
    metadata: null,
    hugepagesBacking: null,
  } satisfies DomainInfo);
  t.true(hasPassthroughDevices(info));
});

test('ignores a USB hostdev, another namespace in <metadata>, and the guest-side <address> of a hostdev', (t) => {
  // The fixture has a USB hostdev, libosinfo metadata and guest addresses on bus 0x05.
  const info = parseDomainXml(WIN10);
  t.false(info.hostdevs.some((h) => h.address.includes(':05:')));
  t.is(info.hostdevs.length, 2);
  t.is(info.metadata, null);
});

// --- hostdevs ---

const hostdevCases: ReadonlyArray<readonly [string, string, DomainInfo['hostdevs']]> = [
  ["managed='no'", hostdev("mode='subsystem' type='pci' managed='no'"), [{ address: '0000:0b:00.0', managed: false }]],
  [
    "managed='yes' is reported as managed",
    hostdev("mode='subsystem' type='pci' managed='yes'"),
    [{ address: '0000:0b:00.0', managed: true }],
  ],
  ['managed absent means no (libvirt default)', hostdev("mode='subsystem' type='pci'"), [{ address: '0000:0b:00.0', managed: false }]],
  [
    "type='usb' is ignored",
    `<hostdev mode='subsystem' type='usb' managed='yes'><source><vendor id='0x046d'/><product id='0xc52b'/></source></hostdev>`,
    [],
  ],
  ["mode='capabilities' is ignored", `<hostdev mode='capabilities' type='storage'><source><block>/dev/sdf1</block></source></hostdev>`, []],
  [
    "type='mdev' is ignored",
    `<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source><address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source></hostdev>`,
    [],
  ],
  [
    "<interface type='hostdev'> is not a hostdev",
    `<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></source></interface>`,
    [],
  ],
  [
    'a missing domain attribute is domain 0',
    hostdev("mode='subsystem' type='pci'", "bus='0x0b' slot='0x00' function='0x1'"),
    [{ address: '0000:0b:00.1', managed: false }],
  ],
  [
    'uppercase hex and a 0X prefix',
    hostdev("mode='subsystem' type='pci'", "domain='0X0001' bus='0x0B' slot='0x1F' function='0x7'"),
    [{ address: '0001:0b:1f.7', managed: false }],
  ],
  [
    'decimal parts, as libvirt reads base 0',
    hostdev("mode='subsystem' type='pci'", "domain='0' bus='11' slot='3' function='1'"),
    [{ address: '0000:0b:03.1', managed: false }],
  ],
  [
    'a leading 0 is octal, as libvirt reads base 0',
    hostdev("mode='subsystem' type='pci'", "domain='0' bus='013' slot='0' function='0'"),
    [{ address: '0000:0b:00.0', managed: false }],
  ],
];

for (const [label, xml, expected] of hostdevCases) {
  test(`hostdev: ${label}`, (t) => {
    t.deepEqual(parseDomainXml(devices(xml)).hostdevs, expected);
  });
}

const PCI = "<hostdev type='pci'>";
const badHostdevs: ReadonlyArray<readonly [string, string, string]> = [
  [
    'slot out of range',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' bus='0x0b' slot='0x20' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has slot='0x20', out of range (0 to 0x1f)`,
  ],
  [
    'function out of range',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' bus='0x0b' slot='0x00' function='0x8'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has function='0x8', out of range (0 to 0x7)`,
  ],
  [
    'bus out of range',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' bus='0x100' slot='0x00' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has bus='0x100', out of range (0 to 0xff)`,
  ],
  [
    'domain out of range',
    hostdev("mode='subsystem' type='pci'", "domain='0x10000' bus='0x0b' slot='0x00' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has domain='0x10000', out of range (0 to 0xffff)`,
  ],
  [
    'not a number',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' bus='0x0b' slot='../' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has slot='../', which is not a number; expected e.g. slot='0x0b'`,
  ],
  [
    'negative',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' bus='-1' slot='0x00' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has bus='-1', which is not a number; expected e.g. bus='0x0b'`,
  ],
  [
    'missing bus',
    hostdev("mode='subsystem' type='pci'", "domain='0x0000' slot='0x00' function='0x0'"),
    `Invalid domain XML of VM 'win10': ${PCI} source address has no 'bus' attribute; expected e.g. bus='0x0b'`,
  ],
  [
    'no source',
    "<hostdev mode='subsystem' type='pci'/>",
    `Invalid domain XML of VM 'win10': ${PCI} has no <source><address domain=... bus=... slot=... function=.../>`,
  ],
  [
    'managed neither yes nor no',
    hostdev("mode='subsystem' type='pci' managed='true'"),
    `Invalid domain XML of VM 'win10': ${PCI} has managed='true'; expected 'yes' or 'no'`,
  ],
];

for (const [label, xml, message] of badHostdevs) {
  test(`refuses a PCI hostdev with ${label}`, (t) => {
    t.throws(() => parseDomainXml(devices(xml)), { instanceOf: InvalidArgs, message });
  });
}

// --- shmem sizes in libvirt's units ---

const shmemSizes: ReadonlyArray<readonly [string, number | null]> = [
  ["<size unit='M'>32</size>", 32 * MiB],
  ["<size unit='MiB'>32</size>", 32 * MiB],
  ["<size unit='m'>32</size>", 32 * MiB],
  ["<size unit='mib'>64</size>", 64 * MiB],
  ["<size unit='MB'>32</size>", 32_000_000],
  ["<size unit='mb'>2</size>", 2_000_000],
  ["<size unit='k'>2048</size>", 2 * MiB],
  ["<size unit='KiB'>2048</size>", 2 * MiB],
  ["<size unit='KB'>2048</size>", 2_048_000],
  ["<size unit='G'>1</size>", 1024 * MiB],
  ["<size unit='GiB'>1</size>", 1024 * MiB],
  ["<size unit='GB'>1</size>", 1_000_000_000],
  ["<size unit='T'>1</size>", 1024 * 1024 * MiB],
  ["<size unit='b'>33554432</size>", 32 * MiB],
  ["<size unit='bytes'>33554432</size>", 32 * MiB],
  ['<size>33554432</size>', 32 * MiB], // no unit: bytes (virDomainShmemDefParseXML, scale 1)
  ["<size unit='M'>\n  32\n</size>", 32 * MiB],
  ['', null],
];

for (const [xml, bytes] of shmemSizes) {
  test(`shmem size ${JSON.stringify(xml)} is ${String(bytes)} bytes`, (t) => {
    const [only] = parseDomainXml(devices(shmem('looking-glass', xml))).shmems;
    t.is(only?.sizeBytes, bytes);
  });
}

const badShmems: ReadonlyArray<readonly [string, string, string]> = [
  [
    'an unknown unit',
    shmem('lg', "<size unit='MX'>32</size>"),
    "Invalid domain XML of VM 'win10': <shmem name='lg'> <size>: Invalid unit 'MX': expected one of libvirt's units, e.g. 'b', 'KiB', 'M', 'MiB', 'MB' or 'G'",
  ],
  [
    'a fractional size',
    shmem('lg', "<size unit='M'>1.5</size>"),
    "Invalid domain XML of VM 'win10': <shmem name='lg'> <size>: Invalid size '1.5': expected a whole decimal number",
  ],
  [
    'a hex size',
    shmem('lg', '<size>0x100000</size>'),
    "Invalid domain XML of VM 'win10': <shmem name='lg'> <size>: Invalid size '0x100000': expected a whole decimal number",
  ],
  [
    'a size beyond 2^53',
    shmem('lg', "<size unit='E'>8</size>"),
    "Invalid domain XML of VM 'win10': <shmem name='lg'> <size>: Invalid size '8 E': larger than 9007199254740991 bytes",
  ],
  ['no name', "<shmem><size unit='M'>2</size></shmem>", "Invalid domain XML of VM 'win10': <shmem> has no 'name' attribute"],
  [
    'a name with a slash',
    shmem('../etc/passwd', ''),
    "Invalid domain XML of VM 'win10': <shmem>: Invalid shared memory name '../etc/passwd': must not contain '/'; use a plain file name such as 'looking-glass'",
  ],
  [
    'an unknown model',
    shmem('lg', "<model type='ivshmem-fancy'/>"),
    "Invalid domain XML of VM 'win10': <shmem name='lg'> has <model type='ivshmem-fancy'>; expected one of 'ivshmem', 'ivshmem-plain', 'ivshmem-doorbell'",
  ],
  [
    'an unknown role',
    `<shmem name='lg' role='boss'/>`,
    "Invalid domain XML of VM 'win10': <shmem name='lg'> has role='boss'; expected 'master' or 'peer'",
  ],
  [
    'two sizes',
    shmem('lg', "<size unit='M'>2</size><size unit='M'>4</size>"),
    "Invalid domain XML of VM 'win10': <shmem> has 2 <size> elements, expected one",
  ],
];

for (const [label, xml, message] of badShmems) {
  test(`refuses a shmem with ${label}`, (t) => {
    t.throws(() => parseDomainXml(devices(xml)), { instanceOf: InvalidArgs, message });
  });
}

test('reads shmem model and role', (t) => {
  const info = parseDomainXml(devices(`<shmem name='door' role='master'><model type='ivshmem-doorbell'/><server path='/tmp/s'/></shmem>`));
  t.deepEqual(info.shmems, [{ name: 'door', sizeBytes: null, model: 'ivshmem-doorbell', role: 'master' }]);
});

// --- libvirtUnitScale / parseLibvirtScaledSize directly ---

test('libvirt units: letters are powers of 1024, letter+B of 1000, b/byte/bytes are 1, case-insensitive', (t) => {
  t.is(libvirtUnitScale(undefined, 1n), 1n);
  t.is(libvirtUnitScale(undefined, 1024n), 1024n);
  t.is(libvirtUnitScale('', 1024n), 1024n);
  t.is(libvirtUnitScale('BYTE', 1024n), 1n);
  t.is(libvirtUnitScale('P', 1n), 1024n ** 5n);
  t.is(libvirtUnitScale('PB', 1n), 1000n ** 5n);
  t.is(libvirtUnitScale('eib', 1n), 1024n ** 6n);
  t.is(parseLibvirtScaledSize(' 4 ', 'M'), 4 * MiB);
  t.throws(() => libvirtUnitScale('Mi', 1n), { instanceOf: InvalidArgs });
  t.throws(() => libvirtUnitScale('x', 1n), { instanceOf: InvalidArgs });
  t.throws(() => parseLibvirtScaledSize('-1', 'M'), { instanceOf: InvalidArgs });
});

// --- name, uuid, and the document itself ---

test('no <name> is refused', (t) => {
  t.throws(() => parseDomainXml("<domain type='kvm'><uuid>5f3a2b1c-9d8e-4f7a-8b6c-1d2e3f4a5b6c</uuid></domain>"), {
    instanceOf: InvalidArgs,
    message: 'Invalid domain XML: no <name> element; libvirt always writes one, so this is not a domain definition',
  });
});

const badNames: ReadonlyArray<readonly [string, string]> = [
  ['', "Invalid VM name '': must not be empty; use the name 'virsh list --all' shows"],
  ['a/b', "Invalid VM name 'a/b': must not contain '/'; use the name 'virsh list --all' shows"],
  ['win&#10;10', "Invalid VM name 'win\\x0a10': must not contain control characters; use the name 'virsh list --all' shows"],
  ['win&#9;10', "Invalid VM name 'win\\x0910': must not contain control characters; use the name 'virsh list --all' shows"],
  ['win&#x7f;', "Invalid VM name 'win\\x7f': must not contain control characters; use the name 'virsh list --all' shows"],
  ['x'.repeat(252), `Invalid VM name '${'x'.repeat(252)}': 252 bytes long, at most 251 allowed; use the name 'virsh list --all' shows`],
];

for (const [name, message] of badNames) {
  test(`refuses the VM name ${JSON.stringify(name.slice(0, 20))}`, (t) => {
    t.throws(() => parseDomainXml(domain('', name)), { instanceOf: InvalidArgs, message });
  });
}

test('accepts VM names with spaces, unicode and escaped markup', (t) => {
  t.is(parseDomainXml(domain('', 'Windows 10 &amp; Co.')).name, 'Windows 10 & Co.');
  t.is(parseDomainXml(domain('', 'スパイ-vm')).name, 'スパイ-vm');
  t.is(parseDomainXml(domain('', 'x'.repeat(251))).name.length, 251);
  t.is(validateVmName('win10'), 'win10');
});

test('uuid: absent is null, the dashless form is normalised, junk is refused', (t) => {
  t.is(parseDomainXml(domain('')).uuid, null);
  t.is(parseDomainXml(domain('<uuid>5F3A2B1C9D8E4F7A8B6C1D2E3F4A5B6C</uuid>')).uuid, '5f3a2b1c-9d8e-4f7a-8b6c-1d2e3f4a5b6c');
  t.throws(() => parseDomainXml(domain('<uuid>not-a-uuid</uuid>')), {
    instanceOf: InvalidArgs,
    message: "Invalid domain XML: <uuid> 'not-a-uuid' is not a UUID",
  });
});

const malformed: ReadonlyArray<readonly [string, string, string]> = [
  [
    'a mismatched closing tag',
    '<domain>\n<name>win10</name>\n<devices></device>\n</domain>',
    "Invalid domain XML: line 3, column 10: Expected closing tag 'devices' (opened in line 3, col 1) instead of closing tag 'device'.",
  ],
  ['an unclosed root', '<domain><name>win10</name>', "Invalid domain XML: line 1, column 1: Unclosed tag 'domain'."],
  [
    'a repeated attribute',
    "<domain type='kvm' type='xen'><name>a</name></domain>",
    "Invalid domain XML: line 1, column 20: Attribute 'type' is repeated.",
  ],
  ['empty input', '', 'Invalid domain XML: line 1: Start tag expected.'],
  ['plain text', 'win10', "Invalid domain XML: line 1, column 1: char 'w' is not expected."],
  [
    'two roots',
    '<domain><name>a</name></domain><domain><name>b</name></domain>',
    'Invalid domain XML: line 1, column 39: Multiple possible root nodes found.',
  ],
  [
    'another root element',
    '<network><name>default</name></network>',
    'Invalid domain XML: the root element is <network>, expected <domain>',
  ],
  [
    'a DOCTYPE with an entity',
    '<!DOCTYPE domain [<!ENTITY lol "lol">]><domain><name>&lol;</name></domain>',
    'Invalid domain XML: a DOCTYPE is not allowed (libvirt never writes one)',
  ],
  ['an unknown entity', '<domain><name>&lol;</name></domain>', "Invalid domain XML: unknown entity '&lol;'"],
  [
    'a character reference to NUL',
    '<domain><name>a&#0;</name></domain>',
    "Invalid domain XML: character reference '&#0;' is not an XML character",
  ],
  [
    'two <name> elements',
    '<domain><name>a</name><name>b</name></domain>',
    'Invalid domain XML: <domain> has 2 <name> elements, expected one',
  ],
  [
    'nesting deeper than libxml2 allows',
    `<domain><name>a</name><description>${'<a>'.repeat(300)}${'</a>'.repeat(300)}</description></domain>`,
    'Invalid domain XML: elements nested deeper than 256 levels',
  ],
];

for (const [label, xml, message] of malformed) {
  test(`refuses ${label}`, (t) => {
    t.throws(() => parseDomainXml(xml), { instanceOf: InvalidArgs, message });
  });
}

test('refuses input over 4 MiB before parsing it', (t) => {
  const xml = domain(`<description>${'é'.repeat(DOMAIN_XML_MAX_BYTES / 2)}</description>`);
  const bytes = Buffer.byteLength(xml);
  t.true(xml.length < DOMAIN_XML_MAX_BYTES, 'counted in bytes, not characters');
  t.throws(() => parseDomainXml(xml), {
    instanceOf: InvalidArgs,
    message: `Invalid domain XML: ${bytes} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing`,
  });
});

test('hasPassthroughDevices: false with neither hostdev nor shmem, true with either', (t) => {
  t.false(hasPassthroughDevices(parseDomainXml(domain('<devices><disk type="file" device="disk"/></devices>'))));
  t.false(hasPassthroughDevices(parseDomainXml(devices(`<hostdev mode='subsystem' type='usb'><source/></hostdev>`))));
  t.true(hasPassthroughDevices(parseDomainXml(devices(hostdev("mode='subsystem' type='pci'")))));
  t.true(hasPassthroughDevices(parseDomainXml(devices(shmem('scream', '')))));
});

// --- vfio-hookd metadata ---

test('reads every metadata setting into the shape of a config table', (t) => {
  const info = parseDomainXml(
    metadata(`
    <vfio:device address='0000:0b:00.0'/>
    <vfio:device address='0b:00.1'/>
    <vfio:user>alex</vfio:user>
    <vfio:force>no</vfio:force>
    <vfio:remove-shm-on-stop>yes</vfio:remove-shm-on-stop>
    <vfio:looking-glass resolution='2560x1440' hdr='yes' name='lg' group='qemu-libvirtd' mode='0660'/>
    <vfio:scream size='2M' name='scream' group='audio' mode='0640'/>
    <vfio:unit>looking-glass-client@lg.service</vfio:unit>
    <vfio:unit>scream-receiver.service</vfio:unit>
  `),
  );
  t.deepEqual(info.metadata, {
    devices: ['0000:0b:00.0', '0b:00.1'],
    user: 'alex',
    force: false,
    'remove-shm-on-stop': true,
    'looking-glass': { resolution: '2560x1440', hdr: true, name: 'lg', group: 'qemu-libvirtd', mode: '0660' },
    scream: { size: '2M', name: 'scream', group: 'audio', mode: '0640' },
    units: ['looking-glass-client@lg.service', 'scream-receiver.service'],
  });
});

test('metadata is matched by namespace URI, not by prefix', (t) => {
  const other = parseDomainXml(metadata('<hookd:user>alex</hookd:user>', 'hookd'));
  t.deepEqual(other.metadata, { user: 'alex' });
  const dflt = parseDomainXml(domain(`<metadata><vm xmlns="${VFIO_XMLNS}"><user>alex</user></vm></metadata>`));
  t.deepEqual(dflt.metadata, { user: 'alex' });
  const declaredAbove = parseDomainXml(
    `<domain xmlns:v="${VFIO_XMLNS}"><name>win10</name><metadata><v:vm><v:user>alex</v:user></v:vm></metadata></domain>`,
  );
  t.deepEqual(declaredAbove.metadata, { user: 'alex' });
  // The right prefix bound to another namespace is not ours.
  const impostor = parseDomainXml(
    domain(`<metadata><vfio:vm xmlns:vfio="https://example.org/vm"><vfio:user>x</vfio:user></vfio:vm></metadata>`),
  );
  t.is(impostor.metadata, null);
});

test('an empty <vm> element gives empty settings, not null', (t) => {
  t.deepEqual(parseDomainXml(metadata('')).metadata, {});
});

const META = "Invalid vfio-hookd metadata in VM 'win10'";
const badMetadata: ReadonlyArray<readonly [string, string, string]> = [
  [
    'a misspelt element',
    '<vfio:usr>alex</vfio:usr>',
    `${META}: unknown element <vfio:usr> (namespace '${VFIO_XMLNS}') in <vfio:vm>; did you mean <vfio:user>?`,
  ],
  ['a foreign element inside <vm>', '<user>alex</user>', `${META}: unknown element <user> (no namespace) in <vfio:vm>`],
  [
    'a misspelt attribute',
    "<vfio:looking-glass resolutoin='1920x1080'/>",
    `${META}: unknown attribute 'resolutoin' on <vfio:looking-glass>, which takes 'resolution', 'size', 'hdr', 'name', 'group', 'mode'; did you mean 'resolution'?`,
  ],
  [
    'a misspelt Scream attribute',
    "<vfio:scream grop='audio'/>",
    `${META}: unknown attribute 'grop' on <vfio:scream>, which takes 'size', 'name', 'group', 'mode'; did you mean 'group'?`,
  ],
  [
    'an attribute on a text element',
    "<vfio:user name='alex'/>",
    `${META}: unknown attribute 'name' on <vfio:user>, which takes no attributes`,
  ],
  [
    'a repeated single element',
    '<vfio:user>a</vfio:user><vfio:user>b</vfio:user>',
    `${META}: <vfio:user> appears more than once; keep one`,
  ],
  [
    'a boolean that is not yes/no',
    '<vfio:force>true</vfio:force>',
    `${META}: invalid value 'true' for <vfio:force>: expected 'yes' or 'no'`,
  ],
  [
    'hdr that is not yes/no',
    "<vfio:looking-glass resolution='1920x1080' hdr='1'/>",
    `${META}: invalid value '1' for 'hdr' on <vfio:looking-glass>: expected 'yes' or 'no'`,
  ],
  ['a device without address', '<vfio:device/>', `${META}: <vfio:device> needs an 'address' attribute, e.g. address='0000:0b:00.0'`],
  ['text where attributes belong', '<vfio:scream>2M</vfio:scream>', `${META}: unexpected text '2M' in <vfio:scream>; use attributes`],
  [
    'nested elements',
    '<vfio:user><vfio:name>alex</vfio:name></vfio:user>',
    `${META}: <vfio:user> must not contain elements, found <vfio:name>`,
  ],
  ['stray text in <vm>', 'alex', `${META}: unexpected text 'alex' in <vfio:vm>`],
];

for (const [label, inner, message] of badMetadata) {
  test(`metadata: refuses ${label}`, (t) => {
    t.throws(() => parseDomainXml(metadata(inner)), { instanceOf: InvalidConfig, message });
  });
}

test('metadata: refuses two <vm> elements and other elements in our namespace', (t) => {
  const two = `<metadata><a:vm xmlns:a="${VFIO_XMLNS}"/><b:vm xmlns:b="${VFIO_XMLNS}"/></metadata>`;
  t.throws(() => parseDomainXml(domain(two)), {
    instanceOf: InvalidConfig,
    message: `${META}: 2 <vm> elements in namespace '${VFIO_XMLNS}'; keep one`,
  });
  const stray = `<metadata><a:settings xmlns:a="${VFIO_XMLNS}"/></metadata>`;
  t.throws(() => parseDomainXml(domain(stray)), {
    instanceOf: InvalidConfig,
    message: `${META}: unknown element <a:settings> in namespace '${VFIO_XMLNS}'; the settings go in one <vm> element`,
  });
});
