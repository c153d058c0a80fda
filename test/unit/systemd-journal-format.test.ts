/**
 * The pure parts of lib/systemd/journal.ts: field-name rule, native-protocol
 * encoding and the stderr line format, table-driven.
 */
import test from 'ava';

import { encodeEntry, formatStderr, isValidFieldName } from '../../lib/systemd/index.js';

const names: Array<[string, boolean]> = [
  ['MESSAGE', true],
  ['VFIO_DOMAIN', true],
  ['PCI_ADDRESS', true],
  ['IOMMU_GROUP2', true],
  ['A', true],
  ['A_', true],
  ['A'.repeat(64), true],
  ['A'.repeat(65), false],
  ['', false],
  ['_PID', false],
  ['__CURSOR', false],
  ['1ST', false],
  ['vfio_domain', false],
  ['Vfio_Domain', false],
  ['PCI-ADDRESS', false],
  ['PCI ADDRESS', false],
  ['PCI.ADDRESS', false],
  ['ÄDRESSE', false],
  ['KEY=', false],
  ['KEY\n', false],
];

for (const [name, valid] of names) {
  test(`field name ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}...(${name.length})` : name)} is ${valid ? 'valid' : 'invalid'}`, (t) => {
    t.is(isValidFieldName(name), valid);
  });
}

const encodings: Array<[string, Array<[string, string]>, Buffer]> = [
  ['no fields', [], Buffer.alloc(0)],
  ['a text field', [['MESSAGE', 'hello']], Buffer.from('MESSAGE=hello\n')],
  ['an empty value', [['NOTE', '']], Buffer.from('NOTE=\n')],
  ['a value with "=" stays text', [['NOTE', 'a=b']], Buffer.from('NOTE=a=b\n')],
  [
    'a value with a newline is binary',
    [['NOTE', 'a\nb']],
    Buffer.concat([Buffer.from('NOTE\n'), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('a\nb\n')]),
  ],
  [
    'a lone newline is binary',
    [['NOTE', '\n']],
    Buffer.concat([Buffer.from('NOTE\n'), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('\n\n')]),
  ],
  [
    'the length counts UTF-8 bytes',
    [['NOTE', 'ü\n']],
    Buffer.concat([Buffer.from('NOTE\n'), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('ü\n\n')]),
  ],
  [
    'fields keep their order',
    [
      ['B', '2'],
      ['A', '1'],
    ],
    Buffer.from('B=2\nA=1\n'),
  ],
];

for (const [what, fields, expected] of encodings) {
  test(`encodeEntry: ${what}`, (t) => {
    t.deepEqual(encodeEntry(fields), expected);
  });
}

test('encodeEntry: a 300-byte value has its length in little-endian order', (t) => {
  const value = `${'x'.repeat(299)}\n`;
  const encoded = encodeEntry([['NOTE', value]]);
  t.deepEqual([...encoded.subarray(5, 13)], [0x2c, 0x01, 0, 0, 0, 0, 0, 0]);
  t.is(encoded.length, 5 + 8 + 300 + 1);
});

const lines: Array<[string, Parameters<typeof formatStderr>, string]> = [
  ['plain', [6, 'Ready', [], true], '<6>Ready\n'],
  ['no prefix', [6, 'Ready', [], false], 'Ready\n'],
  [
    'fields after the message',
    [
      4,
      'Slow unbind',
      [
        ['PCI_ADDRESS', '0000:0b:00.0'],
        ['IOMMU_GROUP', '25'],
      ],
      true,
    ],
    '<4>Slow unbind [PCI_ADDRESS=0000:0b:00.0 IOMMU_GROUP=25]\n',
  ],
  [
    'query-only fields left out',
    [
      5,
      'Detached',
      [
        ['MESSAGE_ID', 'ce36'],
        ['CODE_FILE', 'x.ts'],
        ['CODE_LINE', '1'],
        ['CODE_FUNC', 'f'],
      ],
      true,
    ],
    '<5>Detached\n',
  ],
  [
    'a value with a space is quoted',
    [3, 'Failed', [['UNIT', 'looking glass.service']], true],
    "<3>Failed [UNIT='looking glass.service']\n",
  ],
  ['an empty value is quoted', [3, 'Failed', [['UNIT', '']], true], "<3>Failed [UNIT='']\n"],
  [
    'a value with "=" or brackets is quoted',
    [
      3,
      'Failed',
      [
        ['A', 'x=y'],
        ['B', '[z]'],
      ],
      true,
    ],
    "<3>Failed [A='x=y' B='[z]']\n",
  ],
  ['a value with a newline is quoted and escaped', [3, 'Failed', [['A', 'x\ny']], true], "<3>Failed [A='x\\x0ay']\n"],
  ['every line of a multi-line message is prefixed', [2, 'one\ntwo', [['A', 'b']], true], '<2>one\n<2>two [A=b]\n'],
];

for (const [what, args, expected] of lines) {
  test(`formatStderr: ${what}`, (t) => {
    t.is(formatStderr(...args), expected);
  });
}
