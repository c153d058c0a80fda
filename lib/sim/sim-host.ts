/**
 * A simulated host: a folder laid out as `sys/`, `proc/`, `dev/`, `run/`,
 * built from a fixture. Successive commands on the same folder see each
 * other's changes, as on a real machine; `sim.json` keeps the fixture for the
 * simulated kernel's decisions (which driver probes what, which driver hangs).
 *
 * Layout follows the real kernel's, with every path taken from
 * lib/pci/sysfs-layout.ts (what the engine reads): devices live under
 * `sys/devices/pci0000:00/<bridge>/<addr>`, reached through relative links
 * from `sys/bus/pci/devices`, `sys/kernel/iommu_groups/N/devices`,
 * `sys/class/{block,net,drm,graphics}`; a bound device has a `driver` link and
 * its driver a link back; processes are `proc/<pid>/{comm,fd/N}` with fd links
 * whose text is the path the process sees (`/dev/dri/card1`).
 *
 * Binding and unbinding are planned here as file operations and applied by
 * the simulated kernel as one transition (sim-transition.ts), so a process
 * killed inside a write leaves the folder as before or as after it.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_ROOTS, rootsUnder, type HostRoots } from '../roots.js';
import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import {
  classAttr,
  classAttrIn,
  classDeviceDirIn,
  classDir,
  classEntry,
  devlinkDir,
  devlinkEntryIn,
  devNode,
  drmNode,
  entryIn,
  iommuGroupDeviceLink,
  iommuGroupDir,
  iommuGroupsDir,
  mountInfoFile,
  PCI_DRIVER_FILES,
  pciDeviceDir,
  pciDeviceRealDir,
  pciDevicesDir,
  pciDriverDeviceLink,
  pciDriverDir,
  pciDriverFile,
  pciDriversProbe,
  processDir,
  processEntry,
  processFd,
  swapsFile,
  SYSFS_CLASSES,
  vfioContainerNode,
  vfioGroupNode,
  virtualDevicesDir,
  type ClassAttribute,
  type PciDeviceAttribute,
  type SysfsClass,
} from '../pci/sysfs-layout.js';
import { parseFixture, type Fixture, type FixtureDevice } from './fixture.js';
import { withSimLock } from './sim-lock.js';
import { applyFileOps, relLinkOp, rollForward, type FileOp } from './sim-transition.js';

export const SIM_STATE_FILE = 'sim.json';

export interface SimHost {
  readonly dir: string;
  readonly roots: HostRoots;
  readonly fixture: Fixture;
}

/** A device's real directory: under its root bus, beneath the bridges above it (`parent` in the fixture). */
export function simDeviceDir(host: Pick<SimHost, 'roots' | 'fixture'>, address: string): string {
  const chain = deviceChain(host.fixture, address);
  return pciDeviceRealDir(host.roots, chain.length > 0 ? chain : [address]);
}

/** The addresses from the top bridge down to the device. */
function deviceChain(fixture: Fixture, address: string): string[] {
  const chain: string[] = [];
  let current: FixtureDevice | undefined = fixture.devices.find((d) => d.address === address);
  const seen = new Set<string>();
  while (current) {
    if (seen.has(current.address)) throw new InvalidConfig(`Simulated host ${q(fixture.name)}: parent loop at ${q(current.address)}`);
    seen.add(current.address);
    chain.unshift(current.address);
    const parent: string | undefined = current.parent;
    current = parent === undefined ? undefined : fixture.devices.find((d) => d.address === parent);
  }
  return chain;
}

async function writeFile(file: string, content: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, content);
}

/** A relative symlink, as sysfs makes them. */
async function relLink(linkPath: string, target: string): Promise<void> {
  await fs.mkdir(path.dirname(linkPath), { recursive: true });
  await fs.rm(linkPath, { force: true });
  await fs.symlink(path.relative(path.dirname(linkPath), target), linkPath);
}

