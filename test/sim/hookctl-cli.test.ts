/**
 * vfio-hookctl on simulated hosts: what it prints, its exit codes, and what
 * it leaves behind (driver links, driver_override, /dev/vfio nodes, the
 * state file). Each test has its own --sim-dir in a temp folder; every
 * command is a fresh runHookctl call (or a fresh process), so changes are
 * seen only through the folder, as between two real invocations.
 */
import { tempDir as makeTempDir } from '../helpers/temp-dir.js';
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runHookctl } from '../../lib/cli/hookctl.js';
import type { DevicesView } from '../../lib/cli/device-view.js';
import { addSimProcess, openSimulation } from '../../lib/sim/index.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function hookctl(argv: readonly string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await runHookctl(argv, {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
  });
  return { code, stdout, stderr };
}

/** The real executable in a child process, from the repo root. */
function executable(argv: readonly string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'service/vfio-hookctl.ts', ...argv],
      { cwd: REPO, timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') return reject(error);
        resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
      },
    );
  });
}

interface Sim {
  /** The --sim-dir (not built until the first command). */
  dir: string;
  /** A fresh invocation on this simulated host. */
  run(...args: string[]): Promise<Run>;
  driverOf(address: string): Promise<string | null>;
  driversOf(addresses: readonly string[]): Promise<Record<string, string | null>>;
  overrideOf(address: string): Promise<string>;
  exists(relative: string): Promise<boolean>;
  /** Everything in the folder: links with their text, files with their contents. */
  snapshot(): Promise<Map<string, string>>;
  statePath: string;
}

const tempDir = (t: ExecutionContext): Promise<string> => makeTempDir(t, 'vfio-hookctl-');

async function makeSim(t: ExecutionContext, fixture = 'reference-host'): Promise<Sim> {
  const dir = path.join(await tempDir(t), 'sim');
  const devices = path.join(dir, 'sys', 'bus', 'pci', 'devices');
  const sim: Sim = {
    dir,
    statePath: path.join(dir, 'run', 'vfio-hookd', 'state.json'),
    run: (...args) => hookctl(['--simulate', fixture, '--sim-dir', dir, ...args]),
    async driverOf(address) {
      const link = await fs.readlink(path.join(devices, address, 'driver')).catch(() => null);
      return link === null ? null : path.basename(link);
    },
    async driversOf(addresses) {
      const out: Record<string, string | null> = {};
      for (const a of addresses) out[a] = await sim.driverOf(a);
      return out;
    },
    async overrideOf(address) {
      return (await fs.readFile(path.join(devices, address, 'driver_override'), 'utf8')).trim();
    },
    exists: (relative) =>
      fs.lstat(path.join(dir, relative)).then(
        () => true,
        () => false,
      ),
    async snapshot() {
      // A walk of our own: readdir's `recursive` follows links to folders, and
      // sysfs links loop (device -> driver -> device).
      const out = new Map<string, string>();
      const walk = async (relative: string): Promise<void> => {
        for (const entry of await fs.readdir(path.join(dir, relative), { withFileTypes: true })) {
          const rel = path.join(relative, entry.name);
          const full = path.join(dir, rel);
          // The state folder appears with the first use of the state lock; its files are compared, not the folder.
          if (rel === path.join('run', 'vfio-hookd')) {
            await walk(rel);
            continue;
          }
          if (entry.isSymbolicLink()) out.set(rel, `-> ${await fs.readlink(full)}`);
          else if (entry.isDirectory()) {
            out.set(rel, 'dir');
            await walk(rel);
          } else out.set(rel, await fs.readFile(full, 'utf8'));
        }
      };
      await walk('');
      return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
    },
  };
  return sim;
}

