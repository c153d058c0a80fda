/**
 * The host-change keys of a VM table (on-busy, stop-units, busy-timeout,
 * single-gpu): values, defaults, the rules between keys, and typos.
 */
import test from 'ava';
import { InvalidConfig } from '../../lib/errors.js';
import { parseConfig } from '../../lib/config/index.js';

const F = '/etc/vfio-hookd/vfio-hookd.toml';
const vm = (body: string) => parseConfig(`[vm.win10]\ndevices = ["0000:0b:00.0"]\n${body}`, F).vms.get('win10')!;

test('the defaults: refuse, no units, 10 s, not single-GPU', (t) => {
  const s = vm('');
  t.deepEqual([s.onBusy, s.stopUnits, s.busyTimeoutMs, s.singleGpu], ['refuse', [], 10_000, false]);
});

test('each policy with its own keys', (t) => {
  t.deepEqual(vm('on-busy = "release"\nbusy-timeout = "30s"\n').busyTimeoutMs, 30_000);
  t.deepEqual(vm('on-busy = "stop-units"\nstop-units = ["nvidia-persistenced.service"]\n').stopUnits, ['nvidia-persistenced.service']);
  t.true(vm('single-gpu = true\n').singleGpu);
});

const refused: [string, string, string][] = [
  [
    'an unknown policy',
    'on-busy = "kill"\n',
    `${F}:3:11: vm.win10.on-busy: expected "refuse", "release" or "stop-units", got string 'kill'`,
  ],
  [
    'stop-units without its policy',
    'stop-units = ["a.service"]\n',
    `${F}:3:14: vm.win10.stop-units: stop-units is only used with on-busy = "stop-units" (on-busy is 'refuse'); set it, or remove stop-units`,
  ],
  [
    'the stop-units policy without units',
    'on-busy = "stop-units"\n',
    `${F}:3:11: vm.win10.on-busy: on-busy = "stop-units" needs the units to stop: stop-units = ["nvidia-persistenced.service"]`,
  ],
  [
    'a busy-timeout out of bounds',
    'on-busy = "release"\nbusy-timeout = "5m"\n',
    "vm.win10.busy-timeout: invalid busy timeout '5m': must be from 1s to 2m",
  ],
  ['single-gpu with a boot hold', 'single-gpu = true\nhold = "boot"\n', 'single-gpu = true hands the card over at each VM start'],
  ['a typo', 'on_busy = "release"\n', "unknown key 'on_busy'; did you mean 'on-busy'?"],
];
for (const [what, body, message] of refused) {
  test(`refused: ${what}`, (t) => {
    const error = t.throws(() => vm(body), { instanceOf: InvalidConfig });
    t.true(error.message.includes(message), error.message);
  });
}
