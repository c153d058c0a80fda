/**
 * Errors at the bus boundary, in process: known errors keep their bus name
 * and message, anything else becomes Failed with one short line, never a
 * stack.
 */
import test from 'ava';
import dbus from 'dbus-next';
import { DBUS_ERROR_FAILED, mapErrors, toDBusError } from '../../lib/bus/bus-errors.js';
import { HostDependency, InvalidArgs, NoSuchDevice } from '../../lib/errors.js';
import { ManagerInterface, type ManagerBackend } from '../../lib/bus/manager-interface.js';

test('maps each known error to its own bus name and message', (t) => {
  for (const [error, name] of [
    [new HostDependency("Cannot detach '0000:01:00.0': '/' is mounted from it, refusing"), 'org.vfiohookd1.HostDependency'],
    [new NoSuchDevice("No PCI device '0000:99:00.0'"), 'org.vfiohookd1.NoSuchDevice'],
    [new InvalidArgs("Invalid PCI address 'bogus'"), 'org.freedesktop.DBus.Error.InvalidArgs'],
  ] as const) {
    const mapped = toDBusError(error);
    t.true(mapped instanceof dbus.DBusError);
    t.is(mapped.type, name);
    t.is(mapped.text, error.message);
  }
});

test('maps any other error to Failed with its first line only', (t) => {
  const error = new TypeError('Cannot read properties of undefined\n    at frame (/x.ts:1:1)');
  const mapped = toDBusError(error);
  t.is(mapped.type, DBUS_ERROR_FAILED);
  t.is(mapped.text, 'Cannot read properties of undefined');
  t.false(mapped.text.includes(' at '));
});

test('keeps a DBusError as it is and gives a text to an empty error', (t) => {
  const mapped = toDBusError(new dbus.DBusError('org.vfiohookd1.Timeout', 'late'));
  t.deepEqual([mapped.type, mapped.text], ['org.vfiohookd1.Timeout', 'late']);
  t.is(toDBusError(new Error('')).text, 'Internal error; see the journal of vfio-hookd');
  t.is(toDBusError('a string').text, 'a string');
});

test('cuts a long unexpected message to 200 characters', (t) => {
  t.is(toDBusError(new Error('x'.repeat(500))).text.length, 200);
});

test('mapErrors hands the original error to onError and throws the mapped one', async (t) => {
  const seen: unknown[] = [];
  const original = new RangeError('boom');
  const thrown = await t.throwsAsync(mapErrors(() => Promise.reject(original), (e) => seen.push(e)));
  t.deepEqual(seen, [original]);
  t.is((thrown as unknown as InstanceType<typeof dbus.DBusError>).type, DBUS_ERROR_FAILED);
});

function backend(overrides: Partial<ManagerBackend>): ManagerBackend {
  return {
    listMachines: async () => [],
    listDevices: async () => [],
    detachDevice: async () => {},
    reattachDevice: async () => {},
    handleHook: async () => ({ message: 'ok' }),
    reload: async () => {},
    ...overrides,
  };
}

test('the Manager interface converts rows to (ssssuso), a missing group to 0xffffffff', async (t) => {
  const manager = new ManagerInterface(
    backend({
      listDevices: async () => [
        { address: '0000:0b:00.0', vendorId: '1002', deviceId: '67df', className: 'VGA compatible controller', driver: null, iommuGroup: null, owner: 'win10' },
      ],
    }),
    { version: '1', configFile: '' },
  );
  t.deepEqual(await manager.ListDevices(), [
    ['0000:0b:00.0', '1002:67df', 'VGA compatible controller', '', 0xffffffff, 'win10', '/org/vfiohookd1/device/_30000_3a0b_3a00_2e0'],
  ]);
});

test('a failing HandleHook signals success=false with the message and rejects with the mapped error', async (t) => {
  const errors: string[] = [];
  let clock = 1000n;
  const manager = new ManagerInterface(
    backend({
      handleHook: async () => {
        clock += 250n;
        throw new NoSuchDevice("No PCI device '0000:99:00.0'");
      },
    }),
    { version: '1', configFile: '', monotonicUsec: () => clock, onError: (member) => errors.push(member) },
  );
  const signals: unknown[] = [];
  manager.HookHandled = ((tuple: unknown) => {
    signals.push(tuple);
    return tuple;
  }) as typeof manager.HookHandled;
  const thrown = (await t.throwsAsync(manager.HandleHook('win10', 'prepare', 'begin', '-', '<domain/>'))) as unknown as InstanceType<typeof dbus.DBusError>;
  t.is(thrown.type, 'org.vfiohookd1.NoSuchDevice');
  t.deepEqual(signals, [['win10', 'prepare', 'begin', false, "No PCI device '0000:99:00.0'", 250n]]);
  t.deepEqual(errors, ['HandleHook']);
});
