/**
 * Errors at the bus boundary, in process: known errors keep their bus name
 * and message, anything else becomes Failed with one short line, never a
 * stack.
 */
import { tempDir } from '../helpers/temp-dir.js';
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import dbus from 'dbus-next';
import { DBUS_ERROR_FAILED, HOOK_REFUSAL_MARKER, mapErrors, oneLine, toDBusError, toHookDBusError } from '../../lib/bus/bus-errors.js';
import { busSafe, hookHandledTuple } from '../../lib/bus/dbus-types.js';
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

test('hook errors start with the marker and are one line, whatever the message', (t) => {
  const cases: [unknown, string, string][] = [
    [
      new InvalidArgs("Invalid hook operation 'explode'"),
      'org.freedesktop.DBus.Error.InvalidArgs',
      "vfio-hookd: Invalid hook operation 'explode'",
    ],
    [new NoSuchDevice('line one\n  line two\r\n\tthree'), 'org.vfiohookd1.NoSuchDevice', 'vfio-hookd: line one line two three'],
    [new InvalidArgs(''), 'org.freedesktop.DBus.Error.InvalidArgs', 'vfio-hookd: Refused without a reason; see the journal of vfio-hookd'],
    [new TypeError('boom\n    at frame (/x.ts:1:1)'), DBUS_ERROR_FAILED, 'vfio-hookd: boom'],
    [new InvalidArgs('vfio-hookd: already marked'), 'org.freedesktop.DBus.Error.InvalidArgs', 'vfio-hookd: vfio-hookd: already marked'],
    [new InvalidArgs("VM 'a\uffffb\ufdd0'"), 'org.freedesktop.DBus.Error.InvalidArgs', "vfio-hookd: VM 'a\ufffdb\ufffd'"],
  ];
  for (const [error, type, text] of cases) {
    const mapped = toHookDBusError(error);
    t.deepEqual([mapped.type, mapped.text], [type, text]);
    t.true(mapped.text.startsWith(HOOK_REFUSAL_MARKER));
  }
});

test('text for the bus: noncharacters and lone surrogates become U+FFFD, everything else stays', (t) => {
  const cases: [string, string][] = [
    ['plain \u00fc \u{1f5a5} \ufffd \ufffc', 'plain \u00fc \u{1f5a5} \ufffd \ufffc'],
    ['\ufdd0\ufdef\ufdcf\ufdf0', '\ufffd\ufffd\ufdcf\ufdf0'],
    ['\ufffe\uffff\u{1fffe}\u{10ffff}', '\ufffd\ufffd\ufffd\ufffd'],
    ['lone \ud800 and \udc00', 'lone \ufffd and \ufffd'],
  ];
  for (const [input, expected] of cases) t.is(busSafe(input), expected, JSON.stringify(input));
  t.is(oneLine('a\n\n b\u0000c\u007f'), 'a b c');
  t.is(toDBusError(new InvalidArgs('x\uffff')).text, 'x\ufffd', "every error, not only the hook's");
  const event = { domainName: 'vm\ufdd0', operation: 'prepare', subOperation: 'begin', extra: '-', domainXml: '' };
  t.deepEqual(
    hookHandledTuple(event, false, "VM 'vm\ufdd0'", 1n),
    ['vm\ufffd', 'prepare', 'begin', false, "VM 'vm\ufffd'", 1n],
    'and the signal',
  );
});

test('mapErrors hands the original error to onError and throws the mapped one', async (t) => {
  const seen: unknown[] = [];
  const original = new RangeError('boom');
  const thrown = await t.throwsAsync(
    mapErrors(
      () => Promise.reject(original),
      (e) => seen.push(e),
    ),
  );
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
        {
          address: '0000:0b:00.0',
          vendorId: '1002',
          deviceId: '67df',
          className: 'VGA compatible controller',
          driver: null,
          iommuGroup: null,
          owner: 'win10',
        },
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
  const thrown = (await t.throwsAsync(manager.HandleHook('win10', 'prepare', 'begin', '-', '<domain/>'))) as unknown as InstanceType<
    typeof dbus.DBusError
  >;
  t.is(thrown.type, 'org.vfiohookd1.NoSuchDevice');
  t.deepEqual(signals, [['win10', 'prepare', 'begin', false, "No PCI device '0000:99:00.0'", 250n]]);
  t.deepEqual(errors, ['HandleHook']);
});

test('HandleHookFile reads the file, returns the note as one line, and marks every error', async (t) => {
  const runRoot = await tempDir(t, 'vfio-hookd-run-');
  await fs.mkdir(path.join(runRoot, 'vfio-hookd'));
  const file = path.join(runRoot, 'vfio-hookd', 'hook-xml.abc');
  await fs.writeFile(file, '<domain><name>plain</name></domain>', { mode: 0o600 });

  const seen: string[] = [];
  let clock = 0n;
  let answer: () => Promise<{ message: string; note?: string }> = async () => ({
    message: 'not managed',
    note: 'did you mean\n[vm.win10]?',
  });
  const errors: string[] = [];
  const manager = new ManagerInterface(
    backend({
      handleHook: async (event) => {
        seen.push(event.domainXml);
        clock += 5n;
        return answer();
      },
    }),
    { version: '1', configFile: '', runRoot, monotonicUsec: () => clock, onError: (member) => errors.push(member) },
  );
  const signals: unknown[] = [];
  manager.HookHandled = ((tuple: unknown) => {
    signals.push(tuple);
    return tuple;
  }) as typeof manager.HookHandled;

  t.is(await manager.HandleHookFile('plain', 'prepare', 'begin', '-', file), 'did you mean [vm.win10]?');
  t.deepEqual(seen, ['<domain><name>plain</name></domain>']);
  answer = async () => ({ message: 'not managed' });
  t.is(await manager.HandleHookFile('plain', 'prepare', 'begin', '-', file), '', 'no note: the empty string');

  answer = async () => {
    throw new NoSuchDevice("No PCI device '0000:99:00.0'");
  };
  const refused = (await t.throwsAsync(manager.HandleHookFile('plain', 'prepare', 'begin', '-', file))) as unknown as InstanceType<
    typeof dbus.DBusError
  >;
  t.deepEqual([refused.type, refused.text], ['org.vfiohookd1.NoSuchDevice', "vfio-hookd: No PCI device '0000:99:00.0'"]);

  const unreadable = (await t.throwsAsync(
    manager.HandleHookFile('plain', 'prepare', 'begin', '-', '/etc/passwd'),
  )) as unknown as InstanceType<typeof dbus.DBusError>;
  t.is(unreadable.type, 'org.freedesktop.DBus.Error.InvalidArgs');
  t.is(
    unreadable.text,
    `vfio-hookd: Invalid domain XML file '/etc/passwd': expected a file named 'hook-*' in '${runRoot}/vfio-hookd', refusing`,
  );
  t.is(seen.length, 3, 'the backend never saw the unreadable one');

  t.deepEqual(errors, ['HandleHook', 'HandleHookFile'], 'read errors and hook errors reach onError under their own member');
  t.deepEqual(signals, [
    ['plain', 'prepare', 'begin', true, 'not managed', 5n],
    ['plain', 'prepare', 'begin', true, 'not managed', 5n],
    ['plain', 'prepare', 'begin', false, "No PCI device '0000:99:00.0'", 5n],
    [
      'plain',
      'prepare',
      'begin',
      false,
      `Invalid domain XML file '/etc/passwd': expected a file named 'hook-*' in '${runRoot}/vfio-hookd', refusing`,
      0n,
    ],
  ]);
});
