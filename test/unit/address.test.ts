/**
 * PCI addresses: what users type (lspci's short form, uppercase, stray
 * spaces) is normalised; anything that could carry a path or a second line
 * into a sysfs write is refused with InvalidArgs naming the value.
 */
import test from 'ava';
import { InvalidArgs } from '../../lib/errors.js';
import { addressParts, compareAddresses, isPciAddress, parsePciAddress, slotOf } from '../../lib/pci/address.js';

const EXPECTED = "expected 'DDDD:BB:DD.F' or 'BB:DD.F' in hex, e.g. '0000:0b:00.0' (see lspci -D)";

const valid: readonly (readonly [input: string, normalised: string])[] = [
  ['0000:0b:00.0', '0000:0b:00.0'],
  ['0000:0a:00.1', '0000:0a:00.1'],
  ['0b:00.0', '0000:0b:00.0'],
  ['0b:00.1', '0000:0b:00.1'],
  ['0000:0B:00.0', '0000:0b:00.0'],
  ['0B:1F.7', '0000:0b:1f.7'],
  ['ABCD:EF:1f.7', 'abcd:ef:1f.7'],
  ['0001:00:00.0', '0001:00:00.0'],
  [' 0000:0b:00.0', '0000:0b:00.0'],
  ['0b:00.0  ', '0000:0b:00.0'],
  ['  0B:00.1  ', '0000:0b:00.1'],
];

for (const [input, normalised] of valid) {
  test(`parsePciAddress normalises ${JSON.stringify(input)} to '${normalised}'`, (t) => {
    t.is(parsePciAddress(input), normalised);
    t.true(isPciAddress(normalised));
  });
}

/** The value as the message quotes it: control characters made visible (`\x0a`). */
const quoted = (text: string): string =>
  text.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

const invalid: readonly (readonly [input: string, why: string])[] = [
  ['0b:00', 'no function'],
  ['0000:0b:00', 'no function, full form'],
  ['0000:0b:00.8', 'function above 7'],
  ['0000:0b:20.0', 'device above 0x1f'],
  ['zz:00.0', 'not hex'],
  ['0000:0b:00.0/../x', 'a path riding on the address'],
  ['../0000:0b:00.0', 'a leading path'],
  ['0000:0b:00.0\n', 'a trailing newline (a second line in a sysfs write)'],
  ['0000:0b:00.0\n0000:0a:00.0', 'two addresses on two lines'],
  ['', 'empty'],
  ['   ', 'blank'],
  ['000:0b:00.0', 'three-digit domain'],
  ['0000:b:00.0', 'one-digit bus'],
  ['0000-0b-00.0', 'wrong separators'],
  ['0000:0b:00.0 0000:0a:00.0', 'two addresses on one line'],
];

for (const [input, why] of invalid) {
  test(`parsePciAddress refuses ${JSON.stringify(input)} (${why}) with InvalidArgs naming it`, (t) => {
    const error = t.throws(() => parsePciAddress(input), { instanceOf: InvalidArgs });
    t.is(error.message, `Invalid PCI address '${quoted(input)}': ${EXPECTED}`);
    t.is(error.dbusName, 'org.freedesktop.DBus.Error.InvalidArgs');
  });
}

test('isPciAddress accepts only the normalised full form', (t) => {
  t.true(isPciAddress('0000:0b:00.0'));
  t.false(isPciAddress('0b:00.0'), 'short form is not normalised');
  t.false(isPciAddress('0000:0B:00.0'), 'uppercase is not normalised');
  t.false(isPciAddress(' 0000:0b:00.0'));
  t.false(isPciAddress('0000:0b:00.0\n'));
});

test('addressParts splits a normalised address into numbers', (t) => {
  t.deepEqual(addressParts('0000:0b:1f.7'), { domain: 0, bus: 0x0b, device: 0x1f, fn: 7 });
  t.deepEqual(addressParts('abcd:ef:00.1'), { domain: 0xabcd, bus: 0xef, device: 0, fn: 1 });
  const error = t.throws(() => addressParts('0b:00.0'), { instanceOf: InvalidArgs });
  t.is(error.message, "Invalid PCI address '0b:00.0'");
});

const slots: readonly (readonly [string, string])[] = [
  ['0000:0b:00.0', '0000:0b:00'],
  ['0000:0b:00.1', '0000:0b:00'],
  ['0000:01:00.3', '0000:01:00'],
  ['abcd:ef:1f.7', 'abcd:ef:1f'],
];

for (const [address, slot] of slots) {
  test(`slotOf('${address}') is '${slot}'`, (t) => {
    t.is(slotOf(address), slot);
  });
}

test('the functions of one card share a slot and other cards do not', (t) => {
  t.is(slotOf('0000:0b:00.0'), slotOf('0000:0b:00.1'));
  t.not(slotOf('0000:0a:00.0'), slotOf('0000:0b:00.0'));
  t.not(slotOf('0000:0b:00.0'), slotOf('0001:0b:00.0'));
});

test('compareAddresses orders by domain, bus, device, function, as lspci does', (t) => {
  const shuffled = [
    '0001:00:00.0',
    '0000:0b:00.1',
    '0000:0a:00.0',
    '0000:00:1f.0',
    '0000:0b:00.0',
    '0000:00:01.3',
    '0000:10:00.0',
    '0000:00:01.1',
  ];
  t.deepEqual([...shuffled].sort(compareAddresses), [
    '0000:00:01.1',
    '0000:00:01.3',
    '0000:00:1f.0',
    '0000:0a:00.0',
    '0000:0b:00.0',
    '0000:0b:00.1',
    '0000:10:00.0',
    '0001:00:00.0',
  ]);
});

test('compareAddresses is negative, zero and positive as the order says', (t) => {
  t.true(compareAddresses('0000:0a:00.0', '0000:0b:00.0') < 0);
  t.true(compareAddresses('0000:0b:00.1', '0000:0b:00.0') > 0);
  t.is(compareAddresses('0000:0b:00.0', '0000:0b:00.0'), 0);
  t.true(compareAddresses('0000:ff:1f.7', '0001:00:00.0') < 0, 'domain outranks bus');
});
