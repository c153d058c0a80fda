/**
 * The libvirt domain XML the qemu hook passes on stdin: the few facts
 * vfio-hookd needs from it, checked before anything acts on them.
 *
 * - `<name>` and `<uuid>`;
 * - PCI host devices, `<hostdev mode='subsystem' type='pci'>`, with their
 *   source address and `managed` flag. Other hostdevs (USB, SCSI, mdev) and
 *   `<interface type='hostdev'>` are not ours and are left out;
 * - shared-memory devices, `<shmem name=...>`, with their size in bytes;
 * - vfio-hookd's own settings under `<metadata>` (see metadata.ts).
 *
 * The input comes from libvirt (through the hook and the bus), but the daemon
 * treats it as untrusted: a size cap before parsing, no DOCTYPE or entity
 * expansion, bounded nesting (xml-tree.ts), and every value that later
 * reaches a path or a sysfs file is validated here.
 */

import { Buffer } from 'node:buffer';

import { InvalidArgs, q } from '../errors.js';
import { validateShmName } from '../shm/index.js';
import { parseVmMetadata, type VmSettingsInput } from './metadata.js';
import { parseLibvirtScaledSize } from './scaled-size.js';
import { validateVmName } from '../names/vm-name.js';
import { parseXmlDocument, type XmlElement } from './xml-tree.js';

/**
 * Largest domain XML accepted, in bytes: 16 MiB. Real domains are a few KiB
 * (a large one with many disks and NICs stays well under 100 KiB), and
 * libvirt's own API carries at most 4 MiB of XML (REMOTE_STRING_MAX), which
 * the document libvirt hands its hooks may exceed by what it adds. This only
 * bounds what a confused or hostile caller can make the daemon parse; the
 * README states it. Large documents are parsed off the event loop
 * (parse-off-thread.ts).
 */
export const DOMAIN_XML_MAX_BYTES = 16 * 1024 * 1024;

export interface DomainHostdev {
  /** Source address, normalised `DDDD:BB:DD.F`. */
  readonly address: string;
  /**
   * `managed='yes'`: libvirt itself detaches and reattaches the device. An
   * absent attribute means 'no' (libvirt formatdomain: "If managed is omitted
   * or 'no', the user is responsible to call virNodeDeviceDettach").
   */
  readonly managed: boolean;
}

const SHMEM_MODELS = ['ivshmem', 'ivshmem-plain', 'ivshmem-doorbell'] as const;
type ShmemModel = (typeof SHMEM_MODELS)[number];

interface DomainShmem {
  /** `name` attribute: the file `/dev/shm/<name>` for a server-less shmem. */
  readonly name: string;
  /** `<size>` in bytes (libvirt units, bytes when no unit); `null` when absent. */
  readonly sizeBytes: number | null;
  /** `<model type=...>`; `null` when absent (libvirt then picks the model). */
  readonly model: ShmemModel | null;
  /** `role` attribute ('master' or 'peer'); `null` when absent. */
  readonly role: 'master' | 'peer' | null;
}

export interface DomainInfo {
  readonly name: string;
  /** Lowercase canonical `8-4-4-4-12` form; `null` when the XML has no `<uuid>`. */
  readonly uuid: string | null;
  /** PCI host devices (`mode='subsystem' type='pci'`) in document order. */
  readonly hostdevs: readonly DomainHostdev[];
  readonly shmems: readonly DomainShmem[];
  /** vfio-hookd's settings from `<metadata>`, not yet validated; `null` when there are none. */
  readonly metadata: VmSettingsInput | null;
  /**
   * `<memoryBacking><hugepages/>`: whether the guest's memory is hugepages,
   * and `<memory>` in bytes (null when it cannot be read). Advisory (the
   * notes about `hugepages`, merge.ts): an odd value is never a refusal.
   * Absent from callers that build a DomainInfo by hand.
   */
  readonly hugepagesBacking?: { readonly memoryBytes: number | null } | null;
}

/**
 * Parse a libvirt domain XML document.
 *
 * @throws InvalidArgs for input over `DOMAIN_XML_MAX_BYTES`, malformed XML, a
 *   root other than `<domain>`, a missing or invalid `<name>`, a malformed
 *   `<uuid>`, a PCI hostdev without a valid source address or with a
 *   `managed` value other than yes/no, or a shmem without a valid name, size
 *   or model.
 * @throws InvalidConfig for invalid vfio-hookd metadata.
 */
