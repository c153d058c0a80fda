/**
 * Bus tier: the real daemon on a simulated reference host, on a private
 * system-like dbus-daemon using the shipped policy, driven by busctl and
 * dbus-send as libvirt's hook and users would.
 *
 * The unprivileged caller is the system user `vfiohookd-test` (created here
 * with `useradd -r -M -s /usr/sbin/nologin` when missing, and left in place:
 * it has no home, no shell and no password).
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import dbus from 'dbus-next';
import { startDaemon, startPrivateBus, type DaemonProcess, type PrivateBus } from '../helpers/private-bus.js';
import { run as exec, runResult, type CommandResult } from '../helpers/command.js';

const NAME = 'org.vfiohookd1';
const PATH = '/org/vfiohookd1';
const IFACE = 'org.vfiohookd1.Manager';
const TEST_USER = 'vfiohookd-test';

let testUser: { uid: number; gid: number };

test.before(async () => {
  const lookup = async (): Promise<{ uid: number; gid: number } | null> => {
    try {
      const uid = Number((await exec('id', ['-u', TEST_USER])).stdout.trim());
      const gid = Number((await exec('id', ['-g', TEST_USER])).stdout.trim());
      return { uid, gid };
    } catch {
      return null;
    }
  };
  let found = await lookup();
  if (found === null) {
    await exec('useradd', ['-r', '-M', '-s', '/usr/sbin/nologin', TEST_USER]);
    found = await lookup();
  }
  if (found === null) throw new Error(`cannot create the test user ${TEST_USER}`);
  testUser = found;
});

type Run = CommandResult;

/** Run a command, never throwing on a non-zero exit; `asUser` drops to the test user. */
function run(command: string, args: string[], asUser = false): Promise<Run> {
  const [file, argv] = asUser
    ? ['setpriv', [`--reuid=${testUser.uid}`, `--regid=${testUser.gid}`, '--clear-groups', '--', command, ...args]]
    : [command, args];
  return runResult(file, argv, { timeout: 30_000 });
}

function busctl(bus: PrivateBus, args: string[], asUser = false): Promise<Run> {
  return run('busctl', [`--address=${bus.address}`, ...args], asUser);
}

/** dbus-send prints the error's name (`Error org.x.Y: message`), busctl does not. `--bus=` registers with the bus (Hello); `--address=` would not. */
function dbusSend(bus: PrivateBus, member: string, args: string[], asUser = false): Promise<Run> {
  return run('dbus-send', [`--bus=${bus.address}`, '--print-reply', `--dest=${NAME}`, PATH, `${IFACE}.${member}`, ...args], asUser);
}

async function setup(t: ExecutionContext): Promise<{ bus: PrivateBus; daemon: DaemonProcess }> {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus);
  return { bus, daemon };
}

async function driverOf(daemon: DaemonProcess, address: string): Promise<string | null> {
  const link = await fs.readlink(path.join(daemon.simDir, 'sys', 'bus', 'pci', 'devices', address, 'driver')).catch(() => null);
  return link === null ? null : path.basename(link);
}

const GPU = '0000:0b:00.0';
const GPU_AUDIO = '0000:0b:00.1';

test('sends READY=1 only once it owns org.vfiohookd1', async (t) => {
  const { bus, daemon } = await setup(t);
  // Asked right after READY=1: the name must already have its owner.
  const owner = await busctl(bus, [
    'call',
    'org.freedesktop.DBus',
    '/org/freedesktop/DBus',
    'org.freedesktop.DBus',
    'NameHasOwner',
    's',
    NAME,
  ]);
  t.is(owner.stdout.trim(), 'b true');
  t.deepEqual(daemon.notify.messages, ['READY=1\nSTATUS=Ready; 0 VM(s) managed']);
  const status = await busctl(bus, ['status', NAME]);
  t.is(status.code, 0, status.stderr);
});

test('introspection lists org.vfiohookd1.Manager with its methods, properties and signal', async (t) => {
  const { bus } = await setup(t);
  const result = await busctl(bus, ['introspect', NAME, PATH]);
  t.is(result.code, 0, result.stderr);
  const lines = result.stdout.split('\n').map((l) => l.trim().split(/\s+/).join(' '));
  for (const expected of [
    'org.vfiohookd1.Manager interface - - -',
    '.ListDevices method - a(ssssuso) -',
    '.ListMachines method - a(sso) -',
    '.DetachDevice method ssb - -',
    '.ReattachDevice method s - -',
    '.HandleHook method sssss - -',
    '.HandleHookFile method sssss s -',
    '.Reload method - - -',
    '.Version property s "0.1.0" const',
    '.HookHandled signal sssbst - -',
  ]) {
    t.true(lines.includes(expected), `missing line ${expected}`);
  }
  t.true(
    lines.some((l) => /^\.ConfigFile property s ".*\/vfio-hookd\.toml" const$/.test(l)),
    'ConfigFile names the configuration file and is const',
  );
});