function mountInfoLine(index: number, m: Fixture['mounts'][number]): string {
  const esc = (s: string): string => s.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return `${20 + index} 1 ${m.dev} / ${esc(m.mountPoint)} rw,relatime shared:${index + 1} - ${m.fsType} ${esc(m.source)} rw`;
}

/**
 * Build a simulated host in `dir` (which must not exist or be empty), with
 * every device bound to its fixture driver.
 */
export async function buildSimHost(fixtureInput: unknown, dir: string): Promise<SimHost> {
  const fixture = parseFixture(
    fixtureInput,
    typeof fixtureInput === 'object' && fixtureInput && 'name' in fixtureInput ? String(fixtureInput.name) : dir,
  );
  const existing = await fs.readdir(dir).catch(() => [] as string[]);
  if (existing.length > 0) {
    throw new InvalidArgs(`Cannot build a simulated host in ${q(dir)}: the folder is not empty; remove it or choose another`);
  }
  const roots = rootsUnder(dir);
  const host: SimHost = { dir, roots, fixture };
  await Promise.all(
    [
      pciDevicesDir(roots),
      iommuGroupsDir(roots),
      ...SYSFS_CLASSES.map((c) => classDir(roots, c)),
      virtualDevicesDir(roots, 'devlink'),
      virtualDevicesDir(roots, 'block'),
    ].map((d) => fs.mkdir(d, { recursive: true })),
  );
  await fs.mkdir(roots.shm, { recursive: true });
  await fs.mkdir(devNode(roots, 'vfio'), { recursive: true });
  await fs.mkdir(devNode(roots, 'input'), { recursive: true });
  await fs.writeFile(vfioContainerNode(roots), '');
  await fs.mkdir(path.join(roots.run), { recursive: true });
  await writeFile(pciDriversProbe(roots), '');

  for (const driver of Object.keys(fixture.drivers)) {
    for (const f of PCI_DRIVER_FILES) await writeFile(pciDriverFile(roots, driver, f), '');
  }

  for (const d of fixture.devices) {
    const devDir = simDeviceDir(host, d.address);
    const attrs: Partial<Record<PciDeviceAttribute, string>> = {
      vendor: `0x${d.vendor}\n`,
      device: `0x${d.device}\n`,
      subsystem_vendor: `0x${d.subsystemVendor ?? d.vendor}\n`,
      subsystem_device: `0x${d.subsystemDevice ?? d.device}\n`,
      class: `${d.class}\n`,
      revision: `0x${d.revision ?? '00'}\n`,
      driver_override: `${d.override ?? '(null)'}\n`,
      remove: '',
      reset: '',
    };
    if (d.bootVga !== undefined) attrs['boot_vga'] = d.bootVga ? '1\n' : '0\n';
    if (d.resetMethod) attrs['reset_method'] = `${d.resetMethod.join(' ')}\n`;
    for (const [name, content] of Object.entries(attrs) as [PciDeviceAttribute, string][]) {
      await writeFile(entryIn(devDir, name), content);
    }
    await relLink(pciDeviceDir(roots, d.address), devDir);
    if (d.group !== null) {
      await relLink(iommuGroupDeviceLink(roots, d.group, d.address), devDir);
      await relLink(entryIn(devDir, 'iommu_group'), iommuGroupDir(roots, d.group));
    }
    for (const consumer of d.consumers) {
      const link = devlinkDir(roots, d.address, consumer);
      await fs.mkdir(link, { recursive: true });
      await relLink(devlinkEntryIn(devDir, 'consumer', consumer), link);
      await relLink(devlinkEntryIn(simDeviceDir(host, consumer), 'supplier', d.address), link);
    }
  }

  for (const p of fixture.processes) await addSimProcess({ roots }, p);
  await writeFile(mountInfoFile(roots), fixture.mounts.map((m, i) => mountInfoLine(i, m) + '\n').join(''));
  await writeFile(
    swapsFile(roots),
    'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n' + fixture.swaps.map((s) => `${s}\t\tpartition\t8388604\t\t0\t\t-2\n`).join(''),
  );
  for (const c of fixture.consoles) {
    await writeFile(classAttr(roots, 'vtconsole', c.name, 'name'), `${c.description}\n`);
    await writeFile(classAttr(roots, 'vtconsole', c.name, 'bind'), c.bound ? '1\n' : '0\n');
  }
  // Platform frame buffers, as the platform bus lays them out: the device's folder under devices/platform,
  // its link in bus/platform/devices, the driver's folder with bind and unbind, and a bound device's two links.
  for (const f of fixture.framebuffers) {
    const deviceDir = path.join(roots.sysfs, 'devices', 'platform', f.device);
    const driverDir = path.join(roots.sysfs, 'bus', 'platform', 'drivers', f.driver);
    await writeFile(path.join(deviceDir, 'uevent'), `DRIVER=${f.bound ? f.driver : ''}\n`);
    await relLink(path.join(roots.sysfs, 'bus', 'platform', 'devices', f.device), deviceDir);
    await writeFile(path.join(driverDir, 'bind'), '');
    await writeFile(path.join(driverDir, 'unbind'), '');
    if (f.bound) {
      await relLink(path.join(deviceDir, 'driver'), driverDir);
      await relLink(path.join(driverDir, f.device), deviceDir);
    }
  }

  await fs.writeFile(path.join(dir, SIM_STATE_FILE), JSON.stringify({ fixture }, null, 2) + '\n');
  for (const d of fixture.devices) {
    if (d.driver) await applyFileOps(planBind(host, d.address, d.driver));
  }
  return host;
}

