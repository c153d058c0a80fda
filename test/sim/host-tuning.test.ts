/**
 * The host tuning settings as the lifecycle runs them (host-cpus,
 * hugepages, reset-method, Looking Glass's kvmfr): planned in the order of
 * lib/host/host-policy.ts, recorded before each is made, undone in reverse
 * at release, after a failure halfway and at recovery, from the record
 * alone. On the simulated reference host with the simulated system manager
 * (AllowedCPUs kept and read back) and hugetlb pool (a short reservation as
 * the kernel gives it). The real components: AllowedCPUs against systemd in
 * the system tier (test/system/guest/cpus.sh), hugepages and reset_method
 * in the kernel tier (hugepages.sh, reset.sh).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { HostDependency, InvalidConfig, UnitFailed } from '../../lib/errors.js';
import { cpusFromDbus } from '../../lib/host/cpu-isolation.js';
import type { HostPolicy } from '../../lib/host/host-policy.js';
import { DeviceLedger } from '../../lib/lifecycle/device-ledger.js';
import { parseHookEvent } from '../../lib/lifecycle/hook-event.js';
import { Lifecycle, type ManagedVm } from '../../lib/lifecycle/lifecycle.js';
import { SimSystemd } from '../../lib/sim/index.js';
import { SimHugepages } from '../../lib/sim/sim-hugepages.js';
import { StateFile } from '../../lib/state/state-file.js';
import { driversOf, fixtureCopy, makeSim, type TestSim } from '../helpers/sim.js';

const GPU = ['0000:0b:00.0', '0000:0b:00.1'];
const HOST_DRIVERS = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' };
const ON_VFIO = { '0000:0b:00.0': 'vfio-pci', '0000:0b:00.1': 'vfio-pci' };
const SLICES = ['system.slice', 'user.slice', 'init.scope'];
const MiB = 1024 * 1024;
const IS_ROOT = process.getuid?.() === 0;

const policy = (p: Partial<HostPolicy> = {}): HostPolicy => ({
  onBusy: 'refuse',
  stopUnits: [],
  busyTimeoutMs: 10_000,
  singleGpu: false,
  ...p,
});

function vm(hostPolicy: HostPolicy, more: Partial<ManagedVm> = {}): ManagedVm {
  return {
    name: 'win10',
    devices: ['0000:0b:00.0'],
    shmFiles: [],
    force: false,
    removeShmOnStop: false,
    user: null,
    units: [],
    hostPolicy,
    ...more,
  };
}

const ev = (op: string, sub: string) => parseHookEvent('win10', op, sub, '-');

interface Host {
  readonly s: TestSim;
  readonly systemd: SimSystemd;
  readonly pool: SimHugepages;
  readonly modprobeDir: string;
  lifecycle(): Lifecycle;
  /** What the tests compare before and after: drivers, AllowedCPUs of each slice, the pool, the GPU's reset_method. */
  view(): Promise<{ drivers: Record<string, string | null>; cpus: string[]; nr: number; resetMethod: string }>;
}

/** The reference host, 8 CPUs online, an empty 2M pool that can give `capacity` pages, the guest GPU offering `flr bus`. */
async function host(t: ExecutionContext, options: { capacity?: number } = {}): Promise<Host> {
  const fixture = fixtureCopy('reference-host');
  const gpu = fixture.devices.find((d) => d.address === '0000:0b:00.0')!;
  (gpu as { resetMethod?: string[] }).resetMethod = ['flr', 'bus'];
  const s = await makeSim(t, fixture);
  const { roots } = s.kernel;
  await fs.mkdir(path.join(roots.sysfs, 'devices', 'system', 'cpu'), { recursive: true });
  await fs.writeFile(path.join(roots.sysfs, 'devices', 'system', 'cpu', 'online'), '0-7\n');
  const pool = await SimHugepages.create(roots, options.capacity === undefined ? {} : { capacity: options.capacity });
  const systemd = new SimSystemd();
  const modprobeDir = path.join(s.dir, 'etc', 'modprobe.d');
  await fs.mkdir(modprobeDir, { recursive: true });
  const state = new StateFile(roots.run);
  return {
    s,
    systemd,
    pool,
    modprobeDir,
    lifecycle: () =>
      new Lifecycle({
        ledger: new DeviceLedger({ engine: s.engine, state }),
        roots,
        trustedShmOwners: () => [0],
        host: { kernel: s.kernel, systemd, tunables: pool, modprobeDirs: [modprobeDir] },
      }),
    async view() {
      const cpus: string[] = [];
      for (const unit of SLICES) cpus.push(cpusFromDbus(await systemd.unitProperty(unit, '', 'AllowedCPUs')).join(','));
      const resetMethod = (
        await fs.readFile(path.join(roots.sysfs, 'bus', 'pci', 'devices', '0000:0b:00.0', 'reset_method'), 'utf8')
      ).trim();
      return { drivers: await driversOf(s, GPU), cpus, nr: await pool.nr(), resetMethod };
    },
  };
}