test('ListDevices returns the reference GPU on amdgpu in IOMMU group 25 with its object path', async (t) => {
  const { bus } = await setup(t);
  const result = await busctl(bus, ['--json=short', 'call', NAME, PATH, IFACE, 'ListDevices']);
  t.is(result.code, 0, result.stderr);
  const reply = JSON.parse(result.stdout) as { type: string; data: [Array<[string, string, string, string, number, string, string]>] };
  t.is(reply.type, 'a(ssssuso)');
  const gpu = reply.data[0].find((row) => row[0] === GPU);
  t.deepEqual(gpu, [GPU, '1002:67df', 'VGA compatible controller', 'amdgpu', 25, '', '/org/vfiohookd1/device/_30000_3a0b_3a00_2e0']);
});

test('DetachDevice moves both functions of the card to vfio-pci and ReattachDevice gives them back', async (t) => {
  const { bus, daemon } = await setup(t);
  const detach = await busctl(bus, ['call', NAME, PATH, IFACE, 'DetachDevice', 'ssb', GPU, '', 'false']);
  t.is(detach.code, 0, detach.stderr);
  t.is(await driverOf(daemon, GPU), 'vfio-pci');
  t.is(await driverOf(daemon, GPU_AUDIO), 'vfio-pci');
  const listed = JSON.parse((await busctl(bus, ['--json=short', 'call', NAME, PATH, IFACE, 'ListDevices'])).stdout) as {
    data: [Array<[string, string, string, string, number, string, string]>];
  };
  const row = listed.data[0].find((r) => r[0] === GPU);
  t.is(row?.[3], 'vfio-pci');
  t.is(row?.[5], 'manual:root', 'a detach by hand, by the caller (root)');

  const reattach = await busctl(bus, ['call', NAME, PATH, IFACE, 'ReattachDevice', 's', GPU]);
  t.is(reattach.code, 0, reattach.stderr);
  t.is(await driverOf(daemon, GPU), 'amdgpu');
  t.is(await driverOf(daemon, GPU_AUDIO), 'snd_hda_intel');
  const state = JSON.parse(await fs.readFile(path.join(daemon.runRoot, 'vfio-hookd', 'state.json'), 'utf8')) as { claims: object };
  t.deepEqual(state.claims, {});
});

test('DetachDevice of the root disk fails with HostDependency naming / and no stack trace', async (t) => {
  const { bus, daemon } = await setup(t);
  const result = await dbusSend(bus, 'DetachDevice', ['string:0000:01:00.0', 'string:', 'boolean:false']);
  t.not(result.code, 0);
  t.regex(result.stderr, /^Error org\.vfiohookd1\.HostDependency: /);
  t.true(result.stderr.includes("'/'"), result.stderr);
  t.notRegex(result.stderr, /^\s+at /m);
  t.false(result.stderr.includes('.ts:'), result.stderr);
  t.is(await driverOf(daemon, '0000:01:00.0'), 'nvme');
});

test('DetachDevice of a chipset function (the SMBus) fails with HostDependency, and it stays on its driver', async (t) => {
  const { bus, daemon } = await setup(t);
  const result = await dbusSend(bus, 'DetachDevice', ['string:0000:00:14.0', 'string:', 'boolean:false']);
  t.not(result.code, 0);
  t.is(
    result.stderr.trim(),
    "Error org.vfiohookd1.HostDependency: Cannot detach '0000:00:14.0': the host depends on it: '0000:00:14.0' (SMBus), requested: " +
      "the SMBus, where the memory's SPD, the sensors and fan control sit (a chipset function). " +
      "A chipset function never leaves the host, not even with --force, and neither does a device in its IOMMU group; check the address ('vfio-hookctl devices'), refusing",
  );
  t.is(await driverOf(daemon, '0000:00:14.0'), 'piix4_smbus');
});

