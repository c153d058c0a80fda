/**
 * `hold = "boot"` through the real daemon on a private bus and the simulated
 * reference host: the RX 590 is on vfio-pci by the time READY=1 is sent, the
 * Machine object and `vfio-hookctl status` say it is held at boot, a whole
 * lifecycle through the real hook leaves it there, and so does a restart.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import dbus from 'dbus-next';
import { REPO, startDaemon, startPrivateBus, tempDir, type DaemonProcess } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, runHook } from '../helpers/hook.js';
import { machinePath } from '../../lib/bus/object-path.js';
import { StateFile } from '../../lib/state/state-file.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const run = promisify(execFile);
const BOOT_CONFIG = WIN10_CONFIG.replace('devices = ["0000:0b:00.0"]\n', 'devices = ["0000:0b:00.0"]\nhold = "boot"\n');

async function driverOf(daemon: DaemonProcess, address: string): Promise<string | null> {
  const link = await fs.readlink(path.join(daemon.simDir, 'sys/bus/pci/devices', address, 'driver')).catch(() => null);
  return link === null ? null : path.basename(link);
}

async function rx590(daemon: DaemonProcess): Promise<[string | null, string | null]> {
  return [await driverOf(daemon, '0000:0b:00.0'), await driverOf(daemon, '0000:0b:00.1')];
}

test('a VM with hold = "boot" has its devices on vfio-pci at READY=1, and keeps them through a lifecycle and a restart', async (t) => {
  t.true(BOOT_CONFIG.includes('hold = "boot"'));
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: BOOT_CONFIG });
  // startDaemon returned on READY=1: the hold was taken before it.
  t.deepEqual(await rx590(daemon), ['vfio-pci', 'vfio-pci']);
  t.regex(daemon.stderr(), /VM 'win10' holds '0000:0b:00\.0', '0000:0b:00\.1' at boot: on vfio-pci until the host shuts down/);

  const busctl = async (...args: string[]): Promise<string> => (await run('busctl', [`--address=${bus.address}`, ...args])).stdout.trim();
  const machine = ['org.vfiohookd1', machinePath('win10'), 'org.vfiohookd1.Machine'];
  t.is(await busctl('get-property', ...machine, 'HeldAtBoot'), 'as 2 "0000:0b:00.0" "0000:0b:00.1"');
  t.is(await busctl('get-property', ...machine, 'State'), 's "defined"');
  const status = async (): Promise<string> =>
    (await run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', '--bus-address', bus.address, 'status'], { cwd: REPO }))
      .stdout;
  t.regex(await status(), /\n {2}held at boot for VM 'win10': 0000:0b:00\.0, 0000:0b:00\.1 \(on vfio-pci until the host shuts down\)\n/);

  // The objects follow the hooks a moment later: wait for the release's LastMessage (PropertiesChanged).
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const props = (await client.getProxyObject('org.vfiohookd1', machinePath('win10'))).getInterface('org.freedesktop.DBus.Properties');
  const releasedMessage = new Promise<string>((resolve) =>
    props.on('PropertiesChanged', (_iface: string, values: Record<string, { value: unknown }>) => {
      const message = values['LastMessage']?.value;
      if (typeof message === 'string' && message.includes('released')) resolve(message);
    }),
  );
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  for (const [op, sub] of [
    ['prepare', 'begin'],
    ['start', 'begin'],
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
  ] as const) {
    t.deepEqual(await runHook(hook, ['win10', op, sub, '-'], WIN10_XML), { code: 0, stdout: '', stderr: '' }, `${op} ${sub}`);
  }
  t.deepEqual(await rx590(daemon), ['vfio-pci', 'vfio-pci'], 'the release leaves them');
  t.is(
    await releasedMessage,
    "VM 'win10' released: 0 device(s) given back; '0000:0b:00.0', '0000:0b:00.1' stay on vfio-pci, held at boot for it",
  );

  // A restart (same state folder): still held, nothing moved, nothing to release.
  daemon.child.kill('SIGTERM');
  t.is(await daemon.exited, 0);
  const again = await startDaemon(t, bus, { dir: daemon.dir });
  t.deepEqual(await rx590(again), ['vfio-pci', 'vfio-pci']);
  t.notRegex(again.stderr(), /detached to vfio-pci at start/);
  t.is(await busctl('get-property', ...machine, 'HeldAtBoot'), 'as 2 "0000:0b:00.0" "0000:0b:00.1"');
});

/**
 * Killed after each sysfs write and each state save of the boot hold
 * (VFIO_HOOKD_CRASH_AFTER, every point until the start gets past the hold),
 * then started again: the RX 590 ends on vfio-pci, held at boot, with the
 * drivers it really had recorded, and no write-ahead record is left.
 */
test('a daemon killed at any point of the boot hold takes the devices at its next start, with their real drivers recorded', async (t) => {
  t.timeout(600_000);
  const points: string[] = [];
  for (const kind of ['write', 'save'] as const) {
    for (let n = 1; n < 50; n++) {
      const bus = await startPrivateBus(t);
      const dir = await tempDir(t, 'vfio-hookd-crash-');
      await fs.writeFile(path.join(dir, 'vfio-hookd.toml'), BOOT_CONFIG);
      const env = { VFIO_HOOKD_CRASH_AFTER: `${kind}:${n}` };
      const crashed = await startDaemon(t, bus, { dir, env }).then(
        (d) => (d.child.kill('SIGTERM'), false),
        (error: Error) => /exited \(SIGKILL\) before READY=1/.test(error.message) || Promise.reject(error),
      );
      if (!crashed) break; // the start got past the hold without reaching this point
      points.push(`${kind}:${n}`);
      const daemon = await startDaemon(t, bus, { dir });
      t.deepEqual(await rx590(daemon), ['vfio-pci', 'vfio-pci'], `${kind}:${n}`);
      const state = await new StateFile(daemon.runRoot).load();
      t.is(state.pending, null, `${kind}:${n}`);
      t.deepEqual(
        [...state.claims].map(([a, c]) => [a, c.owner, c.originalDriver, c.originalKnown, c.hold]),
        [
          ['0000:0b:00.0', { kind: 'vm', name: 'win10' }, 'amdgpu', true, 'boot'],
          ['0000:0b:00.1', { kind: 'vm', name: 'win10' }, 'snd_hda_intel', true, 'boot'],
        ],
        `${kind}:${n}`,
      );
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
  }
  t.log(`${points.length} kill points: ${points.join(' ')}`);
  t.true(points.length >= 4, points.join(' '));
});
