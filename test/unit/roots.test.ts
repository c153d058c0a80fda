/**
 * under(): every path the engine reads or writes is built by it, so its
 * quick path for plain names must give what path.resolve gives, and every
 * escape must still be refused.
 */
import test from 'ava';
import path from 'node:path';
import { under } from '../../lib/roots.js';
import { UnsafePath } from '../../lib/errors.js';

const SAME: readonly (readonly [string, ...string[]])[] = [
  ['/sys', 'bus', 'pci', 'devices', '0000:0b:00.0', 'driver_override'],
  ['/sys'],
  ['/', 'proc', '1', 'fd'],
  ['/tmp/sim-x/sys', 'class', 'block', 'dm-0', 'dm', 'name'],
  ['/sys/', 'bus'],
  ['/sys//x/.', 'bus'],
  ['/sys', '', 'bus'],
  ['/sys', 'bus/pci', 'devices'],
  ['/sys', 'bus', '.', 'pci'],
  ['/sys', 'bus', '..', 'kernel'],
  ['/sys', '..sys', '...'],
  ['relative/root', 'x'],
];

for (const [root, ...parts] of SAME) {
  test(`under(${JSON.stringify([root, ...parts]).slice(1, -1)}) is what path.resolve gives`, (t) => {
    t.is(under(root, ...parts), path.resolve(root, ...parts));
  });
}

const ESCAPES: readonly (readonly [string, ...string[]])[] = [
  ['/sys', '..'],
  ['/sys', 'bus', '..', '..', 'etc'],
  ['/sys', '../etc/passwd'],
  ['/sys', '/etc'],
  ['/sys/', '..', 'proc'],
];

for (const [root, ...parts] of ESCAPES) {
  test(`under(${JSON.stringify([root, ...parts]).slice(1, -1)}) is refused`, (t) => {
    t.throws(() => under(root, ...parts), { instanceOf: UnsafePath, message: /is outside its root .*, refusing$/ });
  });
}