/** Open a simulated host built earlier. */
export async function openSimHost(dir: string): Promise<SimHost> {
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, SIM_STATE_FILE), 'utf8');
  } catch {
    throw new InvalidArgs(`${q(dir)} is not a simulated host (no ${SIM_STATE_FILE}); build one with --simulate FIXTURE`);
  }
  const { fixture } = JSON.parse(text) as { fixture: unknown };
  const host: SimHost = { dir, roots: rootsUnder(dir), fixture: parseFixture(fixture, dir) };
  // The folder is what the last process left: finish the write it was killed in, before anything is read.
  await withSimLock(dir, () => rollForward(dir));
  return host;
}

function fixtureDevice(host: SimHost, address: string): FixtureDevice {
  const d = host.fixture.devices.find((x) => x.address === address);
  if (!d) throw new InvalidArgs(`No device ${q(address)} in simulated host ${q(host.fixture.name)}`);
  return d;
}

function hostDriverOf(d: FixtureDevice): string | null {
  return d.hostDriver !== undefined ? d.hostDriver : (d.driver ?? null);
}

/**
 * Capability bitmaps of each simulated input kind, copied from real devices
 * (`/proc/bus/input/devices` of a Logitech K120 keyboard, an M105 mouse and an
 * Xbox 360 pad on x86_64): 64-bit words, highest first, as sysfs prints them.
 */
type InputCapability = ClassAttribute<'input'> extends infer A ? (A extends `capabilities/${infer C}` ? C : never) : never;
const INPUT_CAPABILITIES: Readonly<Record<FixtureDevice['input'][number]['kind'], Readonly<Record<InputCapability, string>>>> = {
  keyboard: {
    ev: '120013',
    key: '1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe',
    rel: '0',
    abs: '0',
    msc: '10',
    led: '7',
  },
  mouse: { ev: '17', key: '1f0000 0 0 0 0', rel: '903', abs: '0', msc: '10', led: '0' },
  gamepad: { ev: '20000b', key: '7cdb000000000000 0 0 0 0', rel: '0', abs: '3003f', msc: '0', led: '0' },
};

