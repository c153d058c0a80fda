/**
 * The daemon's journal entries over the native protocol, as under systemd:
 * stderr is the journal stream (JOURNAL_STREAM), entries go to a socket of
 * the test's own standing in for journald's.
 */
import test from 'ava';
import path from 'node:path';
import dbus from 'dbus-next';
import { NotifyListener, startDaemon, startPrivateBus, tempDir } from '../helpers/private-bus.js';
import { MessageId } from '../../lib/systemd/index.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

function fields(datagram: string): Record<string, string> {
  return Object.fromEntries(
    datagram
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

test('a detach is journaled with MESSAGE_ID, VFIO_DOMAIN and PCI_ADDRESS; a refusal with HOOK_REFUSED', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-journal-');
  const journald = await NotifyListener.open(t, path.join(dir, 'journal-socket'));
  const bus = await startPrivateBus(t);
  await startDaemon(t, bus, { config: WIN10_CONFIG, journalSocket: journald.path });

  const started = fields(await journald.waitFor('PRIORITY=6'));
  t.regex(started['MESSAGE'] ?? '', /^vfio-hookd 0\.1\.0 owns 'org\.vfiohookd1'; 1 VM\(s\) in /);
  t.is(started['SYSLOG_IDENTIFIER'], 'vfio-hookd');

  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const handle = manager['HandleHook'] as (...a: string[]) => Promise<void>;
  await handle('win10', 'prepare', 'begin', '-', WIN10_XML);

  const detached = fields(await journald.waitFor('PCI_ADDRESS=0000:0b:00.0'));
  t.deepEqual(detached, {
    MESSAGE: "Device '0000:0b:00.0' detached to vfio-pci for VM 'win10'",
    PRIORITY: '6',
    SYSLOG_IDENTIFIER: 'vfio-hookd',
    VFIO_DOMAIN: 'win10',
    VFIO_HOOK: 'prepare begin',
    PCI_ADDRESS: '0000:0b:00.0',
    MESSAGE_ID: MessageId.DEVICE_DETACHED,
  });
  const created = fields(await journald.waitFor(`MESSAGE_ID=${MessageId.SHM_FILE_CREATED}`));
  t.regex(created['SHM_PATH'] ?? '', /\/dev\/shm\/looking-glass$/);

  const refusedLine = `MESSAGE_ID=${MessageId.HOOK_REFUSED}`;
  await handle('win10', 'explode', 'begin', '-', WIN10_XML).catch(() => undefined);
  const refused = fields(await journald.waitFor(refusedLine));
  t.is(refused['PRIORITY'], '3');
  t.is(refused['VFIO_DOMAIN'], 'win10');
  t.regex(refused['MESSAGE'] ?? '', /^Hook 'explode begin' for VM 'win10' refused: Invalid hook operation 'explode'/);
});

test('with WATCHDOG_USEC set the daemon pings the watchdog, and STATUS says what it did last', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG, watchdogUsec: 200_000 });
  await daemon.notify.waitFor('WATCHDOG=1');
  t.true(daemon.notify.messages.indexOf('WATCHDOG=1') > daemon.notify.messages.findIndex((m) => m.startsWith('READY=1')), 'after READY=1');
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', 'prepare', 'begin', '-', WIN10_XML);
  const status = await daemon.notify.waitFor("STATUS=Ready; last: prepare begin of 'win10'");
  t.true(status.split('\n').includes("STATUS=Ready; last: prepare begin of 'win10'"));
});
