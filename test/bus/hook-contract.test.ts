/**
 * What was done decides what is undone, and no VM starts unprepared: the
 * real daemon on a private bus and the simulated reference host, called as
 * the hook calls it. Every test asserts the state afterwards: driver links,
 * the state file, the shm files. The tests run one at a time: each starts
 * one or two daemons, and 27 at once starve a 2-core machine.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startDaemon, startPrivateBus, tempDir, type DaemonProcess } from '../helpers/private-bus.js';
import { SimKernel } from '../../lib/sim/index.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import { callManager, handleHook as hook, run } from '../helpers/command.js';

const PLAIN_XML = "<domain type='kvm'><name>plain</name><memory>1048576</memory><devices><disk type='file'/></devices></domain>";
const HOST = ['amdgpu', 'snd_hda_intel'];
const VFIO = ['vfio-pci', 'vfio-pci'];

async function rx590(daemon: DaemonProcess): Promise<(string | null)[]> {
  const out: (string | null)[] = [];
  for (const a of ['0000:0b:00.0', '0000:0b:00.1']) {
    const link = await fs.readlink(path.join(daemon.simDir, 'sys/bus/pci/devices', a, 'driver')).catch(() => null);
    out.push(link === null ? null : path.basename(link));
  }
  return out;
}

async function stateOf(
  daemon: DaemonProcess,
): Promise<{ claims: Record<string, { owner: unknown; originalKnown: boolean }>; machines: Record<string, unknown>; pending: unknown }> {
  return JSON.parse(await fs.readFile(path.join(daemon.runRoot, 'vfio-hookd', 'state.json'), 'utf8'));
}

async function shmExists(daemon: DaemonProcess, name: string): Promise<boolean> {
  return fs.lstat(path.join(daemon.simDir, 'dev/shm', name)).then(
    () => true,
    () => false,
  );
}

/** win10 as the bus tests have it, and its shm files removed at release (so the record's say can be seen). */
const REMOVING_CONFIG = WIN10_CONFIG.replace('[vm.win10]\n', '[vm.win10]\nremove-shm-on-stop = true\n');

async function setup(t: ExecutionContext) {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: REMOVING_CONFIG });
  return { bus, daemon };
}

/** Ways a configuration can change under a running VM. */
const EDITS: { name: string; edit: (file: string) => Promise<void> }[] = [
  { name: 'the Looking Glass size edited', edit: (f) => fs.writeFile(f, REMOVING_CONFIG.replace('size = "32M"', 'size = "64M"')) },
  {
    name: 'the user renamed to one that does not exist',
    edit: (f) => fs.writeFile(f, WIN10_CONFIG.replace('user = "1000"', 'user = "nosuchuser-vfio"')),
  },
  {
    name: 'a group that no longer resolves',
    edit: (f) => fs.writeFile(f, WIN10_CONFIG.replace('group = "64055"', 'group = "nosuchgroup-vfio"')),
  },
  { name: 'a syntax error', edit: (f) => fs.writeFile(f, '[vm.win10\ndevices = [') },
  { name: 'the table removed', edit: (f) => fs.writeFile(f, '') },
  { name: 'the file removed', edit: (f) => fs.rm(f) },
];

for (const { name, edit } of EDITS) {
  test.serial(`release after ${name} while the VM ran gives the GPU back and removes the recorded shm files`, async (t) => {
    const { bus, daemon } = await setup(t);
    t.true((await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML)).ok);
    t.true((await hook(bus, 'win10', 'started', 'begin', WIN10_XML)).ok);
    t.deepEqual(await rx590(daemon), VFIO);
    await edit(daemon.configPath);
    // Reload now (the watcher would too), so the release meets the edited configuration.
    await callManager(bus, 'Reload', '');
    t.true((await hook(bus, 'win10', 'stopped', 'end', WIN10_XML)).ok);
    const release = await hook(bus, 'win10', 'release', 'end', WIN10_XML, 'shutdown');
    t.true(release.ok, release.text);
    t.deepEqual(await rx590(daemon), HOST);
    const state = await stateOf(daemon);
    t.deepEqual(state.claims, {});
    t.deepEqual(state.machines, {});
    t.false(await shmExists(daemon, 'looking-glass'), 'removed, as the record (not the new file) says');
    t.false(await shmExists(daemon, 'scream'));
  });
}

for (const reason of ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from snapshot', 'daemon']) {
  test.serial(`release end '${reason}' gives the devices back and a second one is harmless`, async (t) => {
    const { bus, daemon } = await setup(t);
    t.true((await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML)).ok);
    for (let i = 0; i < 2; i++) {
      const r = await hook(bus, 'win10', 'release', 'end', WIN10_XML, reason);
      t.true(r.ok, r.text);
      t.deepEqual(await rx590(daemon), HOST);
    }
    t.deepEqual((await stateOf(daemon)).claims, {});
  });
}