async function devicesJson(sim: Sim): Promise<DevicesView> {
  const result = await sim.run('devices', '--json');
  if (result.code !== 0) throw new Error(`devices failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as DevicesView;
}

function deviceIn(view: DevicesView, address: string): DevicesView['devices'][number] {
  const device = view.devices.find((d) => d.address === address);
  if (!device) throw new Error(`no ${address} in the listing`);
  return device;
}

function groupIn(view: DevicesView, group: number): DevicesView['groups'][number] {
  const found = view.groups.find((g) => g.group === group);
  if (!found) throw new Error(`no group ${group} in the listing`);
  return found;
}

const RX580 = ['0000:0a:00.0', '0000:0a:00.1'];
const RX590 = ['0000:0b:00.0', '0000:0b:00.1'];
const HOST_580 = { '0000:0a:00.0': 'amdgpu', '0000:0a:00.1': 'snd_hda_intel' };
const HOST_590 = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' };
const VFIO_590 = { '0000:0b:00.0': 'vfio-pci', '0000:0b:00.1': 'vfio-pci' };

const DETACH_590_TEXT =
  "0000:0b:00.1  group 25  snd_hda_intel -> vfio-pci  (same card as '0000:0b:00.0')\n" +
  '0000:0b:00.0  group 25  amdgpu -> vfio-pci  (requested)\n';

// ---------------------------------------------------------------- devices

test('devices --json lists the RX 580 and RX 590 groups with their functions, viability and blockers', async (t) => {
  const sim = await makeSim(t);
  const view = await devicesJson(sim);

  t.deepEqual(groupIn(view, 24), {
    group: 24,
    viable: false,
    blockers: [
      { address: '0000:0a:00.0', driver: 'amdgpu' },
      { address: '0000:0a:00.1', driver: 'snd_hda_intel' },
    ],
    devices: RX580,
  });
  t.deepEqual(groupIn(view, 25), {
    group: 25,
    viable: false,
    blockers: [
      { address: '0000:0b:00.0', driver: 'amdgpu' },
      { address: '0000:0b:00.1', driver: 'snd_hda_intel' },
    ],
    devices: RX590,
  });
  t.true(view.holdersComplete);

  const gpu = deviceIn(view, '0000:0b:00.0');
  t.like(gpu, {
    vendorId: '1002',
    deviceId: '67df',
    classCode: '0x030000',
    driver: 'amdgpu',
    driverOverride: null,
    iommuGroup: 25,
    claim: null,
  });
  t.deepEqual(gpu.consumers, ['0000:0b:00.1']);
  t.deepEqual(gpu.holders, []);
  t.deepEqual(await sim.driversOf([...RX580, ...RX590]), { ...HOST_580, ...HOST_590 }, 'listing changes nothing');
});

test('devices --json shows Xorg and gnome-shell holding the host RX 580 through /dev/dri/card0', async (t) => {
  const sim = await makeSim(t);
  const host = deviceIn(await devicesJson(sim), '0000:0a:00.0');
  t.deepEqual(
    host.holders.filter((h) => h.path === '/dev/dri/card0'),
    [
      { pid: 1187, comm: 'Xorg', path: '/dev/dri/card0' },
      { pid: 1502, comm: 'gnome-shell', path: '/dev/dri/card0' },
    ],
  );
  t.deepEqual([...new Set(host.holders.map((h) => `${h.comm}(${h.pid})`))], ['Xorg(1187)', 'gnome-shell(1502)']);
  t.true(host.bootVga === true);
});

test('devices --json names what the host needs the NVMe for, the root filesystem among it', async (t) => {
  const sim = await makeSim(t);
  const nvme = deviceIn(await devicesJson(sim), '0000:01:00.0');
  t.is(nvme.driver, 'nvme');
  t.true(
    nvme.hostDependencies.some((d) => d.includes("'/' is mounted from 'nvme0n1p2'")),
    nvme.hostDependencies.join(' | '),
  );
  t.deepEqual(nvme.hostDependencies, [
    "'/boot' is mounted from 'nvme0n1p1' (vfat)",
    "'/' is mounted from 'nvme0n1p2' (ext4)",
    "'/nix/store' is mounted from 'nvme0n1p2' (ext4)",
    "swap is on 'nvme0n1p3'",
  ]);
});

/** A device's line in `devices` and its notes (the wrapped lines under it, joined back with spaces). */
function deviceBlock(stdout: string, address: string): { line: string; notes: string } {
  const lines = stdout.split('\n');
  const at = lines.findIndex((l) => l.trimStart().startsWith(`${address} `));
  const notes: string[] = [];
  for (let i = at + 1; i < lines.length && /^ {16,}\S/.test(lines[i]!) && !/^ +[0-9a-f]{4}:[0-9a-f]{2}:/.test(lines[i]!); i++)
    notes.push(lines[i]!.trim());
  return { line: at >= 0 ? lines[at]! : '', notes: notes.join(' ') };
}

test('devices prints a header row, one header per IOMMU group and the holders of the host card', async (t) => {
  const sim = await makeSim(t);
  const result = await sim.run('devices');
  t.is(result.code, 0);
  t.is(result.stderr, '');
  const lines = result.stdout.split('\n');
  t.regex(lines[0]!, /^ {2}ADDRESS +IDS +REV DRIVER +DEVICE$/);
  const g24 = lines.indexOf('IOMMU group 24 (not viable: amdgpu, snd_hda_intel bound)');
  const g25 = lines.indexOf('IOMMU group 25 (not viable: amdgpu, snd_hda_intel bound)');
  t.true(g24 >= 0 && g25 > g24, result.stdout);
  const host = deviceBlock(result.stdout, '0000:0a:00.0');
  t.regex(host.line, /^ {2}0000:0a:00\.0 +1002:67df +e7 +amdgpu +VGA compatible controller \[0300\]$/);
  t.regex(host.notes, /^subsystem 1da2:e366; boot VGA; held by Xorg \(1187\), gnome-shell \(1502\); host needs it: /);
  t.regex(deviceBlock(result.stdout, '0000:0a:00.1').line, /^ {2}0000:0a:00\.1 +1002:aaf0 +00 +snd_hda_intel +Audio device \[0403\]$/);
  const guest = deviceBlock(result.stdout, '0000:0b:00.0');
  t.regex(guest.line, /^ {2}0000:0b:00\.0 +1002:67df +e1 +amdgpu +VGA compatible controller \[0300\]$/);
  t.is(
    guest.notes,
    'subsystem 1682:c590; reset bus',
    'the RX 590 differs from the RX 580 by revision and subsystem only (its reset methods are its own fixture value)',
  );
  t.true(lines.indexOf(guest.line) > g25);
  t.regex(deviceBlock(result.stdout, '0000:01:00.0').notes, /host needs it: .*'\/' is mounted from 'nvme0n1p2' \(ext4\)/);
  t.false(result.stdout.includes('Note: not every process could be read'), 'the simulated /proc is fully readable');
});

test('devices fits 80 and 120 columns, names devices from pci.ids, and shows driver_override', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('devices')).code, 0); // builds the host
  const ids = path.join(sim.dir, 'usr/share/misc/pci.ids');
  await fs.mkdir(path.dirname(ids), { recursive: true });
  await fs.writeFile(
    ids,
    [
      '# a few lines of the PCI ID Repository',
      '1002  Advanced Micro Devices, Inc. [AMD/ATI]',
      '\t67df  Ellesmere [Radeon RX 470/480/570/570X/580/580X/590]',
      '\t\t1682 c590  Radeon RX 590 Fatboy',
      '1682  XFX Limited',
      '1da2  Sapphire Technology Limited',
      'C 00  Unclassified device',
      '',
    ].join('\n'),
  );
  await fs.writeFile(path.join(sim.dir, 'sys/bus/pci/devices/0000:0b:00.1/driver_override'), 'vfio-pci\n');
  for (const width of [80, 120]) {
    const result = await sim.run('devices', '--width', String(width));
    t.is(result.code, 0, result.stderr);
    const long = result.stdout.split('\n').filter((l) => l.length > width);
    t.deepEqual(long, [], `every line fits ${width} columns`);
    const guest = deviceBlock(result.stdout, '0000:0b:00.0');
    t.true(guest.line.startsWith('  0000:0b:00.0  1002:67df  e1  amdgpu'), guest.line);
    t.true(guest.line.includes(' [0300] Ellesmere [Radeon RX'), guest.line);
    t.is(guest.notes, 'subsystem 1682:c590 (Radeon RX 590 Fatboy); reset bus');
    t.is(deviceBlock(result.stdout, '0000:0a:00.0').notes.split(';')[0], 'subsystem 1da2:e366 (Sapphire Technology Limited device)');
    t.is(deviceBlock(result.stdout, '0000:0b:00.1').notes, 'subsystem 1682:aaf0 (XFX Limited device); driver_override vfio-pci; reset bus');
  }
  const wide = await sim.run('devices', '--width', '120');
  t.regex(
    deviceBlock(wide.stdout, '0000:0b:00.0').line,
    / \[0300\] Ellesmere \[Radeon RX 470\/480\/570\/570X\/580\/580X\/590\]$/,
    'at 120 the whole name fits',
  );
  const json = JSON.parse((await sim.run('devices', '--json')).stdout) as DevicesView;
  t.like(deviceIn(json, '0000:0b:00.0'), {
    deviceName: 'Ellesmere [Radeon RX 470/480/570/570X/580/580X/590]',
    revision: 'e1',
    subsystemName: 'Radeon RX 590 Fatboy',
  });
  t.is((await sim.run('devices', '--width', 'wide')).code, 2);
  t.is((await sim.run('devices', '--pci-ids', path.join(sim.dir, 'none'))).code, 1);
});

test('devices --tree lists each device under its bridge, with its IOMMU group', async (t) => {
  const sim = await makeSim(t);
  const result = await sim.run('devices', '--tree');
  t.is(result.code, 0, result.stderr);
  const lines = result.stdout.split('\n');
  t.is(lines[1], 'pci0000:00');
  const bridge = lines.findIndex((l) => l.startsWith('  0000:00:03.2 '));
  const gpu = lines.findIndex((l) => l.startsWith('    0000:0b:00.0 '));
  t.true(bridge > 0 && gpu > bridge, result.stdout);
  t.is(deviceBlock(result.stdout, '0000:0b:00.0').notes, 'IOMMU group 25; subsystem 1682:c590; reset bus');
  t.deepEqual(
    lines.filter((l) => l.length > 80),
    [],
  );
});

test('devices on the chipset host says the host needs its chipset functions and the controller of its keyboard', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const result = await sim.run('devices');
  t.is(result.code, 0, result.stderr);
  const block = (address: string): { line: string; notes: string } => deviceBlock(result.stdout, address);
  t.regex(block('0000:00:00.2').line, /^ {2}0000:00:00\.2 +1022:1481 +\S+ +- +IOMMU \[0806\]$/);
  t.is(block('0000:00:00.2').notes, 'host needs it: the IOMMU itself, which isolates every device passed through (a chipset function)');
  t.regex(block('0000:00:14.0').line, / piix4_smbus /);
  t.regex(
    block('0000:00:14.0').notes,
    /host needs it: the SMBus, where the memory's SPD, the sensors and fan control sit \(a chipset function\)$/,
  );
  t.regex(block('0000:03:00.1').line, / xhci_hcd /);
  t.regex(
    block('0000:03:00.1').notes,
    /host needs it: the keyboard 'CHERRY USB keyboard' \(input0\) is connected through it, the mouse 'Logitech USB Optical Mouse' \(input1\) is connected through it$/,
  );
  t.false(block('0000:03:00.3').notes.includes('host needs it'), 'a gamepad is not something the host needs');
  const view = await devicesJson(sim);
  t.deepEqual(deviceIn(view, '0000:00:00.0').hostDependencies, ["the host bridge, the CPU's link to memory and PCI (a chipset function)"]);
});

test('detach of the IOMMU function is refused with --force too, exit 1, nothing moved', async (t) => {
  const sim = await makeSim(t, 'chipset-host');
  const result = await sim.run('detach', '00:00.2', '--for', 'win10', '--force');
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.is(
    result.stderr,
    "vfio-hookctl: Cannot detach '0000:00:00.2': the host depends on it: '0000:00:00.2' (IOMMU), requested: the IOMMU itself, which isolates every device passed through (a chipset function). " +
      "A chipset function never leaves the host, not even with --force, and neither does a device in its IOMMU group; check the address ('vfio-hookctl devices'), refusing\n",
  );
  t.is(await sim.driverOf('0000:00:00.2'), null);
  t.is(await sim.overrideOf('0000:00:00.2'), '(null)');
  t.false(await sim.exists('run/vfio-hookd/state.json'), 'no claim recorded');
});

// ---------------------------------------------------------------- detach and reattach

test('detach for win10 then, in separate invocations, devices and reattach: the RX 590 goes to vfio-pci and back', async (t) => {
  const sim = await makeSim(t);

  const detach = await sim.run('detach', '0000:0b:00.0', '--for', 'win10');
  t.deepEqual(detach, { code: 0, stdout: DETACH_590_TEXT, stderr: '' });

  const view = await devicesJson(sim);
  for (const address of RX590) {
    const d = deviceIn(view, address);
    t.is(d.driver, 'vfio-pci', address);
    t.is(d.driverOverride, 'vfio-pci', address);
    t.is(d.claim?.owner, 'vm:win10', address);
  }
  t.deepEqual(deviceIn(view, '0000:0b:00.0').claim, { owner: 'vm:win10', originalDriver: 'amdgpu', originalKnown: true });
  t.deepEqual(deviceIn(view, '0000:0b:00.1').claim, { owner: 'vm:win10', originalDriver: 'snd_hda_intel', originalKnown: true });
  t.like(groupIn(view, 25), { viable: true, blockers: [] });
  t.like(groupIn(view, 24), { viable: false });
  t.is(deviceIn(view, '0000:0a:00.0').driver, 'amdgpu');
  t.is(deviceIn(view, '0000:0a:00.1').driver, 'snd_hda_intel');
  t.deepEqual(await sim.driversOf([...RX590, ...RX580]), { ...VFIO_590, ...HOST_580 });
  t.true(await sim.exists('dev/vfio/25'));
  t.false(await sim.exists('dev/dri/card1'), "amdgpu's node for the RX 590 went with it");
  t.true(await sim.exists('dev/dri/card0'));
  const state = JSON.parse(await fs.readFile(sim.statePath, 'utf8')) as {
    version: number;
    claims: Record<string, { owner: unknown; originalDriver: string | null; group: number | null }>;
  };
  t.is(state.version, 2);
  t.deepEqual(Object.keys(state.claims), RX590);
  t.like(state.claims['0000:0b:00.0'], { owner: { kind: 'vm', name: 'win10' }, originalDriver: 'amdgpu', group: 25 });
  t.like(state.claims['0000:0b:00.1'], { owner: { kind: 'vm', name: 'win10' }, originalDriver: 'snd_hda_intel', group: 25 });

  const reattach = await sim.run('reattach', '0b:00.0', '--for', 'win10');
  t.is(reattach.code, 0, reattach.stderr);
  t.is(reattach.stderr, '');
  t.is(
    reattach.stdout,
    "0000:0b:00.0  group 25  vfio-pci -> amdgpu  (requested)\n0000:0b:00.1  group 25  vfio-pci -> snd_hda_intel  (same card as '0000:0b:00.0')\n",
  );
  t.deepEqual(await sim.driversOf([...RX590, ...RX580]), { ...HOST_590, ...HOST_580 });
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:0b:00.1'), '(null)');
  t.false(await sim.exists('dev/vfio/25'));
  t.true(await sim.exists('dev/dri/card1'), 'amdgpu made its node again');
  t.like(JSON.parse(await fs.readFile(sim.statePath, 'utf8')), { version: 2, claims: {}, pending: null });

  const after = await devicesJson(sim);
  t.like(groupIn(after, 25), { viable: false });
  t.is(deviceIn(after, '0000:0b:00.0').claim, null);
});

test('detach without --for records the device as a detach by hand, by the invoking user', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('detach', '0b:00.1')).code, 0);
  t.deepEqual(deviceIn(await devicesJson(sim), '0000:0b:00.0').claim, {
    owner: 'manual:root',
    originalDriver: 'amdgpu',
    originalKnown: true,
  });
  t.deepEqual(await sim.driversOf(RX590), VFIO_590);
});

test('a VM called like the old manual owners never shares claims with a detach by hand', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('detach', '0b:00.0')).code, 0);
  for (const vm of ['vfio-hookctl', 'dbus', 'root', 'manual:root']) {
    const result = await sim.run('detach', '0b:00.0', '--for', vm);
    t.is(result.code, 1, vm);
    t.regex(
      result.stderr,
      new RegExp(
        `^vfio-hookctl: Cannot detach '0000:0b:00\\.(\\d)' for VM '${vm}': it belongs to a detach by hand by 'root'; ` +
          `give it back with 'vfio-hookctl reattach 0000:0b:00\\.\\1', refusing\n$`,
      ),
    );
  }
});

test('reattach without --for gives back a device of a VM that no longer runs, without --force', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('detach', '0000:0b:00.0', '--for', 'win10')).code, 0);
  const result = await sim.run('reattach', '0000:0b:00.0');
  t.is(result.code, 0, result.stderr);
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
  t.like(JSON.parse(await fs.readFile(sim.statePath, 'utf8')), { version: 2, claims: {} });
});

test('refuses to reattach a device whose VM runs (QEMU holds its group), naming the VM and how to stop it, and changes nothing', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('detach', '0000:0b:00.0', '--for', 'win10')).code, 0);
  const kernel = await openSimulation('reference-host', { dir: sim.dir });
  await addSimProcess(kernel.host, { pid: 777, comm: 'qemu-system-x86', fds: ['/dev/vfio/vfio', '/dev/vfio/25'] });
  await kernel.close();
  const before = await sim.snapshot();
  const result = await sim.run('reattach', '0000:0b:00.1', '--force');
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr:
      "vfio-hookctl: Cannot reattach '0000:0b:00.1': IOMMU group 25 is in use by 'qemu-system-x86' (pid 777) through '/dev/vfio/25', " +
      "which runs VM 'win10'; shut it down first (virsh shutdown 'win10'), refusing\n",
  });
  t.deepEqual(await sim.driversOf(RX590), VFIO_590);
  t.deepEqual(await sim.snapshot(), before, 'not a link, file or state entry changed');
});

test('refuses to detach the NVMe that holds the root filesystem, and leaves it bound', async (t) => {
  const sim = await makeSim(t);
  const result = await sim.run('detach', '0000:01:00.0');
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.true(result.stderr.startsWith("vfio-hookctl: Cannot detach '0000:01:00.0': the host depends on it: "), result.stderr);
  t.true(result.stderr.includes("'/' is mounted from 'nvme0n1p2'"), result.stderr);
  t.regex(result.stderr, /refusing\n$/);
  t.is(result.stderr.split('\n').length, 2, 'one line');
  t.is(await sim.driverOf('0000:01:00.0'), 'nvme');
  t.is(await sim.overrideOf('0000:01:00.0'), '(null)');
  t.true(await sim.exists('dev/nvme0n1p2'));
  t.false(await sim.exists('run/vfio-hookd/state.json'), 'no state written');
});

test('refuses to detach a card held by a process through /dev/dri/card1, naming it, and changes nothing', async (t) => {
  const sim = await makeSim(t);
  const kernel = await openSimulation('reference-host', { dir: sim.dir });
  await addSimProcess(kernel.host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/card1'] });
  await kernel.close();
  const before = await sim.snapshot();

  const result = await sim.run('detach', '0000:0b:00.0', '--for', 'win10');
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr:
      "vfio-hookctl: Cannot detach '0000:0b:00.0': '0000:0b:00.0' is held by 'looking-glass' (pid 4242) through '/dev/dri/card1'; close it, refusing\n",
  });
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:0b:00.1'), '(null)');
  t.false(await sim.exists('run/vfio-hookd/state.json'), 'no state written');
  t.deepEqual(await sim.snapshot(), before);
});

test('--force does not override a process holding the card', async (t) => {
  const sim = await makeSim(t);
  const kernel = await openSimulation('reference-host', { dir: sim.dir });
  await addSimProcess(kernel.host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/card1'] });
  const result = await sim.run('detach', '0000:0b:00.0', '--force');
  t.is(result.code, 1);
  t.regex(result.stderr, /is held by 'looking-glass' \(pid 4242\) through '\/dev\/dri\/card1'; close it, refusing\n$/);
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
});

test('a process held as files in the sim folder (proc/<pid>/comm and fd link) is found the same way', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('devices')).code, 0); // builds the host
  const proc = path.join(sim.dir, 'proc', '4343');
  await fs.mkdir(path.join(proc, 'fd'), { recursive: true });
  await fs.writeFile(path.join(proc, 'comm'), 'obs\n');
  await fs.symlink('/dev/dri/renderD129', path.join(proc, 'fd', '7'));
  const result = await sim.run('detach', '0b:00.0');
  t.is(result.code, 1);
  t.is(
    result.stderr,
    "vfio-hookctl: Cannot detach '0000:0b:00.0': '0000:0b:00.0' is held by 'obs' (pid 4343) through '/dev/dri/renderD129'; close it, refusing\n",
  );
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
});

test('--dry-run prints the detach steps in order and changes nothing', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('devices')).code, 0); // builds the host
  const before = await sim.snapshot();

  const result = await sim.run('detach', '0000:0b:00.0', '--for', 'win10', '--dry-run');
  t.deepEqual(result, {
    code: 0,
    stderr: '',
    stdout:
      DETACH_590_TEXT +
      'Steps:\n' +
      '  1. 0000:0b:00.1: driver_override <- vfio-pci\n' +
      '  2. 0000:0b:00.1: unbind from snd_hda_intel\n' +
      '  3. 0000:0b:00.1: drivers_probe, expect vfio-pci\n' +
      '  4. 0000:0b:00.0: driver_override <- vfio-pci\n' +
      '  5. 0000:0b:00.0: unbind from amdgpu\n' +
      '  6. 0000:0b:00.0: drivers_probe, expect vfio-pci\n' +
      '  7. wait for /dev/vfio/25\n' +
      '  8. check IOMMU group 25 is viable\n',
  });
  t.deepEqual(await sim.snapshot(), before, 'not a link or file changed');
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
  t.false(await sim.exists('run/vfio-hookd/state.json'));
});

test('--dry-run --json prints the reattach plan as data and changes nothing', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('detach', '0000:0b:00.0', '--for', 'win10')).code, 0);
  const before = await sim.snapshot();
  const result = await sim.run('reattach', '0000:0b:00.0', '--for', 'win10', '--dry-run', '--json');
  t.is(result.code, 0, result.stderr);
  const plan = JSON.parse(result.stdout) as { kind: string; owner: string; steps: unknown[] };
  t.is(plan.kind, 'reattach');
  t.deepEqual(plan.owner, { kind: 'vm', name: 'win10' });
  t.deepEqual(plan.steps, [
    { op: 'clear-override', address: '0000:0b:00.0' },
    { op: 'unbind', address: '0000:0b:00.0', driver: 'vfio-pci' },
    { op: 'probe', address: '0000:0b:00.0', expect: 'amdgpu' },
    { op: 'clear-override', address: '0000:0b:00.1' },
    { op: 'unbind', address: '0000:0b:00.1', driver: 'vfio-pci' },
    { op: 'probe', address: '0000:0b:00.1', expect: 'snd_hda_intel' },
  ]);
  t.deepEqual(await sim.snapshot(), before);
});

// ---------------------------------------------------------------- usage and argument errors

const usageErrors: readonly (readonly [name: string, args: (simDir: string, other: string) => string[], message: string | RegExp])[] = [
  ['an unknown command', (d) => ['--simulate', 'reference-host', '--sim-dir', d, 'frobnicate'], "Unknown command 'frobnicate'"],
  [
    'detach without an address',
    (d) => ['--simulate', 'reference-host', '--sim-dir', d, 'detach'],
    "'detach' needs at least one PCI address, e.g. 0000:0b:00.0",
  ],
  [
    'reattach without an address',
    (d) => ['--simulate', 'reference-host', '--sim-dir', d, 'reattach'],
    "'reattach' needs at least one PCI address, e.g. 0000:0b:00.0",
  ],
  [
    'devices with an argument',
    (d) => ['--simulate', 'reference-host', '--sim-dir', d, 'devices', '0b:00.0'],
    "'devices' takes no arguments, got '0b:00.0'",
  ],
  ['an unknown option', (d) => ['--simulate', 'reference-host', '--sim-dir', d, '--bogus', 'devices'], /^Unknown option '--bogus'/],
  [
    'an option missing its value',
    (d) => ['--simulate', 'reference-host', '--sim-dir', d, 'detach', '0b:00.0', '--for'],
    /^Option '--for <value>' argument missing/,
  ],
  [
    '--simulate with --sysfs-root',
    (d, other) => ['--simulate', 'reference-host', '--sim-dir', d, '--sysfs-root', other, 'devices'],
    '--simulate brings its own roots; do not combine it with --sysfs-root, --proc-root, --dev-root or --run-root',
  ],
  [
    '--simulate with --run-root',
    (d, other) => ['--simulate', 'reference-host', '--sim-dir', d, '--run-root', other, 'devices'],
    '--simulate brings its own roots; do not combine it with --sysfs-root, --proc-root, --dev-root or --run-root',
  ],
  [
    '--sim-dir without --simulate',
    (d, other) => ['--sim-dir', d, '--sysfs-root', other, 'devices'],
    '--sim-dir and --reset-sim need --simulate',
  ],
  [
    'a write timeout of zero',
    (d) => ['--simulate', 'reference-host', '--sim-dir', d, '--write-timeout', '0', 'detach', '0b:00.0'],
    "Invalid --write-timeout '0': expected a positive number of milliseconds",
  ],
];

for (const [name, args, message] of usageErrors) {
  test(`exits 2 with a usage hint for ${name}, touching nothing`, async (t) => {
    const top = await tempDir(t);
    const simDir = path.join(top, 'sim');
    const other = path.join(top, 'other');
    const result = await hookctl(args(simDir, other));
    t.is(result.code, 2);
    t.is(result.stdout, '');
    const [first, ...rest] = result.stderr.split('\n');
    t.true(first?.startsWith('vfio-hookctl: '), result.stderr);
    const text = first?.slice('vfio-hookctl: '.length) ?? '';
    if (typeof message === 'string') t.is(text, message);
    else t.regex(text, message);
    t.deepEqual(rest, ["Try 'vfio-hookctl --help'.", '']);
    t.deepEqual(await fs.readdir(top), [], 'no simulated host was built and no root touched');
  });
}

test('no command prints the usage on stdout and exits 2; --help exits 0', async (t) => {
  const none = await hookctl([]);
  t.is(none.code, 2);
  t.true(none.stdout.startsWith('Usage: vfio-hookctl [OPTIONS] COMMAND [ARGS]\n'));
  t.is(none.stderr, '');
  const help = await hookctl(['--help']);
  t.is(help.code, 0);
  t.is(help.stdout, none.stdout);
});

test('--version prints the version and exits 0', async (t) => {
  t.deepEqual(await hookctl(['--version']), { code: 0, stdout: 'vfio-hookctl 0.1.0\n', stderr: '' });
});

test('an invalid PCI address exits 1 with Invalid PCI address and changes nothing', async (t) => {
  const sim = await makeSim(t);
  t.is((await sim.run('devices')).code, 0);
  const before = await sim.snapshot();
  const result = await sim.run('detach', '0b:00');
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr: "vfio-hookctl: Invalid PCI address '0b:00': expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)\n",
  });
  t.deepEqual(await sim.snapshot(), before);
});

test('an address with no device exits 1 naming it', async (t) => {
  const sim = await makeSim(t);
  const result = await sim.run('detach', '0000:0e:00.0');
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr: "vfio-hookctl: No PCI device '0000:0e:00.0' on this host; list them with 'vfio-hookctl devices'\n",
  });
});

test('an invalid --for name exits 1', async (t) => {
  const sim = await makeSim(t);
  const result = await sim.run('detach', '0b:00.0', '--for', '../etc');
  t.deepEqual(result, { code: 1, stdout: '', stderr: "vfio-hookctl: Invalid --for '../etc': expected a VM name\n" });
});

test('an unknown simulated host exits 1 listing the built-in names, and builds nothing', async (t) => {
  const top = await tempDir(t);
  const simDir = path.join(top, 'sim');
  const result = await hookctl(['--simulate', 'no-such-host', '--sim-dir', simDir, 'devices']);
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr:
      "vfio-hookctl: Unknown simulated host 'no-such-host': choose one of 'reference-host', 'single-gpu-host', 'nvidia-host', 'split-board-host', 'chipset-host', or give a path to a JSON fixture\n",
  });
  t.deepEqual(await fs.readdir(simDir).catch(() => []), [], 'no simulated host in the folder');
});

// ---------------------------------------------------------------- the real executable

test('the real executable detaches on a simulated host and a second process sees the change', async (t) => {
  const sim = await makeSim(t);
  const args = ['--simulate', 'reference-host', '--sim-dir', sim.dir];

  const detach = await executable([...args, 'detach', '0b:00.0']);
  t.deepEqual(detach, { code: 0, stdout: DETACH_590_TEXT, stderr: '' });
  t.deepEqual(await sim.driversOf(RX590), VFIO_590);

  const list = await executable([...args, 'devices', '--json']);
  t.is(list.code, 0, list.stderr);
  t.is(list.stderr, '');
  const view = JSON.parse(list.stdout) as DevicesView;
  t.deepEqual(
    RX590.map((a) => [deviceIn(view, a).driver, deviceIn(view, a).claim?.owner]),
    [
      ['vfio-pci', 'manual:root'],
      ['vfio-pci', 'manual:root'],
    ],
  );
  t.like(groupIn(view, 25), { viable: true });
});

test('the real executable exits 2 on bad usage and 1 on a refusal, with one sentence on stderr', async (t) => {
  const sim = await makeSim(t);
  const args = ['--simulate', 'reference-host', '--sim-dir', sim.dir];
  const usage = await executable([...args, 'frobnicate']);
  t.deepEqual(usage, { code: 2, stdout: '', stderr: "vfio-hookctl: Unknown command 'frobnicate'\nTry 'vfio-hookctl --help'.\n" });
  const refused = await executable([...args, 'detach', '0000:01:00.0']);
  t.is(refused.code, 1);
  t.is(refused.stdout, '');
  t.regex(
    refused.stderr,
    /^vfio-hookctl: Cannot detach '0000:01:00\.0': the host depends on it: .*'\/' is mounted from 'nvme0n1p2'.*refusing\n$/,
  );
  t.is(await sim.driverOf('0000:01:00.0'), 'nvme');
});

test('the real executable on a --sysfs-root folder reports a refused sysfs write with exit 1 and rolls back', async (t) => {
  // The real adapter (writer child process) over a simulated host's folder,
  // with the audio function's driver_override missing: the first write fails.
  const sim = await makeSim(t);
  t.is((await sim.run('devices')).code, 0); // builds the host
  const override = path.join(sim.dir, 'sys', 'bus', 'pci', 'devices', '0000:0b:00.1', 'driver_override');
  await fs.rm(override);
  const roots = ['--sysfs-root', 'sys', '--proc-root', 'proc', '--dev-root', 'dev', '--run-root', 'run'].map((a, i) =>
    i % 2 === 1 ? path.join(sim.dir, a) : a,
  );
  const result = await executable([...roots, 'detach', '0000:0b:00.0']);
  t.deepEqual(result, {
    code: 1,
    stdout: '',
    stderr: `vfio-hookctl: Writing to '${override}' failed with ENOENT (rolled back: '0000:0b:00.1' restored to 'snd_hda_intel')\n`,
  });
  t.deepEqual(await sim.driversOf(RX590), HOST_590);
  t.false(await sim.exists(path.relative(sim.dir, override)), 'the adapter created no attribute');
  t.like(
    JSON.parse(await fs.readFile(path.join(sim.dir, 'run/vfio-hookd/state.json'), 'utf8')),
    { claims: {}, pending: null },
    'the write-ahead record is cleared, nothing claimed',
  );
});

// ---------------------------------------------------------------- other hosts

const SPLIT_GROUP_13_ENDPOINTS = ['0000:02:00.0', '0000:04:00.0', '0000:05:00.0', '0000:05:00.1'];
const SPLIT_GROUP_13_BRIDGES = ['0000:00:01.3', '0000:02:00.2', '0000:03:01.0', '0000:03:04.0'];

test('split-board-host: refuses to detach the GTX 1070 because its group takes the NIC that is up', async (t) => {
  const sim = await makeSim(t, 'split-board-host');
  const result = await sim.run('detach', '0000:05:00.0', '--for', 'win10');
  t.is(result.code, 1);
  t.is(result.stdout, '');
  t.regex(
    result.stderr,
    /^vfio-hookctl: Cannot detach '0000:05:00\.0': the host depends on it: '0000:04:00\.0' \(Ethernet controller\), IOMMU group 13 with '0000:05:00\.0': network interface 'enp4s0' is up\. .*refusing\n$/,
  );
  t.deepEqual(await sim.driversOf(SPLIT_GROUP_13_ENDPOINTS), {
    '0000:02:00.0': 'ahci',
    '0000:04:00.0': 'r8169',
    '0000:05:00.0': 'nouveau',
    '0000:05:00.1': 'snd_hda_intel',
  });
  t.false(await sim.exists('dev/vfio/13'));
  t.false(await sim.exists('run/vfio-hookd/state.json'));
});

test('split-board-host: --force takes every endpoint of group 13 to vfio-pci and leaves the bridges on pcieport', async (t) => {
  const sim = await makeSim(t, 'split-board-host');
  const result = await sim.run('detach', '0000:05:00.0', '--for', 'win10', '--force');
  t.is(result.code, 0, result.stderr);
  t.is(result.stderr, '');
  t.deepEqual(await sim.driversOf(SPLIT_GROUP_13_ENDPOINTS), Object.fromEntries(SPLIT_GROUP_13_ENDPOINTS.map((a) => [a, 'vfio-pci'])));
  t.deepEqual(await sim.driversOf(SPLIT_GROUP_13_BRIDGES), Object.fromEntries(SPLIT_GROUP_13_BRIDGES.map((a) => [a, 'pcieport'])));
  t.is(await sim.driverOf('0000:01:00.0'), 'amdgpu', 'the host GPU in group 3 is untouched');
  t.true(await sim.exists('dev/vfio/13'));
  t.false(await sim.exists('sys/class/net/enp4s0'), 'the NIC went with its driver');
  const view = await devicesJson(sim);
  t.like(groupIn(view, 13), { viable: true, blockers: [] });
  t.deepEqual(
    view.devices.filter((d) => d.claim !== null).map((d) => [d.address, d.claim?.owner, d.claim?.originalDriver]),
    [
      ['0000:02:00.0', 'vm:win10', 'ahci'],
      ['0000:04:00.0', 'vm:win10', 'r8169'],
      ['0000:05:00.0', 'vm:win10', 'nouveau'],
      ['0000:05:00.1', 'vm:win10', 'snd_hda_intel'],
    ],
  );
});

test('nvidia-host: detaching the RTX 2080 moves all four functions to vfio-pci', async (t) => {
  const sim = await makeSim(t, 'nvidia-host');
  const functions = ['0000:01:00.0', '0000:01:00.1', '0000:01:00.2', '0000:01:00.3'];
  const result = await sim.run('detach', '0000:01:00.0', '--for', 'win10');
  t.is(result.code, 0, result.stderr);
  t.is(result.stderr, '');
  t.deepEqual(await sim.driversOf(functions), Object.fromEntries(functions.map((a) => [a, 'vfio-pci'])));
  t.is(await sim.driverOf('0000:00:01.0'), 'pcieport', 'the root port in the same group stays');
  t.is(await sim.driverOf('0000:00:02.0'), 'i915', 'the host iGPU stays');
  t.true(await sim.exists('dev/vfio/1'));
  for (const a of functions) t.is(await sim.overrideOf(a), 'vfio-pci', a);
  t.deepEqual(
    result.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('  ')[0]),
    ['0000:01:00.1', '0000:01:00.0', '0000:01:00.2', '0000:01:00.3'],
    'the HDMI audio (consumer) goes before the GPU, then address order',
  );
});