const AS_FOUND = { drivers: HOST_DRIVERS, cpus: ['', '', ''], nr: 0, resetMethod: 'flr bus' };
const TUNED = policy({
  hostCpus: '0-1',
  hugepages: { total: '64M', pageSize: '2M' },
  resetMethods: [{ address: '0000:0b:00.0', methods: ['bus'] }],
});

test('prepare reserves hugepages, sets the reset method, detaches, then isolates the host; release undoes all in reverse', async (t) => {
  const h = await host(t);
  const life = h.lifecycle();
  const prepared = await life.handle(ev('prepare', 'begin'), vm(TUNED));
  t.deepEqual(prepared.hostChanges, [
    'reserve 32 2 MiB pages (nr_hugepages 0 -> 32)',
    "set reset_method of 0000:0b:00.0 to 'bus' (was 'flr bus')",
    'restrict system.slice, user.slice, init.scope to CPUs 0-1',
  ]);
  t.deepEqual(await h.view(), { drivers: ON_VFIO, cpus: ['0,1', '0,1', '0,1'], nr: 32, resetMethod: 'bus' });
  const record = (await life.ledger.read()).machines.get('win10')!;
  t.deepEqual(
    record.hostChanges?.map((c) => [c.phase, c.record.kind]),
    [
      ['before-detach', 'hugepages'],
      ['before-detach', 'reset-method'],
      ['after-detach', 'cpu-isolation'],
    ],
  );

  const released = await life.handle(ev('release', 'end'), null);
  t.deepEqual(released.warnings, []);
  t.is(released.hostChanges?.length, 3);
  t.deepEqual(await h.view(), AS_FOUND);
  t.is((await life.ledger.read()).machines.size, 0);
  // CPUs first (after-detach undone before the reattach), and a second release finds nothing.
  t.deepEqual(h.systemd.calls, SLICES.map((u) => `set ${u} AllowedCPUs`).concat(SLICES.map((u) => `set ${u} AllowedCPUs`)));
  t.regex((await life.handle(ev('release', 'end'), null)).message, /holds nothing/);
});

test('too few hugepages: refused with the numbers before the GPU is touched, the pool put back', async (t) => {
  const h = await host(t, { capacity: 10 });
  const life = h.lifecycle();
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(TUNED)), { instanceOf: HostDependency });
  t.regex(
    error.message,
    /^Cannot reserve hugepages: asked for 32 2 MiB pages, the kernel gave 10 \(nr_hugepages 0 -> 10, .*put back to 0\)/,
  );
  t.deepEqual(await h.view(), AS_FOUND);
  t.deepEqual(h.systemd.calls, [], 'the host was not isolated');
  t.is((await life.ledger.read()).machines.size, 0, 'no record is left');
});

test('CPU isolation refused halfway (user.slice): system.slice is given its CPUs back, the GPU reattached, all undone', async (t) => {
  const h = await host(t);
  h.systemd.failPropertiesOf('user.slice');
  const life = h.lifecycle();
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(TUNED)), { instanceOf: UnitFailed });
  t.regex(error.message, /Cannot set AllowedCPUs of 'user.slice'/);
  t.deepEqual(await h.view(), AS_FOUND);
  t.is((await life.ledger.read()).machines.size, 0);
});

test('a reset method the device does not offer is refused before the detach, and the hugepages go back', async (t) => {
  const h = await host(t);
  const life = h.lifecycle();
  const error = await t.throwsAsync(
    life.handle(ev('prepare', 'begin'), vm({ ...TUNED, resetMethods: [{ address: '0000:0b:00.0', methods: ['device_specific'] }] })),
    { instanceOf: InvalidConfig },
  );
  t.regex(error.message, /the kernel offers 'flr bus' for it, not 'device_specific'/);
  t.deepEqual(await h.view(), AS_FOUND);
});

