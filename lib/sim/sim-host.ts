/**
 * A simulated host: a folder laid out as `sys/`, `proc/`, `dev/`, `run/`,
 * built from a fixture. Successive commands on the same folder see each
 * other's changes, as on a real machine; `sim.json` keeps the fixture for the
 * simulated kernel's decisions (which driver probes what, which driver hangs).
 *
 * Layout follows the real kernel's: devices live under
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
import { rootsUnder, type HostRoots } from '../roots.js';
import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import { parseFixture, type Fixture, type FixtureDevice } from './fixture.js';
import { withSimLock } from './sim-lock.js';
import { applyFileOps, relLinkOp, rollForward, type FileOp } from './sim-transition.js';

export const SIM_STATE_FILE = 'sim.json';

export interface SimHost {
  readonly dir: string;
  readonly roots: HostRoots;
  readonly fixture: Fixture;
}

/** A device's real directory, relative to the sysfs root. */
export function deviceRelPath(fixture: Fixture, address: string): string {
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
  const top = chain[0] ?? address;
  return path.join('devices', `pci${top.slice(0, 7)}`, ...chain);
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
  const fixture = parseFixture(fixtureInput, typeof fixtureInput === 'object' && fixtureInput && 'name' in fixtureInput ? String(fixtureInput.name) : dir);
  const existing = await fs.readdir(dir).catch(() => [] as string[]);
  if (existing.length > 0) {
    throw new InvalidArgs(`Cannot build a simulated host in ${q(dir)}: the folder is not empty; remove it or choose another`);
  }
  const roots = rootsUnder(dir);
  const sys = roots.sysfs;
  await Promise.all(
    [
      'bus/pci/devices',
      'kernel/iommu_groups',
      'class/block',
      'class/net',
      'class/drm',
      'class/graphics',
      'class/vtconsole',
      'class/input',
      'devices/virtual/devlink',
      'devices/virtual/block',
    ].map((d) => fs.mkdir(path.join(sys, d), { recursive: true })),
  );
  await fs.mkdir(roots.shm, { recursive: true });
  await fs.mkdir(path.join(roots.dev, 'vfio'), { recursive: true });
  await fs.mkdir(path.join(roots.dev, 'input'), { recursive: true });
  await fs.writeFile(path.join(roots.dev, 'vfio', 'vfio'), '');
  await fs.mkdir(path.join(roots.run), { recursive: true });
  await writeFile(path.join(sys, 'bus/pci/drivers_probe'), '');

  for (const driver of Object.keys(fixture.drivers)) {
    for (const f of ['bind', 'unbind', 'new_id', 'remove_id']) await writeFile(path.join(sys, 'bus/pci/drivers', driver, f), '');
  }

  for (const d of fixture.devices) {
    const devDir = path.join(sys, deviceRelPath(fixture, d.address));
    const attrs: Record<string, string> = {
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
    for (const [name, content] of Object.entries(attrs)) await writeFile(path.join(devDir, name), content);
    await relLink(path.join(sys, 'bus/pci/devices', d.address), devDir);
    if (d.group !== null) {
      const groupDir = path.join(sys, 'kernel/iommu_groups', String(d.group));
      await relLink(path.join(groupDir, 'devices', d.address), devDir);
      await relLink(path.join(devDir, 'iommu_group'), groupDir);
    }
    for (const consumer of d.consumers) {
      const link = path.join(sys, 'devices/virtual/devlink', `pci:${d.address}--pci:${consumer}`);
      await fs.mkdir(link, { recursive: true });
      await relLink(path.join(devDir, `consumer:pci:${consumer}`), link);
      await relLink(path.join(sys, deviceRelPath(fixture, consumer), `supplier:pci:${d.address}`), link);
    }
  }

  for (const p of fixture.processes) await addSimProcess({ roots }, p);
  await writeFile(path.join(roots.proc, 'self', 'mountinfo'), fixture.mounts.map((m, i) => mountInfoLine(i, m) + '\n').join(''));
  await writeFile(
    path.join(roots.proc, 'swaps'),
    'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n' +
      fixture.swaps.map((s) => `${s}\t\tpartition\t8388604\t\t0\t\t-2\n`).join(''),
  );
  for (const c of fixture.consoles) {
    await writeFile(path.join(sys, 'class/vtconsole', c.name, 'name'), `${c.description}\n`);
    await writeFile(path.join(sys, 'class/vtconsole', c.name, 'bind'), c.bound ? '1\n' : '0\n');
  }

  await fs.writeFile(path.join(dir, SIM_STATE_FILE), JSON.stringify({ fixture }, null, 2) + '\n');
  const host: SimHost = { dir, roots, fixture };
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
const INPUT_CAPABILITIES: Readonly<Record<FixtureDevice['input'][number]['kind'], Readonly<Record<string, string>>>> = {
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
  const sys = host.roots.sysfs;
  const ops: FileOp[] = [];
  for (const node of d.drm) {
    ops.push({ op: 'write', path: path.join(devDir, 'drm', node, 'dev'), content: '226:0\n' });
    ops.push(relLinkOp(path.join(sys, 'class/drm', node), path.join(devDir, 'drm', node)));
    ops.push({ op: 'write', path: path.join(host.roots.dev, 'dri', node), content: '' });
  }
  for (const fb of d.fb) {
    ops.push({ op: 'mkdir', path: path.join(devDir, 'graphics', fb) });
    ops.push(relLinkOp(path.join(sys, 'class/graphics', fb), path.join(devDir, 'graphics', fb)));
    ops.push({ op: 'write', path: path.join(host.roots.dev, fb), content: '' });
  }
  for (const n of d.net) {
    const netDir = path.join(devDir, 'net', n.name);
    // IFF_UP | IFF_BROADCAST | IFF_MULTICAST when up, as `ip link` leaves them.
    ops.push({ op: 'write', path: path.join(netDir, 'flags'), content: n.up ? '0x1003\n' : '0x1002\n' });
    ops.push({ op: 'write', path: path.join(netDir, 'operstate'), content: n.up ? 'up\n' : 'down\n' });
    ops.push(relLinkOp(path.join(sys, 'class/net', n.name), netDir));
  }
  for (const b of d.block) {
    const diskDir = path.join(devDir, 'nvme', 'nvme0', b.name);
    ops.push({ op: 'write', path: path.join(diskDir, 'dev'), content: `${b.dev}\n` });
    ops.push({ op: 'mkdir', path: path.join(diskDir, 'holders') });
    ops.push(relLinkOp(path.join(sys, 'class/block', b.name), diskDir));
    ops.push({ op: 'write', path: path.join(host.roots.dev, b.name), content: '' });
    for (const p of b.partitions) {
      const partDir = path.join(diskDir, p.name);
      ops.push({ op: 'write', path: path.join(partDir, 'dev'), content: `${p.dev}\n` });
      ops.push({ op: 'mkdir', path: path.join(partDir, 'holders') });
      ops.push(relLinkOp(path.join(sys, 'class/block', p.name), partDir));
      ops.push({ op: 'write', path: path.join(host.roots.dev, p.name), content: '' });
    }
  }
  for (const input of simInputs(host.fixture, d.address)) {
    const inputDir = path.join(devDir, input.relDir);
    ops.push({ op: 'write', path: path.join(inputDir, 'name'), content: `${input.name}\n` });
    ops.push({ op: 'write', path: path.join(inputDir, 'phys'), content: `${input.phys}\n` });
    for (const [cap, bits] of Object.entries(INPUT_CAPABILITIES[input.kind])) {
      ops.push({ op: 'write', path: path.join(inputDir, 'capabilities', cap), content: `${bits}\n` });
    }
    const event = `event${input.number}`;
    ops.push({ op: 'write', path: path.join(inputDir, event, 'dev'), content: `13:${64 + input.number}\n` });
    ops.push(relLinkOp(path.join(sys, 'class/input', `input${input.number}`), inputDir));
    ops.push(relLinkOp(path.join(sys, 'class/input', event), path.join(inputDir, event)));
    ops.push({ op: 'write', path: path.join(host.roots.dev, 'input', event), content: '' });
  }
  return ops;
}

function removeDriverChildrenOps(host: SimHost, d: FixtureDevice, devDir: string): FileOp[] {
  const sys = host.roots.sysfs;
  const names = [
    ...d.drm.map((n) => ['class/drm', n, path.join('dri', n)] as const),
    ...d.fb.map((n) => ['class/graphics', n, n] as const),
    ...d.block.flatMap((b) => [b.name, ...b.partitions.map((p) => p.name)]).map((n) => ['class/block', n, n] as const),
  ];
  const ops: FileOp[] = [];
  for (const [cls, name, devNode] of names) {
    ops.push({ op: 'remove', path: path.join(sys, cls, name) });
    ops.push({ op: 'remove', path: path.join(host.roots.dev, devNode) });
  }
  for (const n of d.net) ops.push({ op: 'remove', path: path.join(sys, 'class/net', n.name) });
  const inputs = simInputs(host.fixture, d.address);
  for (const input of inputs) {
    ops.push({ op: 'remove', path: path.join(sys, 'class/input', `input${input.number}`) });
    ops.push({ op: 'remove', path: path.join(sys, 'class/input', `event${input.number}`) });
    ops.push({ op: 'remove', path: path.join(host.roots.dev, 'input', `event${input.number}`) });
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
  const sys = host.roots.sysfs;
  const devDir = path.join(sys, deviceRelPath(host.fixture, address));
  const driverDir = path.join(sys, 'bus/pci/drivers', driver);
  const ops = [relLinkOp(path.join(devDir, 'driver'), driverDir), relLinkOp(path.join(driverDir, address), devDir)];
  if (driver === 'vfio-pci') {
    if (d.group !== null) ops.push({ op: 'write', path: path.join(host.roots.dev, 'vfio', String(d.group)), content: '' });
  } else if (driver === hostDriverOf(d)) {
    ops.push(...driverChildrenOps(host, d, devDir));
  }
  return ops;
}

/** The file operations of unbinding a device from its driver, decided from the folder as it is now. Changes nothing. */
export async function planUnbind(host: SimHost, address: string, driver: string): Promise<FileOp[]> {
  const d = fixtureDevice(host, address);
  const sys = host.roots.sysfs;
  const devDir = path.join(sys, deviceRelPath(host.fixture, address));
  const ops: FileOp[] = [
    { op: 'remove', path: path.join(devDir, 'driver') },
    { op: 'remove', path: path.join(sys, 'bus/pci/drivers', driver, address) },
  ];
  if (driver === 'vfio-pci') {
    // /dev/vfio/<group> lives while any device of the group is on vfio-pci.
    const stillVfio = await Promise.all(
      host.fixture.devices
        .filter((x) => x.group === d.group && x.address !== address)
        .map(async (x) => (await fs.readlink(path.join(sys, 'bus/pci/drivers/vfio-pci', x.address)).catch(() => null)) !== null),
    );
    if (d.group !== null && !stillVfio.some(Boolean)) ops.push({ op: 'remove', path: path.join(host.roots.dev, 'vfio', String(d.group)) });
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
  const dir = path.join(host.roots.proc, String(process.pid));
  await writeFile(path.join(dir, 'comm'), `${process.comm}\n`);
  await fs.mkdir(path.join(dir, 'fd'), { recursive: true });
  await fs.mkdir(path.join(dir, 'fdinfo'), { recursive: true });
  for (const [i, target] of process.fds.entries()) {
    const fd = String(i + 3);
    if (target.startsWith(VFIO_DEVICE_PREFIX)) {
      await fs.symlink(VFIO_DEVICE_LINK, path.join(dir, 'fd', fd));
      const syspath = `/sys/bus/pci/devices/${target.slice(VFIO_DEVICE_PREFIX.length)}`;
      await writeFile(path.join(dir, 'fdinfo', fd), `pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nvfio-device-syspath: ${syspath}\n`);
    } else {
      // Link text is the path as the process sees it; it dangles in the folder, as it should.
      await fs.symlink(target, path.join(dir, 'fd', fd));
    }
  }
}

export async function removeSimProcess(host: Pick<SimHost, 'roots'>, pid: number): Promise<void> {
  await fs.rm(path.join(host.roots.proc, String(pid)), { recursive: true, force: true });
}

export { hostDriverOf };