test.serial('after a refused prepare, stopped end and release end failed are harmless', async (t) => {
  const { bus, daemon } = await setup(t);
  // The RX 590 held by a process: prepare is refused.
  const kernel = await SimKernel.open(daemon.simDir);
  const proc = path.join(kernel.roots.proc, '4242');
  await fs.mkdir(path.join(proc, 'fd'), { recursive: true });
  await fs.writeFile(path.join(proc, 'comm'), 'obs\n');
  await fs.symlink('/dev/dri/card1', path.join(proc, 'fd', '3'));
  const refused = await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML);
  t.false(refused.ok);
  t.regex(refused.text, /held by 'obs' \(pid 4242\)/);
  t.true((await hook(bus, 'win10', 'stopped', 'end', WIN10_XML)).ok);
  t.true((await hook(bus, 'win10', 'release', 'end', WIN10_XML, 'failed')).ok);
  t.deepEqual(await rx590(daemon), HOST);
  t.false(await shmExists(daemon, 'looking-glass'), 'the refused prepare left no file');
});

test.serial('a configuration broken at start refuses passthrough VMs with its own error and lets others start', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: '[vm.win10]\ndevices = [\n' });
  const refused = await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML);
  t.false(refused.ok);
  t.regex(
    refused.text,
    /Cannot tell whether VM 'win10' is managed: .*vfio-hookd\.toml:\d+:\d+.*does not start until the configuration loads.*refusing/,
  );
  t.deepEqual(await rx590(daemon), HOST);
  t.false(await shmExists(daemon, 'looking-glass'));

  const plain = await hook(bus, 'plain', 'prepare', 'begin', PLAIN_XML);
  t.true(plain.ok, 'a VM with neither <hostdev> nor <shmem> is never blocked');

  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', '--bus-address', bus.address, 'status'], {
    cwd: path.resolve('.'),
  });
  t.regex(stdout, /configuration error: .*vfio-hookd\.toml:\d+:\d+/);

  await fs.writeFile(daemon.configPath, WIN10_CONFIG);
  await run('busctl', [`--address=${bus.address}`, 'call', 'org.vfiohookd1', '/org/vfiohookd1', 'org.vfiohookd1.Manager', 'Reload']);
  const fixed = await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML);
  t.true(fixed.ok, fixed.text);
  t.deepEqual(await rx590(daemon), VFIO);
});

const DAMAGE: Record<string, string | null> = {
  empty: '',
  truncated: '{"version": 2, "claims": {"0000:0b:00.0": {',
  'not JSON': 'org.freedesktop.DBus.Error.ServiceUnknown',
  'a future version': '{"version": 7, "claims": {}}',
  'a directory': null,
};

for (const [kind, text] of Object.entries(DAMAGE)) {
  test.serial(
    `a state file that is ${kind} never stops the daemon: set aside, devices on vfio-pci become claims of unknown owner`,
    async (t) => {
      const bus = await startPrivateBus(t);
      const dir = await tempDir(t, 'vfio-hookd-damaged-');
      const first = await startDaemon(t, bus, { dir, config: WIN10_CONFIG });
      t.true((await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML)).ok);
      first.child.kill('SIGKILL');
      await first.exited;
      const file = path.join(first.runRoot, 'vfio-hookd', 'state.json');
      await fs.rm(file);
      if (text === null) await fs.mkdir(file);
      else await fs.writeFile(file, text);

      const daemon = await startDaemon(t, bus, { dir });
      t.regex(daemon.stderr(), /State file '.*state\.json' .*moved aside to/);
      if (text !== null && text !== '') t.false(daemon.stderr().includes(text.slice(0, 20)), 'the damaged content is never echoed');
      const state = await stateOf(daemon);
      t.deepEqual(Object.keys(state.claims).sort(), ['0000:0b:00.0', '0000:0b:00.1']);
      t.like(state.claims['0000:0b:00.0'], { owner: { kind: 'unknown' }, originalKnown: false });
      t.deepEqual(await rx590(daemon), VFIO, 'nothing moved at start');
      // The VM stops: its release has no record, but the unknown claims are given back by hand.
      await run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', '--bus-address', bus.address, 'reattach', '0000:0b:00.0']);
      t.deepEqual(await rx590(daemon), HOST, 'the kernel chose the host drivers');
      t.deepEqual((await stateOf(daemon)).claims, {});
    },
  );
}

test.serial(
  'a VM not in the configuration whose XML passes through a configured device is journaled with a did-you-mean, and starts',
  async (t) => {
    const bus = await startPrivateBus(t);
    const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
    const xml = WIN10_XML.replace('<name>win10</name>', '<name>Windows 10</name>');
    const answer = await hook(bus, 'Windows 10', 'prepare', 'begin', xml);
    t.true(answer.ok, answer.text);
    t.regex(
      daemon.stderr(),
      /VM 'Windows 10' is not managed by vfio-hookd, but its device '0000:0b:00\.0' is configured for \[vm\.win10\]; did you mean that table\? Name it \[vm\."Windows 10"\]/,
    );
    t.deepEqual(await rx590(daemon), HOST, 'not managed: nothing moved');
  },
);