test('host-cpus listing CPUs the host does not have, or all of them, is refused and nothing stays changed', async (t) => {
  const h = await host(t);
  const life = h.lifecycle();
  for (const [hostCpus, message] of [
    ['0-9', /CPU 8-9 is not online \(the host has 0-7\)/],
    ['0-7', /that is every CPU the host has/],
  ] as const) {
    const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm({ ...TUNED, hostCpus })), { instanceOf: InvalidConfig });
    t.regex(error.message, message);
    t.deepEqual(await h.view(), AS_FOUND);
  }
});

test('host-cpus without a connection to systemd is refused before anything changes', async (t) => {
  const h = await host(t);
  const ledger = new DeviceLedger({ engine: h.s.engine, state: new StateFile(h.s.kernel.roots.run) });
  const life = new Lifecycle({
    ledger,
    roots: h.s.kernel.roots,
    trustedShmOwners: () => [0],
    host: { kernel: h.s.kernel, systemd: null, tunables: h.pool },
  });
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(TUNED)), { instanceOf: UnitFailed });
  t.regex(error.message, /host-cpus sets the host's units' AllowedCPUs, and vfio-hookd has no connection to systemd's manager, refusing$/);
  t.deepEqual(await h.view(), AS_FOUND);
});

test('recovery after a crash mid-prepare undoes the recorded tuning from the record, whatever the configuration says now', async (t) => {
  const h = await host(t);
  await h.lifecycle().handle(ev('prepare', 'begin'), vm(TUNED));
  // The daemon died before its reply: the record still says 'preparing' (as the write-ahead record does mid-prepare).
  const state = new StateFile(h.s.kernel.roots.run);
  const ledger = new DeviceLedger({ engine: h.s.engine, state });
  await ledger.updateMachines((m) => m.set('win10', { ...m.get('win10')!, stage: 'preparing' }));
  const notes = await h.lifecycle().recover();
  t.true(
    notes.some((n) => /VM 'win10' was being prepared when vfio-hookd stopped: .*host changes undone: 3$/.test(n)),
    notes.join('\n'),
  );
  t.deepEqual(await h.view(), AS_FOUND);
});

test('a damaged record is not guessed at: its undo is reported, the others still run', async (t) => {
  const h = await host(t);
  const life = h.lifecycle();
  await life.handle(ev('prepare', 'begin'), vm(TUNED));
  await life.ledger.updateMachines((m) => {
    const r = m.get('win10')!;
    m.set('win10', {
      ...r,
      hostChanges: r.hostChanges!.map((c) => (c.record.kind === 'hugepages' ? { ...c, record: { ...c.record, pages: 'lots' } } : c)),
    });
  });
  const released = await life.handle(ev('release', 'end'), null);
  t.deepEqual(released.warnings, [
    "Cannot undo 'reserve 32 2 MiB pages (nr_hugepages 0 -> 32)': The record of this change is not valid, so it cannot be undone; " +
      'put back nr_hugepages: write the count you want to /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages, ignoring',
  ]);
  t.deepEqual(await h.view(), { ...AS_FOUND, nr: 32 });
});

// --- kvmfr: a real character node (mknod), so root only ---

const asRoot = IS_ROOT ? test : test.skip;
const WHY = IS_ROOT ? '' : ' (skipped: needs root for mknod and chown)';
const LG = { name: 'looking-glass', sizeBytes: 32 * MiB, uid: 1000, gid: 1001, mode: 0o660 };

async function withKvmfr(h: Host): Promise<() => Promise<string>> {
  const { roots } = h.s.kernel;
  await fs.mkdir(path.join(roots.sysfs, 'class', 'kvmfr', 'kvmfr0'), { recursive: true });
  await fs.writeFile(path.join(roots.sysfs, 'class', 'kvmfr', 'kvmfr0', 'dev'), '1:3\n');
  await fs.mkdir(roots.dev, { recursive: true });
  const node = path.join(roots.dev, 'kvmfr0');
  execFileSync('mknod', ['-m', '0600', node, 'c', '1', '3']);
  await fs.writeFile(path.join(h.modprobeDir, 'kvmfr.conf'), 'options kvmfr static_size_mb=32\n');
  return async () => {
    const st = await fs.lstat(node);
    return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
  };
}

const shmPath = (h: Host) => path.join(h.s.kernel.roots.shm, 'looking-glass');
const exists = (file: string) =>
  fs.lstat(file).then(
    () => true,
    () => false,
  );

