/**
 * The sleep inhibitor against the real systemd-logind: held while a VM that
 * owns a GPU runs, released when it stops, taken again after a daemon restart.
 */
import test from 'ava';
import dbus from 'dbus-next';
import { startDaemon, startPrivateBus, type PrivateBus } from '../helpers/private-bus.js';
import { LOGIND_POLICY, startLogind, type Inhibitor } from '../helpers/logind.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const ours = (list: Inhibitor[]): Inhibitor[] => list.filter(([, who]) => who === 'vfio-hookd');

async function hook(t: { teardown(fn: () => void): void }, bus: PrivateBus, op: string, sub: string): Promise<void> {
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', op, sub, '-', WIN10_XML);
}

test('a VM that owns a GPU holds a sleep inhibitor from prepare to release', async (t) => {
  const bus = await startPrivateBus(t, [LOGIND_POLICY]);
  const logind = await startLogind(t, bus);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });

  await hook(t, bus, 'prepare', 'begin');
  const held = ours(await logind.waitFor((l) => ours(l).length === 1));
  t.deepEqual(
    held.map(([what, who, why, mode, uid]) => [what, who, why, mode, uid]),
    [['sleep', 'vfio-hookd', "VM 'win10' owns 0000:0b:00.0, 0000:0b:00.1", 'block', 0]],
  );
  t.is(held[0]![5], daemon.child.pid ?? -1);

  await hook(t, bus, 'release', 'end');
  t.deepEqual(ours(await logind.waitFor((l) => ours(l).length === 0)), []);
});

test('a restarted daemon takes the inhibitor again for a VM that still holds its GPU', async (t) => {
  const bus = await startPrivateBus(t, [LOGIND_POLICY]);
  const logind = await startLogind(t, bus);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  await hook(t, bus, 'prepare', 'begin');
  await logind.waitFor((l) => ours(l).length === 1);

  daemon.child.kill('SIGTERM');
  t.is(await daemon.exited, 0);
  await logind.waitFor((l) => ours(l).length === 0);

  const again = await startDaemon(t, bus, { dir: daemon.dir });
  const held = ours(await logind.waitFor((l) => ours(l).length === 1));
  t.is(held[0]![5], again.child.pid ?? -1);
});
