/**
 * The daemon's stop, after VMs ran: a VM whose QEMU is gone with no release
 * from libvirt (libvirtd stopped first at a host shutdown, or was killed) is
 * released from its record at the stop; a VM whose QEMU still holds its
 * group, or that was prepared but never started (its QEMU may be starting),
 * keeps everything. The real daemon on a private bus and the simulated
 * reference host; SIGTERM as systemd sends it; entries over the native
 * journal protocol to a socket of the test's own.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import dbus from 'dbus-next';
import { NotifyListener, startDaemon, startPrivateBus, tempDir, type DaemonProcess } from '../helpers/private-bus.js';
import { addSimProcess } from '../../lib/sim/index.js';
import { rootsUnder } from '../../lib/roots.js';
import { MessageId } from '../../lib/systemd/index.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const HOST = ['amdgpu', 'snd_hda_intel'];
const QEMU = { pid: 4343, comm: 'qemu-system-x86', fds: ['/dev/vfio/25', '/dev/vfio/vfio'] };
const VFIO = ['vfio-pci', 'vfio-pci'];
/** The RX 590's IOMMU group on the reference host. */
const GROUP = 25;

function fields(datagram: string): Record<string, string> {
  return Object.fromEntries(
    datagram
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

async function rx590(daemon: DaemonProcess): Promise<(string | null)[]> {
  return Promise.all(
    ['0000:0b:00.0', '0000:0b:00.1'].map(async (a) => {
      const link = await fs.readlink(path.join(daemon.simDir, 'sys/bus/pci/devices', a, 'driver')).catch(() => null);
      return link === null ? null : path.basename(link);
    }),
  );
}

/**
 * A daemon with its journal on a socket of ours, and the VM taken through the given stages as libvirt's hook calls
 * them; with `qemu`, a stand-in QEMU (pid 4343) holds the RX 590's group from `start` on, as QEMU does.
 */
async function ran(t: ExecutionContext, stages: readonly (readonly [string, string])[], qemu = true) {
  const dir = await tempDir(t, 'vfio-hookd-stop-');
  const journald = await NotifyListener.open(t, path.join(dir, 'journal-socket'));
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { dir, config: WIN10_CONFIG, journalSocket: journald.path });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const handle = manager['HandleHook'] as (...a: string[]) => Promise<void>;
  for (const [op, sub] of stages) {
    if (qemu && op === 'start') await addSimProcess({ roots: rootsUnder(daemon.simDir) }, QEMU);
    await handle('win10', op, sub, '-', WIN10_XML);
  }
  t.deepEqual(await rx590(daemon), VFIO, 'the pair is on vfio-pci before the stop');
  return { dir, bus, daemon, journald };
}

async function stop(t: ExecutionContext, daemon: DaemonProcess): Promise<void> {
  daemon.child.kill('SIGTERM');
  t.is(await daemon.exited, 0, 'the stop ends with exit 0');
}

const STARTED = [
  ['prepare', 'begin'],
  ['start', 'begin'],
  ['started', 'begin'],
] as const;

/** The stand-in QEMU exits (as when systemd stops the VM's scope at a shutdown), and no release hook comes. */
async function qemuGone(daemon: DaemonProcess): Promise<void> {
  await fs.rm(path.join(daemon.simDir, 'proc', String(QEMU.pid)), { recursive: true });
}

test("a VM that ran and whose QEMU is gone with no release from libvirt is released at the daemon's stop, and journaled why", async (t) => {
  const { dir, bus, daemon, journald } = await ran(t, STARTED);
  await qemuGone(daemon);
  await stop(t, daemon);
  t.deepEqual(await rx590(daemon), HOST, 'both functions are back on their host drivers');
  const back = fields(await journald.waitFor("MESSAGE=Device '0000:0b:00.1' given back to its driver after VM 'win10'"));
  t.is(back['PCI_ADDRESS'], '0000:0b:00.1');
  t.is(back['VFIO_HOOK'], 'daemon stop');
  t.is(back['MESSAGE_ID'], MessageId.DEVICE_REATTACHED);
  const why = fields(await journald.waitFor(`MESSAGE_ID=${MessageId.GONE_RELEASED}`));
  t.is(why['PRIORITY'], '5');
  t.is(why['VFIO_DOMAIN'], 'win10');
  t.regex(
    why['MESSAGE'] ?? '',
    /^VM 'win10' ran, but no process holds its devices any more and libvirt's release never came \(libvirtd stopped or was killed before it ran the release hook\): released at vfio-hookd's stop: VM 'win10' released: 2 device\(s\) given back$/,
  );
  // The record went with it: a daemon started on the same state holds nothing, and a late release hook is harmless.
  const again = await startDaemon(t, bus, { dir });
  t.deepEqual(await rx590(again), HOST);
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', 'release', 'end', '-', WIN10_XML);
  t.deepEqual(await rx590(again), HOST);
});

test("a VM whose QEMU still holds its group keeps its devices across the daemon's stop, and says so", async (t) => {
  const { dir, bus, daemon, journald } = await ran(t, STARTED);
  await stop(t, daemon);
  t.deepEqual(await rx590(daemon), VFIO, 'nothing moved');
  const kept = fields(await journald.waitFor('VFIO_HOOK=daemon stop'));
  t.is(
    kept['MESSAGE'],
    `VM 'win10' keeps its devices across vfio-hookd's stop: its devices are still held by 'qemu-system-x86' (pid 4343) through '/dev/vfio/${GROUP}'`,
  );
  t.false(journald.messages.some((m) => m.includes(`MESSAGE_ID=${MessageId.GONE_RELEASED}`)));
  // And the next daemon still has the record: the release hook, when it comes, gives the pair back.
  const again = await startDaemon(t, bus, { dir });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await qemuGone(daemon);
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', 'release', 'end', '-', WIN10_XML);
  t.deepEqual(await rx590(again), HOST);
});

test("a VM whose hooks ran with no process ever holding its devices keeps them across the daemon's stop", async (t) => {
  // Hooks run by hand, or devices configured to keep them from the host but not passed through: nothing says a
  // QEMU had them, so nothing says it is gone.
  const { daemon, journald } = await ran(t, STARTED, false);
  await stop(t, daemon);
  t.deepEqual(await rx590(daemon), VFIO, 'nothing moved');
  t.false(
    journald.messages.some((m) => m.includes('VFIO_HOOK=daemon stop')),
    'not even considered',
  );
});

test("a VM prepared but not started keeps its devices across the daemon's stop (its QEMU may be starting)", async (t) => {
  const { daemon, journald } = await ran(t, [['prepare', 'begin']]);
  await stop(t, daemon);
  t.deepEqual(await rx590(daemon), VFIO, 'nothing moved');
  t.false(
    journald.messages.some((m) => m.includes('VFIO_HOOK=daemon stop')),
    'not even considered',
  );
});