asRoot(`kvmfr auto: /dev/kvmfr0 stands in for the shm file, set for the VM's user and put back at release${WHY}`, async (t) => {
  const h = await host(t);
  const node = await withKvmfr(h);
  const life = h.lifecycle();
  const lg = vm(policy({ kvmfr: { device: 'auto', shmName: 'looking-glass' } }), { shmFiles: [LG] });
  const prepared = await life.handle(ev('prepare', 'begin'), lg);
  t.regex(prepared.message, /0 shm file\(s\) ready, Looking Glass on kvmfr0$/);
  t.is(await node(), '1000:1001 0660');
  t.false(await exists(shmPath(h)), 'no shm file was made');
  await life.handle(ev('release', 'end'), null);
  t.is(await node(), '0:0 0600');
});

asRoot(`kvmfr auto: a domain that maps the shm file keeps the file, and the node is not touched${WHY}`, async (t) => {
  const h = await host(t);
  const node = await withKvmfr(h);
  const life = h.lifecycle();
  const lg = vm(policy({ kvmfr: { device: 'auto', shmName: 'looking-glass' } }), { shmFiles: [LG], mappedShm: ['looking-glass'] });
  const prepared = await life.handle(ev('prepare', 'begin'), lg);
  t.regex(prepared.message, /1 shm file\(s\) ready$/);
  t.true(await exists(shmPath(h)));
  t.is(await node(), '0:0 0600');
});

asRoot(`kvmfr: a module loaded with another size refuses the start, and nothing changed${WHY}`, async (t) => {
  const h = await host(t);
  const node = await withKvmfr(h);
  await fs.writeFile(path.join(h.modprobeDir, 'kvmfr.conf'), 'options kvmfr static_size_mb=64\n');
  const life = h.lifecycle();
  const lg = vm({ ...TUNED, kvmfr: { device: 'auto', shmName: 'looking-glass' } }, { shmFiles: [LG] });
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), lg), { instanceOf: InvalidConfig });
  t.regex(error.message, /kvmfr was loaded with 64M for it .* the configured Looking Glass size is 32M/);
  t.is(await node(), '0:0 0600');
  t.deepEqual(await h.view(), AS_FOUND);
  t.false(await exists(shmPath(h)));
});

test('kvmfr = "kvmfr1" that does not exist is refused; "off" and a missing kvmfr0 make the shm file as before', async (t) => {
  const h = await host(t);
  const life = h.lifecycle();
  const named = vm(policy({ kvmfr: { device: 'kvmfr1', shmName: 'looking-glass' } }), { shmFiles: [{ ...LG, uid: 0, gid: 0 }] });
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), named));
  t.regex(error.message, /the kvmfr module has no 'kvmfr1'/);
  t.false(await exists(shmPath(h)));
  t.deepEqual(await h.view(), AS_FOUND);
  for (const device of ['off', 'auto']) {
    const prepared = await life.handle(
      ev('prepare', 'begin'),
      vm(policy({ kvmfr: { device, shmName: 'looking-glass' } }), { shmFiles: [{ ...LG, uid: 0, gid: 0 }] }),
    );
    t.regex(prepared.message, /1 shm file\(s\) ready$/, device);
    await life.handle(ev('release', 'end'), null);
  }
});

test('two VMs with hugepages released in any order each give back their own pages, down to the host own', async (t) => {
  const h = await host(t);
  // The host's own: 4 pages reserved by hand before either VM.
  await h.pool.write(path.join(h.pool.poolDir, 'nr_hugepages'), '4\n');
  const life = h.lifecycle();
  const pages = (name: string, total: string): ManagedVm => ({
    ...vm(policy({ hugepages: { total, pageSize: '2M' } })),
    name,
    devices: [],
  });
  const run = (name: string, op: string, sub: string, v: ManagedVm | null) => life.handle(parseHookEvent(name, op, sub, '-'), v);
  await run('a', 'prepare', 'begin', pages('a', '20M'));
  await run('b', 'prepare', 'begin', pages('b', '40M'));
  t.is(await h.pool.nr(), 4 + 10 + 20);
  await run('a', 'release', 'end', null);
  t.is(await h.pool.nr(), 4 + 20, "a's 10 pages went, b's stayed");
  await run('b', 'release', 'end', null);
  t.is(await h.pool.nr(), 4, "b's 20 went too; the host's own 4 stay");
});
