/**
 * What the host visibly depends on, per PCI device: the safety rail that
 * keeps a typo in a configuration from taking away the root disk.
 *
 * - a block device beneath the device that is mounted, swapped on, or held by
 *   another block device (dm/md: LUKS, LVM, RAID) that is;
 * - a network interface beneath it that is up;
 * - for the boot VGA, a virtual console drawn on a frame buffer;
 * - a keyboard or mouse beneath it (a USB controller with the host's
 *   keyboard plugged in): the host cannot tell its own keyboard from one meant
 *   for the guest, so it asks for `force` either way;
 * - a chipset function (class-code.ts chipsetRole): the host bridge, the
 *   LPC bridge, the IOMMU, the SMBus, memory controllers. Unlike the others
 *   this one is never overridden by `force` (canForce).
 */
import path from 'node:path';
import { q } from '../errors.js';
import { chipsetRole } from './class-code.js';
import { inputKinds, type InputKind } from './input-capabilities.js';
import type { KernelPort } from './kernel-port.js';
import type { PciDevice } from './pci-device.js';
import { classAttr, classDir, classEntry, mountInfoFile, NODE_NAMES, swapsFile, type SysfsClass } from './sysfs-layout.js';

export interface Dependency {
  readonly kind: 'mount' | 'swap' | 'network' | 'console' | 'input' | 'chipset';
  /** One phrase for messages: `'/' is mounted from 'nvme0n1p2'`. */
  readonly description: string;
}

/**
 * May `force` take the device despite this dependency? Everything but a
 * chipset function: a mounted disk or an up NIC may really be meant for the
 * guest (the user unmounts it first, or accepts the loss); a chipset function
 * is never of use to a guest, and `force` given for another device of the
 * group must not take it along.
 */
export function canForce(dependency: Dependency): boolean {
  return dependency.kind !== 'chipset';
}

interface BlockDevice {
  name: string;
  realPath: string;
  devNumber: string | null;
  holders: string[];
  dmName: string | null;
}

interface HostFacts {
  blocks: BlockDevice[];
  mounts: { devNumber: string; source: string; mountPoint: string; fsType: string }[];
  swaps: string[];
  nets: { name: string; realPath: string; up: boolean }[];
  consoles: { name: string; description: string }[];
  inputs: { name: string; label: string; realPath: string; kinds: InputKind[] }[];
}

/** Octal escapes (`\040` for a space) as the kernel writes them in mountinfo and swaps. */
function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

function parseMountInfo(text: string): HostFacts['mounts'] {
  const mounts: HostFacts['mounts'] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (fields.length < 10 || dash < 6) continue;
    mounts.push({
      devNumber: fields[2]!,
      mountPoint: unescapeOctal(fields[4]!),
      fsType: fields[dash + 1] ?? '',
      source: unescapeOctal(fields[dash + 2] ?? ''),
    });
  }
  return mounts;
}

function parseSwaps(text: string): string[] {
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean)
    .map(unescapeOctal);
}

/**
 * The class devices that matter for `devices`, read with as few reads as the
 * check allows (a read of the host is what the engine's path spends most on,
 * under a slow machine most of all): every class entry costs one `realPath`,
 * and only an entry beneath one of the devices is read further. Two things
 * are read although they are not beneath any of them, because the rail needs
 * them: the block devices that hold one beneath (dm/md on a partition, found
 * by following `holders`, never by listing), and the consoles when one of the
 * devices is the boot VGA. mountinfo and swaps are read only when a block
 * device is beneath one of them.
 */
