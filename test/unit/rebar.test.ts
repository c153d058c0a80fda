/**
 * Resizable BAR parsing (lib/pci/pci-device.ts): `resourceN_resize` bitmaps
 * as Documentation/ABI/testing/sysfs-bus-pci gives them (bit n = 2^n MiB),
 * a BAR's size from `resource`, and the `devices` notes that show them.
 */
import test from 'ava';

import { barSize, parseResizeBitmap } from '../../lib/pci/pci-device.js';

const MiB = 1024 * 1024;

test("parses the ABI document's example bitmap 00000000000001c0 as 64M, 128M and 256M", (t) => {
  t.deepEqual(parseResizeBitmap('00000000000001c0\n'), [64 * MiB, 128 * MiB, 256 * MiB]);
});

test('parses a bitmap with 0x, a full range and garbage', (t) => {
  t.deepEqual(parseResizeBitmap('0x3'), [MiB, 2 * MiB]);
  t.is(parseResizeBitmap('0000000000003f00').at(-1), 8192 * MiB);
  t.deepEqual(parseResizeBitmap('nope'), []);
});

test("reads a BAR's size from the resource file's line", (t) => {
  const resource = [
    '0x000000e000000000 0x000000e00fffffff 0x000000000014220c',
    '0x0000000000000000 0x0000000000000000 0x0000000000000000',
    '0x000000e010000000 0x000000e0101fffff 0x000000000014220c',
  ].join('\n');
  t.is(barSize(resource, 0), 256 * MiB);
  t.is(barSize(resource, 1), null, 'an unused BAR');
  t.is(barSize(resource, 2), 2 * MiB);
  t.is(barSize(resource, 5), null);
  t.is(barSize(null, 0), null);
});