test('DetachDevice of a malformed address fails with InvalidArgs', async (t) => {
  const { bus } = await setup(t);
  const result = await dbusSend(bus, 'DetachDevice', ['string:bogus', 'string:', 'boolean:false']);
  t.not(result.code, 0);
  t.regex(result.stderr, /^Error org\.freedesktop\.DBus\.Error\.InvalidArgs: .*'bogus'/);
  t.notRegex(result.stderr, /^\s+at /m);
});

test('an unprivileged user is denied DetachDevice but may read Version and call ListDevices', async (t) => {
  const { bus, daemon } = await setup(t);
  const denied = await dbusSend(bus, 'DetachDevice', [`string:${GPU}`, 'string:', 'boolean:false'], true);
  t.not(denied.code, 0);
  t.regex(denied.stderr, /^Error org\.freedesktop\.DBus\.Error\.AccessDenied: /);
  t.is(await driverOf(daemon, GPU), 'amdgpu');

  for (const member of ['ReattachDevice', 'Reload']) {
    const args = member === 'Reload' ? [] : [`string:${GPU}`];
    const r = await dbusSend(bus, member, args, true);
    t.regex(r.stderr, /^Error org\.freedesktop\.DBus\.Error\.AccessDenied: /, member);
  }
  const hook = await dbusSend(bus, 'HandleHook', ['string:win10', 'string:prepare', 'string:begin', 'string:-', 'string:<domain/>'], true);
  t.regex(hook.stderr, /^Error org\.freedesktop\.DBus\.Error\.AccessDenied: /);
  const hookFile = await dbusSend(
    bus,
    'HandleHookFile',
    ['string:win10', 'string:prepare', 'string:begin', 'string:-', 'string:/run/vfio-hookd/hook-xml.x'],
    true,
  );
  t.regex(hookFile.stderr, /^Error org\.freedesktop\.DBus\.Error\.AccessDenied: /);

  const version = await busctl(bus, ['get-property', NAME, PATH, IFACE, 'Version'], true);
  t.is(version.code, 0, version.stderr);
  t.is(version.stdout.trim(), 's "0.1.0"');

  const list = await busctl(bus, ['call', NAME, PATH, IFACE, 'ListDevices'], true);
  t.is(list.code, 0, list.stderr);
  t.true(list.stdout.startsWith('a(ssssuso) '));
  t.true(list.stdout.includes(`"${GPU}"`));

  const set = await busctl(bus, ['set-property', NAME, PATH, IFACE, 'Version', 's', '9'], true);
  t.not(set.code, 0);
});

test('HandleHook for a VM it does not manage replies at once and signals HookHandled with success', async (t) => {
  const { bus } = await setup(t);
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const proxy = await client.getProxyObject(NAME, PATH);
  const manager = proxy.getInterface(IFACE);
  const signalled = new Promise<unknown[]>((resolve) => manager.on('HookHandled', (...args: unknown[]) => resolve(args)));
  // on() sends AddMatch at once on this connection, and the bus handles one connection's messages in order: the match is in place before the call.
  const reply = await manager['HandleHook']!('win10', 'prepare', 'begin', '-', "<domain type='kvm'><name>win10</name></domain>");
  t.is(reply, null); // dbus-next's value for an empty reply
  const [domain, operation, subOperation, success, message, duration] = await signalled;
  t.deepEqual(
    [domain, operation, subOperation, success, message],
    ['win10', 'prepare', 'begin', true, "VM 'win10' is not managed by vfio-hookd"],
  );
  t.is(typeof duration, 'bigint');
});

test('a second daemon on the same bus exits 1 with a clear message and never sends READY=1', async (t) => {
  const { bus } = await setup(t);
  const error = await t.throwsAsync(startDaemon(t, bus));
  t.regex(error.message, /exited \(1\) before READY=1/);
  t.true(error.message.includes("The bus name 'org.vfiohookd1' is already owned by another process"), error.message);
});

test('SIGTERM sends STOPPING=1, releases the name and exits 0', async (t) => {
  const { bus, daemon } = await setup(t);
  daemon.child.kill('SIGTERM');
  t.is(await daemon.exited, 0, daemon.stderr());
  t.true(daemon.notify.lines.includes('STOPPING=1'));
  const owner = await busctl(bus, [
    'call',
    'org.freedesktop.DBus',
    '/org/freedesktop/DBus',
    'org.freedesktop.DBus',
    'NameHasOwner',
    's',
    NAME,
  ]);
  t.is(owner.stdout.trim(), 'b false');
});