async function readFacts(port: KernelPort, devices: readonly PciDevice[]): Promise<HostFacts> {
  const roots = port.roots;
  const isBeneathAny = (realPath: string): boolean => devices.some((d) => beneath(d, realPath));
  /** The class entries (name, real folder) beneath one of the devices. */
  const entriesBeneath = async (cls: SysfsClass, names?: (n: string) => boolean): Promise<{ name: string; realPath: string }[]> => {
    const all = (await port.readDir(classDir(roots, cls))).filter((n) => names === undefined || names(n));
    const found = await Promise.all(all.map(async (name) => ({ name, realPath: await port.realPath(classEntry(roots, cls, name)) })));
    return found.filter((e): e is { name: string; realPath: string } => e.realPath !== null && isBeneathAny(e.realPath));
  };
  const readBlock = async (name: string, realPath: string): Promise<BlockDevice> => {
    const [dev, holders, dmName] = await Promise.all([
      port.readFile(classAttr(roots, 'block', name, 'dev')),
      port.readDir(classAttr(roots, 'block', name, 'holders')),
      port.readFile(classAttr(roots, 'block', name, 'dm/name')),
    ]);
    return { name, realPath, devNumber: dev?.trim() ?? null, holders, dmName: dmName?.trim() ?? null };
  };
  const blocks = await Promise.all((await entriesBeneath('block')).map((e) => readBlock(e.name, e.realPath)));
  // The holders of those (a LUKS or LVM volume on a partition), and theirs.
  const known = new Set(blocks.map((b) => b.name));
  for (let i = 0; i < blocks.length; i++) {
    for (const h of blocks[i]!.holders) {
      if (known.has(h)) continue;
      known.add(h);
      const realPath = await port.realPath(classEntry(roots, 'block', h));
      if (realPath !== null) blocks.push(await readBlock(h, realPath));
    }
  }
  const nets = await Promise.all(
    (await entriesBeneath('net')).map(async ({ name, realPath }) => {
      const flags = await port.readFile(classAttr(roots, 'net', name, 'flags'));
      // IFF_UP is bit 0 of the interface flags.
      const up = flags !== null && (Number.parseInt(flags.trim(), 16) & 0x1) === 1;
      return { name, realPath, up };
    }),
  );
  const consoles = !devices.some((d) => d.bootVga === true)
    ? []
    : await Promise.all(
        (await port.readDir(classDir(roots, 'vtconsole'))).map(async (name) => {
          const [bind, description] = await Promise.all([
            port.readFile(classAttr(roots, 'vtconsole', name, 'bind')),
            port.readFile(classAttr(roots, 'vtconsole', name, 'name')),
          ]);
          return bind?.trim() === '1' ? { name, description: description?.trim() ?? '' } : null;
        }),
      );
  // Input devices: `<sysfs>/class/input/inputN` links to the device's real
  // directory, which sits in an `input/` folder of its parent device and so
  // beneath the PCI device that carries it. Checked: the kernel's own
  // `/proc/bus/input/devices` shows `S: Sysfs=/devices/LNXSYSTM:00/LNXPWRBN:00/input/input0`.
  // The USB HID chain above it (`ADDR/usb3/3-2/3-2:1.0/0003:046D:C31C.0001/input/input5`)
  // is as real machines show it, not re-checked against the source here;
  // only "beneath the PCI device" matters. eventN, mouseN and jsN are
  // children of inputN and add nothing.
  const inputs = await Promise.all(
    (await entriesBeneath('input', (n) => /^input\d+$/.test(n))).map(async ({ name, realPath }) => {
      const [label, ev, key, rel] = await Promise.all([
        port.readFile(classAttr(roots, 'input', name, 'name')),
        port.readFile(classAttr(roots, 'input', name, 'capabilities/ev')),
        port.readFile(classAttr(roots, 'input', name, 'capabilities/key')),
        port.readFile(classAttr(roots, 'input', name, 'capabilities/rel')),
      ]);
      const kinds = inputKinds({ ev, key, rel });
      return kinds.length === 0 ? null : { name, label: label?.trim() ?? '', realPath, kinds };
    }),
  );
  const [mountInfo, swaps] =
    blocks.length === 0 ? [null, null] : await Promise.all([port.readFile(mountInfoFile(roots)), port.readFile(swapsFile(roots))]);
  return {
    blocks,
    mounts: mountInfo === null ? [] : parseMountInfo(mountInfo),
    swaps: swaps === null ? [] : parseSwaps(swaps),
    nets,
    consoles: consoles.filter((c): c is NonNullable<typeof c> => c !== null),
    inputs: inputs.filter((i): i is NonNullable<typeof i> => i !== null),
  };
}

function beneath(device: PciDevice, realPath: string): boolean {
  return realPath.startsWith(device.sysfsPath + path.sep);
}

function blockUses(block: BlockDevice, facts: HostFacts): Dependency[] {
  const found: Dependency[] = [];
  const names = new Set([NODE_NAMES.block(block.name)]);
  if (block.dmName) names.add(NODE_NAMES.mapper(block.dmName));
  for (const m of facts.mounts) {
    if ((block.devNumber !== null && m.devNumber === block.devNumber) || names.has(m.source)) {
      found.push({ kind: 'mount', description: `'${m.mountPoint}' is mounted from '${block.name}' (${m.fsType})` });
    }
  }
  for (const s of facts.swaps) {
    if (names.has(s)) found.push({ kind: 'swap', description: `swap is on '${block.name}'` });
  }
  return found;
}

/** Follow dm/md holders: a LUKS or LVM volume on a partition keeps the disk in use. */
function blockTreeUses(root: BlockDevice, facts: HostFacts): Dependency[] {
  const byName = new Map(facts.blocks.map((b) => [b.name, b]));
  const seen = new Set<string>();
  const queue = [root];
  const found: Dependency[] = [];
  while (queue.length > 0) {
    const block = queue.shift()!;
    if (seen.has(block.name)) continue;
    seen.add(block.name);
    for (const use of blockUses(block, facts)) {
      found.push(block === root ? use : { ...use, description: `${use.description} on top of '${root.name}'` });
    }
    for (const h of block.holders) {
      const held = byName.get(h);
      if (held) queue.push(held);
    }
  }
  return found;
}

/**
 * Dependencies of each given device, keyed by address (devices without any
 * are absent). Reads sysfs classes and proc once for all of them, and only
 * what concerns them (readFacts): the answer for a device is the same
 * whether it is asked alone or with every device of the host.
 */
export async function hostDependencies(port: KernelPort, devices: Iterable<PciDevice>): Promise<Map<string, Dependency[]>> {
  const endpoints = [...devices].filter((d) => !d.isBridge);
  const facts = await readFacts(port, endpoints);
  const result = new Map<string, Dependency[]>();
  for (const device of endpoints) {
    const deps: Dependency[] = [];
    for (const block of facts.blocks) {
      if (beneath(device, block.realPath)) deps.push(...blockTreeUses(block, facts));
    }
    for (const net of facts.nets) {
      if (net.up && beneath(device, net.realPath)) {
        deps.push({ kind: 'network', description: `network interface '${net.name}' is up` });
      }
    }
    if (device.bootVga === true) {
      for (const c of facts.consoles) {
        if (/frame ?buffer/i.test(c.description)) {
          deps.push({ kind: 'console', description: `the console '${c.name}' (${c.description}) is drawn on the boot VGA` });
        }
      }
    }
    for (const input of facts.inputs) {
      if (beneath(device, input.realPath)) {
        deps.push({
          kind: 'input',
          description: `the ${input.kinds.join(' and ')} ${q(input.label)} (${input.name}) is connected through it`,
        });
      }
    }
    const role = chipsetRole(device.classCode);
    if (role !== null) deps.push({ kind: 'chipset', description: `${role} (a chipset function)` });
    const unique = [...new Map(deps.map((d) => [d.description, d])).values()];
    if (unique.length > 0) result.set(device.address, unique);
  }
  return result;
}
