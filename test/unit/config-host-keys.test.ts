/**
 * The host-change keys of a VM table (on-busy, stop-units, busy-timeout,
 * single-gpu; host-cpus, hugepages, hugepage-size, reset-method and
 * looking-glass.kvmfr): values, defaults, the rules between keys, typos,
 * and that the domain's metadata cannot set any of them.
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

test('the tuning defaults: no CPU isolation, no hugepages, no reset methods, kvmfr auto', (t) => {
  const s = vm('[vm.win10.looking-glass]\nsize = "32M"\n');
  t.deepEqual([s.hostCpus, s.hugepages, s.resetMethods, s.lookingGlass?.kvmfr], [null, null, [], 'auto']);
});

test('each tuning key with its value, normalised', (t) => {
  t.is(vm('host-cpus = " 0-1,6-7 "\n').hostCpus, '0-1,6-7');
  t.deepEqual(vm('hugepages = "8G"\n').hugepages, { total: '8G', pageSize: '2M' });
  t.deepEqual(vm('hugepages = "8G"\nhugepage-size = "1G"\n').hugepages, { total: '8G', pageSize: '1G' });
  t.deepEqual(vm('reset-method = { "0b:00.0" = "flr bus" }\n').resetMethods, [{ address: '0000:0b:00.0', methods: ['flr', 'bus'] }]);
  t.deepEqual(vm('reset-method = { "0000:0b:00.0" = ["device_specific"] }\n').resetMethods, [
    { address: '0000:0b:00.0', methods: ['device_specific'] },
  ]);
  t.is(vm('[vm.win10.looking-glass]\nsize = "32M"\nkvmfr = "kvmfr1"\n').lookingGlass?.kvmfr, 'kvmfr1');
  t.is(vm('[vm.win10.looking-glass]\nsize = "32M"\nkvmfr = "off"\n').lookingGlass?.kvmfr, 'off');
});

const refusedTuning: [string, string, string][] = [
  [
    'a cpulist that is not one',
    'host-cpus = "0-3,x"\n',
    "vm.win10.host-cpus: invalid host-cpus '0-3,x': 'x' is not a CPU or a range such as '8-11'",
  ],
  ['a backwards range', 'host-cpus = "3-1"\n', "invalid host-cpus '3-1': range '3-1' runs backwards"],
  ['host-cpus as a number', 'host-cpus = 3\n', 'vm.win10.host-cpus: expected a string, got integer 3'],
  ['a size that is none', 'hugepages = "lots"\n', "vm.win10.hugepages: invalid size 'lots'"],
  ['not a whole number of pages', 'hugepages = "3M"\n', "vm.win10.hugepages: invalid hugepages '3M': not a whole number of 2M pages"],
  [
    'a page size not a power of two',
    'hugepages = "6M"\nhugepage-size = "3M"\n',
    "invalid hugepage-size '3M': a page size is a power of two",
  ],
  ['a page size without hugepages', 'hugepage-size = "1G"\n', 'hugepage-size is the size of the pages of hugepages; set hugepages'],
  [
    'a reset method Linux does not know',
    'reset-method = { "0b:00.0" = "warm" }\n',
    "'0b:00.0': invalid reset-method 'warm': 'warm' is not a reset method Linux knows",
  ],
  ['a method named twice', 'reset-method = { "0b:00.0" = "flr flr" }\n', "'flr' is named twice"],
  ['no methods', 'reset-method = { "0b:00.0" = "" }\n', 'expected methods in the order to try'],
  ['not an address', 'reset-method = { "gpu" = "flr" }\n', "'gpu': invalid PCI address"],
  [
    'a device the VM does not hold',
    'reset-method = { "0c:00.0" = "flr" }\n',
    "reset-method names '0000:0c:00.0', which is not in this VM's devices",
  ],
  ['one device twice', 'reset-method = { "0b:00.0" = "flr", "0000:0b:00.0" = "bus" }\n', "reset-method names '0000:0b:00.0' twice"],
  ['reset-method as a string', 'reset-method = "flr"\n', 'expected a table of PCI address = "methods"'],
  [
    'a kvmfr that is no device',
    '[vm.win10.looking-glass]\nsize = "32M"\nkvmfr = "yes"\n',
    'invalid kvmfr \'yes\': expected "auto", "off" or a device',
  ],
  ['a typo in a tuning key', 'host_cpus = "0-3"\n', "unknown key 'host_cpus'; did you mean 'host-cpus'?"],
];
for (const [what, body, message] of refusedTuning) {
  test(`refused: ${what}`, (t) => {
    const error = t.throws(() => vm(body), { instanceOf: InvalidConfig });
    t.true(error.message.includes(message), error.message);
  });
}