const HID_IDS: Readonly<Record<FixtureDevice['input'][number]['kind'], string>> = {
  keyboard: '046D:C31C',
  mouse: '046D:C077',
  gamepad: '045E:028E',
};

interface SimInput {
  readonly number: number;
  readonly name: string;
  readonly kind: FixtureDevice['input'][number]['kind'];
  /** The input device's directory relative to its PCI device's. */
  readonly relDir: string;
  /** The root hub's directory relative to the PCI device's (removed on unbind). */
  readonly hub: string;
  readonly phys: string;
}

/**
 * Where a device's inputs live, as the kernel lays out USB HID:
 * `ADDR/usbB/B-P/B-P:1.0/0003:VVVV:PPPP.NNNN/input/inputN`. Input numbers are
 * counted over the whole host in fixture order, bus numbers over its USB
 * controllers, so every build of a fixture gives the same names.
 */
function simInputs(fixture: Fixture, address: string): SimInput[] {
  let number = 0;
  let bus = 0;
  for (const d of fixture.devices) {
    if (/^0x0c03/.test(d.class)) bus += 1;
    if (d.address !== address) {
      number += d.input.length;
      continue;
    }
    return d.input.map((input, i) => {
      const port = `${bus}-${i + 1}`;
      const n = number + i;
      const hid = `0003:${HID_IDS[input.kind]}.${(n + 1).toString(16).toUpperCase().padStart(4, '0')}`;
      return {
        number: n,
        name: input.name,
        kind: input.kind,
        hub: `usb${bus}`,
        relDir: path.join(`usb${bus}`, port, `${port}:1.0`, hid, 'input', `input${n}`),
        phys: `usb-${address}-${i + 1}/input0`,
      };
    });
  }
  return [];
}

/** What the host driver makes when it binds: DRM nodes, frame buffers, interfaces, disks, input devices. */
function driverChildrenOps(host: SimHost, d: FixtureDevice, devDir: string): FileOp[] {
  const roots = host.roots;
  const ops: FileOp[] = [];
  for (const node of d.drm) {
    const nodeDir = classDeviceDirIn(devDir, 'drm', node);
    ops.push({ op: 'write', path: classAttrIn(nodeDir, 'drm', 'dev'), content: '226:0\n' });
    // Writing an action here makes the kernel send that uevent (sim-kernel.ts logs it in SIM_UEVENT_LOG).
    ops.push({ op: 'write', path: path.join(nodeDir, 'uevent'), content: `DEVNAME=dri/${node}\nDEVTYPE=drm_minor\n` });
    ops.push(relLinkOp(classEntry(roots, 'drm', node), nodeDir));
    ops.push({ op: 'write', path: drmNode(roots, node), content: '' });
  }
  for (const fb of d.fb) {
    const fbDir = classDeviceDirIn(devDir, 'graphics', fb);
    ops.push({ op: 'mkdir', path: fbDir });
    ops.push(relLinkOp(classEntry(roots, 'graphics', fb), fbDir));
    ops.push({ op: 'write', path: devNode(roots, fb), content: '' });
  }
  for (const n of d.net) {
    const netDir = classDeviceDirIn(devDir, 'net', n.name);
    // IFF_UP | IFF_BROADCAST | IFF_MULTICAST when up, as `ip link` leaves them.
    ops.push({ op: 'write', path: classAttrIn(netDir, 'net', 'flags'), content: n.up ? '0x1003\n' : '0x1002\n' });
    ops.push({ op: 'write', path: classAttrIn(netDir, 'net', 'operstate'), content: n.up ? 'up\n' : 'down\n' });
    ops.push(relLinkOp(classEntry(roots, 'net', n.name), netDir));
  }
  for (const b of d.block) {
    // Disks sit beneath the NVMe controller's own device, as on a real machine.
    const diskDir = path.join(devDir, 'nvme', 'nvme0', b.name);
    ops.push({ op: 'write', path: classAttrIn(diskDir, 'block', 'dev'), content: `${b.dev}\n` });
    ops.push({ op: 'mkdir', path: classAttrIn(diskDir, 'block', 'holders') });
    ops.push(relLinkOp(classEntry(roots, 'block', b.name), diskDir));
    ops.push({ op: 'write', path: devNode(roots, b.name), content: '' });
    for (const p of b.partitions) {
      const partDir = path.join(diskDir, p.name);
      ops.push({ op: 'write', path: classAttrIn(partDir, 'block', 'dev'), content: `${p.dev}\n` });
      ops.push({ op: 'mkdir', path: classAttrIn(partDir, 'block', 'holders') });
      ops.push(relLinkOp(classEntry(roots, 'block', p.name), partDir));
      ops.push({ op: 'write', path: devNode(roots, p.name), content: '' });
    }
  }
  for (const input of simInputs(host.fixture, d.address)) {
    const inputDir = path.join(devDir, input.relDir);
    ops.push({ op: 'write', path: classAttrIn(inputDir, 'input', 'name'), content: `${input.name}\n` });
    ops.push({ op: 'write', path: classAttrIn(inputDir, 'input', 'phys'), content: `${input.phys}\n` });
    for (const [cap, bits] of Object.entries(INPUT_CAPABILITIES[input.kind]) as [InputCapability, string][]) {
      ops.push({ op: 'write', path: classAttrIn(inputDir, 'input', `capabilities/${cap}`), content: `${bits}\n` });
    }
    const event = `event${input.number}`;
    const eventDir = path.join(inputDir, event);
    ops.push({ op: 'write', path: classAttrIn(eventDir, 'input', 'dev'), content: `13:${64 + input.number}\n` });
    ops.push(relLinkOp(classEntry(roots, 'input', `input${input.number}`), inputDir));
    ops.push(relLinkOp(classEntry(roots, 'input', event), eventDir));
    ops.push({ op: 'write', path: devNode(roots, 'input', event), content: '' });
  }
  return ops;
}