test.serial('a second daemon exits before it reads or writes any state', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  t.true((await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML)).ok);
  const file = path.join(daemon.runRoot, 'vfio-hookd', 'state.json');
  const before = await fs.stat(file);
  const second = await startDaemon(t, bus, { dir: daemon.dir }).catch((error: Error) => error);
  t.true(second instanceof Error && /already owned by another process/.test(second.message), String(second));
  const after = await fs.stat(file);
  t.is(after.ino, before.ino, 'the state file was not rewritten');
  t.is(after.mtimeMs, before.mtimeMs);
});

test.serial('every DetachDevice and ReattachDevice is journaled with the caller and the devices', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const call = (member: string, sig: string, ...args: string[]) =>
    run('busctl', [
      `--address=${bus.address}`,
      'call',
      'org.vfiohookd1',
      '/org/vfiohookd1',
      'org.vfiohookd1.Manager',
      member,
      sig,
      ...args,
    ]);
  await call('DetachDevice', 'ssb', '0000:0b:00.0', '', 'false');
  await call('ReattachDevice', 's', '0000:0b:00.0');
  await call('DetachDevice', 'ssb', '0000:01:00.0', '', 'false').catch(() => undefined);
  const lines = daemon.stderr().split('\n');
  t.true(
    lines.some((l) => l.startsWith("<6>Detached by hand by 'root' (uid 0): 0000:0b:00.1, 0000:0b:00.0 [CALLER_UID=0 ")),
    daemon.stderr(),
  );
  t.true(
    lines.some((l) => l.startsWith("<6>Given back by hand by 'root' (uid 0): 0000:0b:00.0, 0000:0b:00.1 [CALLER_UID=0 ")),
    daemon.stderr(),
  );
  t.true(
    lines.some((l) => l.startsWith("<4>DetachDevice by 'root' (uid 0) refused: Cannot detach '0000:01:00.0': the host depends on it")),
    daemon.stderr(),
  );
  t.deepEqual(await rx590(daemon), HOST);
});

test.serial('[daemon] qemu-user takes effect on reload: a file QEMU made as that user is then adopted, not refused', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG.replace('[vm.win10.scream]\nsize = "2M"\n', '') });
  // QEMU (uid 4321 here) made the Looking Glass file before we came.
  const file = path.join(daemon.simDir, 'dev/shm/looking-glass');
  await fs.writeFile(file, '');
  await fs.truncate(file, 32 * 2 ** 20);
  await fs.chown(file, 4321, 4321);
  const refused = await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML.replace(/<shmem name='scream'>[\s\S]*?<\/shmem>/, ''));
  t.false(refused.ok);
  t.regex(refused.text, /owned by uid 4321.*qemu-user/);
  t.deepEqual(await rx590(daemon), HOST, 'the refusal changed nothing');

  await fs.writeFile(daemon.configPath, `[daemon]\nqemu-user = "4321"\n${WIN10_CONFIG.replace('[vm.win10.scream]\nsize = "2M"\n', '')}`);
  await run('busctl', [`--address=${bus.address}`, 'call', 'org.vfiohookd1', '/org/vfiohookd1', 'org.vfiohookd1.Manager', 'Reload']);
  const adopted = await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML.replace(/<shmem name='scream'>[\s\S]*?<\/shmem>/, ''));
  t.true(adopted.ok, adopted.text);
  const s = await fs.stat(file);
  t.deepEqual([s.uid, s.gid, s.mode & 0o777], [1000, 64055, 0o660], 'repaired to the configured owner, group and mode');
  t.deepEqual(await rx590(daemon), VFIO);
});

test.serial(
  'without libvirt-dbus, a VM holding devices from before the daemon started says its claim may be stale and how to give it back',
  async (t) => {
    const bus = await startPrivateBus(t);
    const dir = await tempDir(t, 'vfio-hookd-stale-');
    const first = await startDaemon(t, bus, { dir, config: WIN10_CONFIG });
    t.true((await hook(bus, 'win10', 'prepare', 'begin', WIN10_XML)).ok);
    first.child.kill('SIGTERM');
    await first.exited;
    await startDaemon(t, bus, { dir });
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', '--bus-address', bus.address, 'status'], {
      cwd: path.resolve('.'),
    });
    t.regex(stdout, /win10: prepared/);
    t.regex(
      stdout,
      /last: holds 0000:0b:00\.0, 0000:0b:00\.1 since before vfio-hookd started; libvirt-dbus is not on the bus, so whether it still runs is unknown: if it is off, give the devices back with 'vfio-hookctl reattach 0000:0b:00\.0'/,
    );
  },
);
