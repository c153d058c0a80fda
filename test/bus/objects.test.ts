/**
 * Machine and Device objects: what `busctl` shows of each VM and PCI device,
 * kept in step with the hooks, with PropertiesChanged for followers.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import dbus from 'dbus-next';
import { REPO, startDaemon, startPrivateBus } from '../helpers/private-bus.js';
import { run } from '../helpers/command.js';
import { devicePath, machinePath } from '../../lib/bus/object-path.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

test('each configured VM and each PCI device has an object whose properties follow the hooks', async (t) => {
  const bus = await startPrivateBus(t);
  await startDaemon(t, bus, { config: WIN10_CONFIG });
  const busctl = async (...args: string[]): Promise<string> => (await run('busctl', [`--address=${bus.address}`, ...args])).stdout.trim();

  t.is(
    await busctl('get-property', 'org.vfiohookd1', '/org/vfiohookd1', 'org.vfiohookd1.Manager', 'Machines'),
    'ao 1 "/org/vfiohookd1/machine/win10"',
  );
  t.is(
    await busctl('call', 'org.vfiohookd1', '/org/vfiohookd1', 'org.vfiohookd1.Manager', 'ListMachines'),
    'a(sso) 1 "win10" "defined" "/org/vfiohookd1/machine/win10"',
  );
  const machine = ['org.vfiohookd1', machinePath('win10'), 'org.vfiohookd1.Machine'];
  t.is(await busctl('get-property', ...machine, 'Devices'), 'as 1 "0000:0b:00.0"');
  t.is(await busctl('get-property', ...machine, 'ShmFiles'), 'as 2 "looking-glass" "scream"');
  t.is(await busctl('get-property', ...machine, 'User'), 's "1000"');
  t.is(await busctl('get-property', ...machine, 'Units'), 'as 1 "looking-glass-client@looking-glass.service"');
  const gpu = ['org.vfiohookd1', devicePath('0000:0b:00.0'), 'org.vfiohookd1.Device'];
  t.is(await busctl('get-property', ...gpu, 'Driver'), 's "amdgpu"');
  t.is(await busctl('get-property', ...gpu, 'IommuGroup'), 'u 25');

  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const props = (await client.getProxyObject('org.vfiohookd1', devicePath('0000:0b:00.0'))).getInterface('org.freedesktop.DBus.Properties');
  const changed = new Promise<Record<string, { value: unknown }>>((resolve) =>
    props.on('PropertiesChanged', (_iface: string, values: Record<string, { value: unknown }>) => resolve(values)),
  );
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', 'prepare', 'begin', '-', WIN10_XML);

  const values = await changed;
  t.is(values['Driver']?.value, 'vfio-pci');
  t.is(values['Owner']?.value, 'vm:win10');
  t.is(await busctl('get-property', ...machine, 'State'), 's "prepared"');
  t.is(await busctl('get-property', ...machine, 'Devices'), 'as 2 "0000:0b:00.0" "0000:0b:00.1"');
  t.regex(await busctl('get-property', ...machine, 'LastMessage'), /^s "VM \\'win10\\' prepared: 0000:0b:00\.1, 0000:0b:00\.0 on vfio-pci/); // busctl escapes quotes
});

test('a changed configuration file is picked up without a restart, and a broken one keeps the running one', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const props = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.freedesktop.DBus.Properties');
  const machines = (): Promise<string[]> =>
    (props['Get'] as (i: string, p: string) => Promise<{ value: string[] }>)('org.vfiohookd1.Manager', 'Machines').then((v) => v.value);
  const changed = new Promise<void>((resolve) => props.on('PropertiesChanged', () => resolve()));

  // Editors replace the file: write a temp file and rename it over.
  const temp = `${daemon.configPath}.new`;
  await fs.writeFile(temp, `${WIN10_CONFIG}\n[vm.linux]\ndevices = []\n`);
  await fs.rename(temp, daemon.configPath);
  await changed;
  t.deepEqual(await machines(), ['/org/vfiohookd1/machine/linux', '/org/vfiohookd1/machine/win10']);

  await fs.writeFile(daemon.configPath, '[vm.win10\n');
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const error = await t.throwsAsync((manager['Reload'] as () => Promise<void>)());
  t.regex(error.message, /vfio-hookd\.toml:1:\d+: /, 'line and column of the error');
  t.deepEqual(await machines(), ['/org/vfiohookd1/machine/linux', '/org/vfiohookd1/machine/win10'], 'the running configuration stays');
});

test('vfio-hookctl status shows what the daemon knows of each VM, and says so when it is not running', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', 'prepare', 'begin', '-', WIN10_XML);

  const hookctl = (...args: string[]) =>
    run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', 'status', '--bus-address', bus.address, ...args], { cwd: REPO });
  const { stdout } = await hookctl();
  // Since when it is prepared is a time of day: the one line matched by shape.
  const since = /^win10: prepared \(user 1000\), since \d\d:\d\d:\d\d, \d+ s ago$/;
  t.regex(stdout.split('\n')[1]!, since);
  t.is(
    stdout.replace(/^win10: prepared .*$/m, 'win10: prepared (user 1000), since ...'),
    [
      `vfio-hookd 0.1.0, configuration '${daemon.configPath}'`,
      'win10: prepared (user 1000), since ...',
      '  devices: 0000:0b:00.0 (back to amdgpu), 0000:0b:00.1 (back to snd_hda_intel)',
      '  shm files: looking-glass (32 MiB, uid 1000, gid 64055, mode 0660), scream (2 MiB, uid 1000, gid 64055, mode 0660)',
      '  units: looking-glass-client@looking-glass.service',
      "  last: VM 'win10' prepared: 0000:0b:00.1, 0000:0b:00.0 on vfio-pci, 2 shm file(s) ready",
      '',
    ].join('\n'),
  );
  const json = JSON.parse((await hookctl('--json')).stdout) as { machines: { name: string; state: string }[] };
  t.deepEqual(
    json.machines.map((m) => [m.name, m.state]),
    [['win10', 'prepared']],
  );

  const empty = await startPrivateBus(t);
  const error = await t.throwsAsync(
    run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', 'status', '--bus-address', empty.address], { cwd: REPO }),
  );
  t.regex(
    (error as unknown as { stderr: string }).stderr,
    /^vfio-hookctl: vfio-hookd is not running: nobody owns 'org\.vfiohookd1' on the system bus .*systemctl start vfio-hookd'\n$/,
  );

  // No bus socket at all: one sentence, exit 1, never a stack trace.
  const nobus = await run(
    process.execPath,
    ['--import', 'tsx', 'service/vfio-hookctl.ts', 'status', '--bus-address', 'unix:path=/nonexistent/bus'],
    { cwd: REPO },
  ).catch((e: { code: number; stderr: string }) => e);
  t.is((nobus as { code: number }).code, 1);
  t.regex(
    (nobus as { stderr: string }).stderr,
    /^vfio-hookctl: Cannot connect to the bus unix:path=\/nonexistent\/bus \(.*\); is dbus running\?\n$/,
  );
});

test('the host changes a VM has in effect are its Machine object HostChanges, and vfio-hookctl status lists them', async (t) => {
  const bus = await startPrivateBus(t);
  const config = WIN10_CONFIG.replace('devices = ["0000:0b:00.0"]', 'devices = ["0000:0b:00.0"]\nreset-method = { "0b:00.0" = "bus" }');
  await startDaemon(t, bus, { config });
  const busctl = async (...args: string[]): Promise<string> => (await run('busctl', [`--address=${bus.address}`, ...args])).stdout.trim();
  const machine = ['org.vfiohookd1', machinePath('win10'), 'org.vfiohookd1.Machine'];
  // HandleHook returns once the Machine objects show the stage (DaemonBackend's `settled`): read at once, no polling.
  const hostChanges = (): Promise<string> => busctl('get-property', ...machine, 'HostChanges');
  t.is(await busctl('get-property', ...machine, 'HostChanges'), 'a(sss) 0');
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const hook = manager['HandleHook'] as (...a: string[]) => Promise<void>;
  await hook('win10', 'prepare', 'begin', '-', WIN10_XML);
  const prepared = `a(sss) 1 "reset-method" "before-detach" "set reset_method of 0000:0b:00.0 to \\'bus\\' (was \\'bus\\')"`;
  t.is(await hostChanges(), prepared);
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'service/vfio-hookctl.ts', 'status', '--bus-address', bus.address], {
    cwd: REPO,
  });
  t.regex(stdout, /^ {2}host change: set reset_method of 0000:0b:00\.0 to 'bus' \(was 'bus'\) \(reset-method, undone at release\)$/m);
  await hook('win10', 'release', 'end', '-', '');
  t.is(await hostChanges(), 'a(sss) 0');
});

test('a hook, a detach and a reattach return after the objects show what they did: the signal comes before the reply', async (t) => {
  // One connection's messages arrive in the order the daemon sent them. Had the reply gone first (the objects
  // refreshed just after it, as before), a client acting on the reply, `vfio-hookctl status` after `virsh start`,
  // could read the state before the stage.
  const bus = await startPrivateBus(t);
  await startDaemon(t, bus, { config: WIN10_CONFIG });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const seen: string[] = [];
  const follow = async (path: string, label: string): Promise<void> => {
    const props = (await client.getProxyObject('org.vfiohookd1', path)).getInterface('org.freedesktop.DBus.Properties');
    props.on('PropertiesChanged', (_iface: string, values: Record<string, { value: unknown }>) => {
      for (const [name, { value }] of Object.entries(values)) {
        seen.push(`${label} ${name}=${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
      }
    });
  };
  await follow(machinePath('win10'), 'machine');
  await follow(devicePath('0000:0b:00.0'), 'gpu');
  // A call on the same connection after the AddMatch calls: the matches are in place before the first hook.
  await client.call(
    new dbus.Message({ destination: 'org.vfiohookd1', path: '/org/vfiohookd1', interface: 'org.freedesktop.DBus.Peer', member: 'Ping' }),
  );
  const call = (member: string, ...args: unknown[]): Promise<unknown> =>
    (manager[member] as (...a: unknown[]) => Promise<unknown>)(...args);

  await call('HandleHook', 'win10', 'prepare', 'begin', '-', WIN10_XML);
  t.true(seen.includes('machine State="prepared"'), seen.join('\n'));
  t.true(seen.includes('gpu Driver="vfio-pci"'), seen.join('\n'));
  seen.length = 0;
  await call('HandleHook', 'win10', 'release', 'end', '-', '');
  t.true(seen.includes('gpu Driver="amdgpu"'), seen.join('\n'));
  seen.length = 0;
  await call('DetachDevice', '0000:0b:00.0', '', false);
  t.true(seen.includes('gpu Driver="vfio-pci"'), seen.join('\n'));
  seen.length = 0;
  await call('ReattachDevice', '0000:0b:00.0');
  t.true(seen.includes('gpu Driver="amdgpu"'), seen.join('\n'));
});