function removeDriverChildrenOps(host: SimHost, d: FixtureDevice, devDir: string): FileOp[] {
  const roots = host.roots;
  const names: (readonly [SysfsClass, string, string])[] = [
    ...d.drm.map((n) => ['drm', n, drmNode(roots, n)] as const),
    ...d.fb.map((n) => ['graphics', n, devNode(roots, n)] as const),
    ...d.block.flatMap((b) => [b.name, ...b.partitions.map((p) => p.name)]).map((n) => ['block', n, devNode(roots, n)] as const),
  ];
  const ops: FileOp[] = [];
  for (const [cls, name, node] of names) {
    ops.push({ op: 'remove', path: classEntry(roots, cls, name) });
    ops.push({ op: 'remove', path: node });
  }
  for (const n of d.net) ops.push({ op: 'remove', path: classEntry(roots, 'net', n.name) });
  const inputs = simInputs(host.fixture, d.address);
  for (const input of inputs) {
    ops.push({ op: 'remove', path: classEntry(roots, 'input', `input${input.number}`) });
    ops.push({ op: 'remove', path: classEntry(roots, 'input', `event${input.number}`) });
    ops.push({ op: 'remove', path: devNode(roots, 'input', `event${input.number}`) });
  }
  for (const hub of new Set(inputs.map((i) => i.hub))) ops.push({ op: 'remove', path: path.join(devDir, hub) });
  for (const child of ['drm', 'graphics', 'net', 'nvme']) ops.push({ op: 'remove', path: path.join(devDir, child) });
  return ops;
}

/**
 * The file operations of binding a device to a driver, with everything the
 * driver makes. No checks: the kernel model decides. Changes nothing.
 */
