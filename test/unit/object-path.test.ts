import test from 'ava';
import { decodeLabel, devicePath, encodeLabel, machinePath } from '../../lib/bus/object-path.js';

// Expected values as systemd's sd_bus_path_encode() produces them.
const cases: [string, string][] = [
  ['win10', 'win10'],
  ['', '_'],
  ['0000:0b:00.0', '_30000_3a0b_3a00_2e0'],
  ['my vm', 'my_20vm'],
  ['win-10_gaming', 'win_2d10_5fgaming'],
  ['9front', '_39front'],
  ['ü', '_c3_bc'],
  ['a/b', 'a_2fb'],
];

for (const [label, encoded] of cases) {
  test(`encodes ${JSON.stringify(label)} as ${encoded} and back`, (t) => {
    t.is(encodeLabel(label), encoded);
    t.is(decodeLabel(encoded), label);
  });
}

test('rejects malformed encodings', (t) => {
  t.is(decodeLabel('a-b'), null);
  t.is(decodeLabel('_zz'), null);
  t.is(decodeLabel('_4'), null);
});

test('builds machine and device paths under the root object', (t) => {
  t.is(machinePath('win10'), '/org/vfiohookd1/machine/win10');
  t.is(devicePath('0000:0b:00.0'), '/org/vfiohookd1/device/_30000_3a0b_3a00_2e0');
});
