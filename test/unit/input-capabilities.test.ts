/**
 * Keyboards and mice from their sysfs capability bitmaps, as real devices
 * print them (`/proc/bus/input/devices` of x86_64 machines; the combined
 * device is constructed): what is the host's input, and what is not.
 */
import test from 'ava';
import { inputKinds, parseCapabilityBitmap, type InputCapabilities, type InputKind } from '../../lib/pci/input-capabilities.js';

const bitmaps: [string, bigint | null][] = [
  ['0', 0n],
  ['17\n', 0x17n],
  ['1f0000 0 0 0 0', 0x1f0000n << 256n],
  ['10000000000000 0', 0x10000000000000n << 64n],
  ['fffffffffffffffe', 0xfffffffffffffffen],
  ['', null],
  ['  \n', null],
  ['xyz', null],
  ['0x17', null],
  ['1 12345678901234567', null],
];

for (const [text, expected] of bitmaps) {
  test(`parseCapabilityBitmap(${JSON.stringify(text)}) is ${expected === null ? 'null' : `0x${expected.toString(16)}`}`, (t) => {
    t.is(parseCapabilityBitmap(text), expected);
  });
}

const none = { ev: null, key: null, rel: null };
const devices: [string, InputCapabilities, InputKind[]][] = [
  [
    'a full USB keyboard (Logitech K120)',
    { ev: '120013', key: '1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe', rel: null },
    ['keyboard'],
  ],
  ['a USB mouse (BTN_LEFT, REL_X, REL_Y)', { ev: '17', key: '1f0000 0 0 0 0', rel: '903' }, ['mouse']],
  ['a touchpad (BTN_LEFT and absolute axes)', { ev: 'b', key: '6420 30000 0 0 0 0', rel: null }, ['mouse']],
  ['a pointer without buttons (REL_X, REL_Y)', { ev: '5', key: null, rel: '3' }, ['mouse']],
  [
    'one device that is keyboard and mouse in one (constructed)',
    { ev: '120017', key: '1f0000 0 0 0 fffffffffffffffe', rel: '903' },
    ['keyboard', 'mouse'],
  ],
  ['the ACPI power button (one key)', { ev: '3', key: '10000000000000 0', rel: null }, []],
  ['an HDMI jack of a GPU audio function (EV_SW only)', { ev: '21', key: null, rel: null }, []],
  ['an Xbox 360 pad (BTN_SOUTH, absolute sticks)', { ev: '20000b', key: '7cdb000000000000 0 0 0 0', rel: null }, []],
  ['a keyboard missing Esc is not a full keyboard', { ev: '120013', key: 'fffffffffffffffc', rel: null }, []],
  ['key bits without EV_KEY count for nothing', { ev: '1', key: 'fffffffffffffffe 1f0000 0 0 0 0', rel: null }, []],
  ['a wheel alone is not a pointer', { ev: '7', key: null, rel: '100' }, []],
  ['a malformed bitmap says nothing', { ev: '17', key: 'not-hex', rel: 'zz' }, []],
  ['no capabilities at all', none, []],
];

for (const [what, caps, kinds] of devices) {
  test(`inputKinds: ${what} -> ${kinds.length === 0 ? 'neither' : kinds.join(' and ')}`, (t) => {
    t.deepEqual(inputKinds(caps), kinds);
  });
}