export function parseDomainXml(xml: string): DomainInfo {
  if (typeof xml !== 'string') throw new InvalidArgs('Invalid domain XML: expected a string');
  const bytes = Buffer.byteLength(xml, 'utf8');
  if (bytes > DOMAIN_XML_MAX_BYTES) {
    throw new InvalidArgs(
      `Invalid domain XML: ${bytes} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing`,
    );
  }
  const root = parseXmlDocument(xml, 'domain XML');
  if (root.name !== 'domain') {
    throw new InvalidArgs(`Invalid domain XML: the root element is <${root.name}>, expected <domain>`);
  }

  const name = readName(root);
  const uuid = readUuid(root);
  const devices = only(root, 'devices', name);
  const hostdevs: DomainHostdev[] = [];
  const shmems: DomainShmem[] = [];
  for (const device of devices?.children ?? []) {
    if (device.name === 'hostdev') {
      const hostdev = readHostdev(device, name);
      if (hostdev !== null) hostdevs.push(hostdev);
    } else if (device.name === 'shmem') {
      shmems.push(readShmem(device, name));
    }
  }
  const metadata = parseVmMetadata(only(root, 'metadata', name), name);
  return { name, uuid, hostdevs, shmems, metadata, hugepagesBacking: readHugepagesBacking(root) };
}

/**
 * Whether the domain has anything vfio-hookd could act on: a PCI hostdev or a
 * shmem. The hook script applies the same rule in sh before it waits for the
 * daemon, so a VM with neither is never blocked by vfio-hookd being down.
 */
export function hasPassthroughDevices(info: DomainInfo): boolean {
  return info.hostdevs.length > 0 || info.shmems.length > 0;
}

/** The single child element `childName`, `null` when absent. */
function only(parent: XmlElement, childName: string, vm: string | null): XmlElement | null {
  const found = parent.children.filter((child) => child.name === childName);
  if (found.length > 1) {
    const where = vm === null ? '' : ` of VM ${q(vm)}`;
    throw new InvalidArgs(`Invalid domain XML${where}: <${parent.name}> has ${found.length} <${childName}> elements, expected one`);
  }
  return found[0] ?? null;
}

/** libvirt's memory units (formatdomain: "memory allocation"), to bytes. */
const MEMORY_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  bytes: 1,
  kb: 1e3,
  k: 1024,
  kib: 1024,
  mb: 1e6,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1e9,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  tb: 1e12,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

function readHugepagesBacking(root: XmlElement): { memoryBytes: number | null } | null {
  const backing = root.children.filter((c) => c.name === 'memoryBacking');
  if (backing.length !== 1 || !backing[0]!.children.some((c) => c.name === 'hugepages')) return null;
  const memory = root.children.filter((c) => c.name === 'memory');
  if (memory.length !== 1) return { memoryBytes: null };
  const unit = MEMORY_UNITS[(memory[0]!.attributes.get('unit') ?? 'KiB').toLowerCase()];
  const value = /^\s*(\d+)\s*$/.exec(memory[0]!.text);
  const bytes = unit === undefined || value === null ? NaN : Number(value[1]) * unit;
  return { memoryBytes: Number.isSafeInteger(bytes) ? bytes : null };
}

function readName(root: XmlElement): string {
  const element = only(root, 'name', null);
  if (element === null) {
    throw new InvalidArgs('Invalid domain XML: no <name> element; libvirt always writes one, so this is not a domain definition');
  }
  return validateVmName(element.text);
}

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/;

