/**
 * The real systemd-logind on a private bus: in a private mount namespace
 * (`unshare -m`) with a tmpfs on /run/systemd, so its state never touches the
 * machine's, connected to the test's bus through DBUS_SYSTEM_BUS_ADDRESS.
 * No PID 1 systemd is needed for Inhibit() and ListInhibitors().
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { ExecutionContext } from 'ava';
import dbus from 'dbus-next';
import type { PrivateBus } from './private-bus.js';
import { trackChild } from './settled.js';

export const LOGIND_POLICY = '/usr/share/dbus-1/system.d/org.freedesktop.login1.conf';
const LOGIND = '/lib/systemd/systemd-logind';

export type Inhibitor = [what: string, who: string, why: string, mode: string, uid: number, pid: number];

export interface Logind {
  listInhibitors(): Promise<Inhibitor[]>;
  /** Resolves once an inhibitor list satisfies `test` (checked on each change of logind's BlockInhibited property). */
  waitFor(test: (list: Inhibitor[]) => boolean): Promise<Inhibitor[]>;
}

export async function startLogind(t: ExecutionContext, bus: PrivateBus): Promise<Logind> {
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const driver = (await client.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus')).getInterface('org.freedesktop.DBus');
  const owned = new Promise<void>((resolve) =>
    driver.on('NameOwnerChanged', (name: string, _old: string, owner: string) => {
      if (name === 'org.freedesktop.login1' && owner !== '') resolve();
    }),
  );
  const child = trackChild(
    t,
    spawn(
      'unshare',
      ['-m', '--propagation', 'private', 'sh', '-c', `mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && exec ${LOGIND}`],
      { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DBUS_SYSTEM_BUS_ADDRESS: bus.address }, stdio: ['ignore', 'ignore', 'pipe'] },
    ),
    'systemd-logind',
  );
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`systemd-logind exited (${String(code)}) before owning its name: ${stderr}`);
  });
  await Promise.race([owned, exited]);

  const login1 = await client.getProxyObject('org.freedesktop.login1', '/org/freedesktop/login1');
  const manager = login1.getInterface('org.freedesktop.login1.Manager');
  const props = login1.getInterface('org.freedesktop.DBus.Properties');
  const listInhibitors = (): Promise<Inhibitor[]> => (manager['ListInhibitors'] as () => Promise<Inhibitor[]>)();
  return {
    listInhibitors,
    async waitFor(test) {
      for (;;) {
        const changed = new Promise<void>((resolve) => props.once('PropertiesChanged', () => resolve()));
        const list = await listInhibitors();
        if (test(list)) return list;
        await changed;
      }
    },
  };
}