export function planBind(host: SimHost, address: string, driver: string): FileOp[] {
  const d = fixtureDevice(host, address);
  const devDir = simDeviceDir(host, address);
  const ops = [
    relLinkOp(entryIn(devDir, 'driver'), pciDriverDir(host.roots, driver)),
    relLinkOp(pciDriverDeviceLink(host.roots, driver, address), devDir),
  ];
  if (driver === 'vfio-pci') {
    if (d.group !== null) ops.push({ op: 'write', path: vfioGroupNode(host.roots, d.group), content: '' });
  } else if (driver === hostDriverOf(d)) {
    ops.push(...driverChildrenOps(host, d, devDir));
  }
  return ops;
}

/** The file operations of unbinding a device from its driver, decided from the folder as it is now. Changes nothing. */
export async function planUnbind(host: SimHost, address: string, driver: string): Promise<FileOp[]> {
  const d = fixtureDevice(host, address);
  const devDir = simDeviceDir(host, address);
  const ops: FileOp[] = [
    { op: 'remove', path: entryIn(devDir, 'driver') },
    { op: 'remove', path: pciDriverDeviceLink(host.roots, driver, address) },
  ];
  if (driver === 'vfio-pci') {
    // /dev/vfio/<group> lives while any device of the group is on vfio-pci.
    const stillVfio = await Promise.all(
      host.fixture.devices
        .filter((x) => x.group === d.group && x.address !== address)
        .map(async (x) => (await fs.readlink(pciDriverDeviceLink(host.roots, 'vfio-pci', x.address)).catch(() => null)) !== null),
    );
    if (d.group !== null && !stillVfio.some(Boolean)) ops.push({ op: 'remove', path: vfioGroupNode(host.roots, d.group) });
  } else {
    ops.push(...removeDriverChildrenOps(host, d, devDir));
  }
  return ops;
}

/** The fd link text of a VFIO device fd (an anonymous inode, as procfs shows it). */
export const VFIO_DEVICE_LINK = 'anon_inode:[vfio-device]';
/** In a fixture's `fds`, `vfio-device:ADDR` stands for a VFIO device fd of ADDR. */
const VFIO_DEVICE_PREFIX = 'vfio-device:';

/**
 * Start a simulated process holding device nodes: a display server holding
 * `/dev/dri/card1`, or QEMU holding `/dev/vfio/vfio`, `/dev/vfio/25` and the
 * device fds (`vfio-device:0000:0b:00.0`, shown as `anon_inode:[vfio-device]`
 * with the device's path in `fdinfo`, as kernels since 6.8 show it).
 */
export async function addSimProcess(
  host: Pick<SimHost, 'roots'>,
  process: { pid: number; comm: string; fds: readonly string[] },
): Promise<void> {
  const { roots } = host;
  const pid = process.pid;
  await writeFile(processEntry(roots, pid, 'comm'), `${process.comm}\n`);
  await fs.mkdir(processEntry(roots, pid, 'fd'), { recursive: true });
  await fs.mkdir(processEntry(roots, pid, 'fdinfo'), { recursive: true });
  for (const [i, target] of process.fds.entries()) {
    const fd = String(i + 3);
    if (target.startsWith(VFIO_DEVICE_PREFIX)) {
      await fs.symlink(VFIO_DEVICE_LINK, processFd(roots, pid, 'fd', fd));
      // The device's path as the kernel names it, whatever root the folder stands for.
      const syspath = pciDeviceDir(DEFAULT_ROOTS, target.slice(VFIO_DEVICE_PREFIX.length));
      await writeFile(
        processFd(roots, pid, 'fdinfo', fd),
        `pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nvfio-device-syspath: ${syspath}\n`,
      );
    } else {
      // Link text is the path as the process sees it; it dangles in the folder, as it should.
      await fs.symlink(target, processFd(roots, pid, 'fd', fd));
    }
  }
}

export async function removeSimProcess(host: Pick<SimHost, 'roots'>, pid: number): Promise<void> {
  await fs.rm(processDir(host.roots, pid), { recursive: true, force: true });
}

export { hostDriverOf };