function readUuid(root: XmlElement): string | null {
  const element = only(root, 'uuid', null);
  if (element === null) return null;
  const text = element.text.trim().toLowerCase();
  if (!UUID_RE.test(text)) {
    throw new InvalidArgs(`Invalid domain XML: <uuid> ${q(element.text)} is not a UUID`);
  }
  const hex = text.replaceAll('-', '');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function readHostdev(element: XmlElement, vm: string): DomainHostdev | null {
  if (element.attributes.get('mode') !== 'subsystem' || element.attributes.get('type') !== 'pci') return null;
  const fail = (why: string): never => {
    throw new InvalidArgs(`Invalid domain XML of VM ${q(vm)}: <hostdev type='pci'> ${why}`);
  };

  const managedAttr = element.attributes.get('managed');
  if (managedAttr !== undefined && managedAttr !== 'yes' && managedAttr !== 'no') {
    fail(`has managed=${q(managedAttr)}; expected 'yes' or 'no'`);
  }
  const source = only(element, 'source', vm);
  const address = source === null ? null : only(source, 'address', vm);
  if (address === null) fail('has no <source><address domain=... bus=... slot=... function=.../>');
  return { address: readPciAddress(address!, fail), managed: managedAttr === 'yes' };
}

/** Largest value of each part of a PCI address. */
const PCI_PARTS = [
  ['domain', 0xffff, 4],
  ['bus', 0xff, 2],
  ['slot', 0x1f, 2],
  ['function', 0x7, 1],
] as const;

/**
 * `<address domain='0x0000' bus='0x0b' slot='0x00' function='0x0'/>` to
 * `0000:0b:00.0`. libvirt reads each part with base 0 (`virStrToLong_uip(...,
 * 0, ...)`): `0x` is hex, a leading `0` octal, anything else decimal; it always
 * writes hex. `domain` may be omitted (0); the others are required.
 */
function readPciAddress(element: XmlElement, fail: (why: string) => never): string {
  const parts: string[] = [];
  for (const [attr, max, digits] of PCI_PARTS) {
    const raw = element.attributes.get(attr);
    if (raw === undefined) {
      if (attr === 'domain') {
        parts.push('0000');
        continue;
      }
      fail(`source address has no ${q(attr)} attribute; expected e.g. ${attr}='0x0b'`);
    }
    const text = raw!.trim();
    let value: number;
    if (/^0[xX][0-9a-fA-F]+$/.test(text)) value = Number.parseInt(text.slice(2), 16);
    else if (/^0[0-7]+$/.test(text)) value = Number.parseInt(text.slice(1), 8);
    else if (/^(?:0|[1-9][0-9]*)$/.test(text)) value = Number(text);
    else return fail(`source address has ${attr}=${q(raw)}, which is not a number; expected e.g. ${attr}='0x0b'`);
    if (!Number.isSafeInteger(value) || value > max) {
      fail(`source address has ${attr}=${q(raw)}, out of range (0 to 0x${max.toString(16)})`);
    }
    parts.push(value.toString(16).padStart(digits, '0'));
  }
  return `${parts[0]}:${parts[1]}:${parts[2]}.${parts[3]}`;
}

function readShmem(element: XmlElement, vm: string): DomainShmem {
  const fail = (why: string): never => {
    throw new InvalidArgs(`Invalid domain XML of VM ${q(vm)}: ${why}`);
  };
  const name = element.attributes.get('name');
  if (name === undefined) fail("<shmem> has no 'name' attribute");
  try {
    validateShmName(name!);
  } catch (error) {
    if (error instanceof InvalidArgs) fail(`<shmem>: ${error.message}`);
    throw error;
  }
  const what = `<shmem name=${q(name)}>`;

  let sizeBytes: number | null = null;
  const size = only(element, 'size', vm);
  if (size !== null) {
    try {
      sizeBytes = parseLibvirtScaledSize(size.text, size.attributes.get('unit'));
    } catch (error) {
      if (error instanceof InvalidArgs) fail(`${what} <size>: ${error.message}`);
      throw error;
    }
  }

  let model: ShmemModel | null = null;
  const modelElement = only(element, 'model', vm);
  if (modelElement !== null) {
    const type = modelElement.attributes.get('type');
    if (!(SHMEM_MODELS as readonly (string | undefined)[]).includes(type)) {
      fail(`${what} has <model type=${q(type ?? '')}>; expected one of ${SHMEM_MODELS.map((m) => q(m)).join(', ')}`);
    }
    model = type as ShmemModel;
  }

  const roleAttr = element.attributes.get('role');
  let role: 'master' | 'peer' | null = null;
  if (roleAttr === 'master' || roleAttr === 'peer') role = roleAttr;
  else if (roleAttr !== undefined) fail(`${what} has role=${q(roleAttr)}; expected 'master' or 'peer'`);
  return { name: name!, sizeBytes, model, role };
}
