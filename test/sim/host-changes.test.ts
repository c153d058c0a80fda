/**
 * Host changes around the detach (lib/host): the single-GPU hand-over and
 * the busy-card policies on the simulated single-GPU host, with the
 * simulated system manager. Every failure path is asserted on the state
 * afterwards: units, consoles, frame buffer, drivers, uevents, record.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { addSimProcess, SIM_UEVENT_LOG, SimSystemd, startSimCompositor } from '../../lib/sim/index.js';
import { Lifecycle, type ManagedVm } from '../../lib/lifecycle/lifecycle.js';
import { parseHookEvent } from '../../lib/lifecycle/hook-event.js';
import { DeviceBusy, HostDependency, UnitFailed } from '../../lib/errors.js';
import { DeviceLedger } from '../../lib/lifecycle/device-ledger.js';
import { StateFile } from '../../lib/state/state-file.js';
import type { HostPolicy } from '../../lib/host/host-policy.js';
import { driversOf, fixtureCopy, makeSim, type TestSim } from '../helpers/sim.js';

const GPU = ['0000:01:00.0', '0000:01:00.1'];
const HOST_DRIVERS = { '0000:01:00.0': 'amdgpu', '0000:01:00.1': 'snd_hda_intel' };
const ON_VFIO = { '0000:01:00.0': 'vfio-pci', '0000:01:00.1': 'vfio-pci' };
const DM = 'display-manager.service';

const policy = (p: Partial<HostPolicy> = {}): HostPolicy => ({
  onBusy: 'refuse',
  stopUnits: [],
  busyTimeoutMs: 10_000,
  singleGpu: false,
  ...p,
});

function vm(hostPolicy: HostPolicy): ManagedVm {
  return {
    name: 'win11',
    devices: ['0000:01:00.0'],
    shmFiles: [],
    force: false,
    removeShmOnStop: false,
    user: null,
    units: [],
    hostPolicy,
  };
}

const ev = (op: string, sub: string) => parseHookEvent('win11', op, sub, '-');

/** The single-GPU host with an EFI frame buffer still bound (simpledrm/efifb before amdgpu took over), or without a console. */
async function sim(t: Parameters<typeof makeSim>[0], options: { console?: boolean } = {}): Promise<TestSim> {
  const fixture = fixtureCopy('single-gpu-host');
  fixture.framebuffers = [{ device: 'efi-framebuffer.0', driver: 'efi-framebuffer', bound: true }];
  if (options.console === false) fixture.consoles = [{ name: 'vtcon1', description: '(M) frame buffer device', bound: false }];
  fixture.consoles = [{ name: 'vtcon0', description: '(S) dummy device', bound: true }, ...(fixture.consoles ?? [])];
  return makeSim(t, fixture);
}

function lifecycle(s: TestSim, systemd: SimSystemd | null): Lifecycle {
  const ledger = new DeviceLedger({ engine: s.engine, state: new StateFile(s.kernel.roots.run) });
  return new Lifecycle({ ledger, roots: s.kernel.roots, trustedShmOwners: () => [0], host: { kernel: s.kernel, systemd } });
}

async function hostView(s: TestSim) {
  const read = (rel: string) =>
    fs.readFile(path.join(s.dir, rel), 'utf8').then(
      (x) => x.trim(),
      () => null,
    );
  return {
    vtcon1: await read('sys/class/vtconsole/vtcon1/bind'),
    efifb: await fs.readlink(path.join(s.dir, 'sys/bus/platform/devices/efi-framebuffer.0/driver')).then(
      (l) => path.basename(l),
      () => null,
    ),
    drivers: await driversOf(s, GPU),
  };
}

const uevents = (s: TestSim) =>
  fs.readFile(path.join(s.dir, SIM_UEVENT_LOG), 'utf8').then(
    (x) => x.split('\n').filter(Boolean),
    () => [],
  );

test('single-gpu: prepare stops the display manager, unbinds console and frame buffer, detaches; release gives all back', async (t) => {
  const s = await sim(t);
  const systemd = new SimSystemd({ [DM]: 'active' });
  const life = lifecycle(s, systemd);
  const prepared = await life.handle(ev('prepare', 'begin'), vm(policy({ singleGpu: true })));
  t.deepEqual(prepared.hostChanges, [
    `stopping ${DM}`,
    'unbinding the console vtcon1 from the frame buffer',
    'unbinding the frame buffer efi-framebuffer.0 from efi-framebuffer',
  ]);
  t.deepEqual(await hostView(s), { vtcon1: '0', efifb: null, drivers: ON_VFIO });
  t.is(systemd.state(DM), 'inactive');
  const record = (await life.ledger.read()).machines.get('win11');
  t.deepEqual(
    record?.hostChanges?.map((c) => c.record),
    [
      { kind: 'stop-units', why: 'single-gpu', units: [DM] },
      { kind: 'vtconsole-unbind', consoles: ['vtcon1'] },
      { kind: 'framebuffer-unbind', devices: [{ driver: 'efi-framebuffer', device: 'efi-framebuffer.0' }] },
    ],
  );

  const released = await life.handle(ev('release', 'end'), null);
  t.deepEqual(released.warnings, []);
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.is(systemd.state(DM), 'active');
  t.deepEqual(systemd.calls, [`stop ${DM}`, `start ${DM}`]);
  t.is((await life.ledger.read()).machines.size, 0);
});

test('single-gpu: a display manager that was not running is not started at release', async (t) => {
  const s = await sim(t);
  const systemd = new SimSystemd({ [DM]: 'inactive' });
  const life = lifecycle(s, systemd);
  await life.handle(ev('prepare', 'begin'), vm(policy({ singleGpu: true })));
  await life.handle(ev('release', 'end'), null);
  t.deepEqual(systemd.calls, []);
  t.is(systemd.state(DM), 'inactive');
});

test('without single-gpu the boot VGA with its console is refused, naming single-gpu = true, and nothing changes', async (t) => {
  const s = await sim(t);
  const systemd = new SimSystemd({ [DM]: 'active' });
  const life = lifecycle(s, systemd);
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy())), { instanceOf: HostDependency });
  t.regex(error.message, /the console 'vtcon1' \(\(M\) frame buffer device\) is drawn on the boot VGA/);
  t.regex(error.message, /set single-gpu = true in the VM's table/);
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.deepEqual(systemd.calls, []);
});

test('single-gpu: a detach refused for a holder undoes every change in reverse: the desktop comes back', async (t) => {
  const s = await sim(t);
  // Something outside the display manager (a leftover Xorg) keeps the card open: the detach refuses.
  await addSimProcess(s.kernel, { pid: 4242, comm: 'Xorg', fds: ['/dev/dri/card0'] });
  const systemd = new SimSystemd({ [DM]: 'active' });
  const life = lifecycle(s, systemd);
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy({ singleGpu: true }))), { instanceOf: DeviceBusy });
  t.regex(error.message, /'Xorg' \(pid 4242\)/);
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.deepEqual(systemd.calls, [`stop ${DM}`, `start ${DM}`]);
  t.is(systemd.state(DM), 'active');
  t.is((await life.ledger.read()).machines.size, 0, 'no record is left');
});

test('single-gpu: a display manager that fails to stop refuses the start and changes nothing', async (t) => {
  const s = await sim(t);
  const systemd = new SimSystemd({ [DM]: 'active' });
  systemd.failJobsOf(DM);
  const life = lifecycle(s, systemd);
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy({ singleGpu: true }))), { instanceOf: UnitFailed });
  t.is(error.message, `Cannot stop '${DM}': its job ended 'failed'; see 'journalctl -u ${DM}', refusing`);
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.is((await life.ledger.read()).machines.size, 0);
});

test('single-gpu without a connection to systemd is refused before anything changes', async (t) => {
  const s = await sim(t);
  const life = lifecycle(s, null);
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy({ singleGpu: true }))));
  t.regex(
    error.message,
    /single-gpu = true stops display-manager.service, and vfio-hookd has no connection to systemd's manager, refusing/,
  );
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.is((await life.ledger.read()).machines.size, 0);
});

test('on-busy release: a compositor that follows the remove uevent lets go, and the card gets an add at release', async (t) => {
  const s = await sim(t, { console: false });
  const compositor = await startSimCompositor({ roots: s.kernel.roots, dir: s.dir }, { pid: 777, comm: 'kwin_wayland', node: 'card0' });
  t.teardown(() => compositor.close());
  const life = lifecycle(s, null);
  const prepared = await life.handle(ev('prepare', 'begin'), vm(policy({ onBusy: 'release' })));
  await compositor.released;
  t.deepEqual(prepared.hostChanges, ['asking the graphics stack to release /dev/dri/card0 (a DRM remove uevent)']);
  t.deepEqual(await driversOf(s, GPU), ON_VFIO);
  t.deepEqual(await uevents(s), ['remove card0']);
  await life.handle(ev('release', 'end'), null);
  t.deepEqual(await driversOf(s, GPU), HOST_DRIVERS);
  t.deepEqual(await uevents(s), ['remove card0', 'add card0']);
});

test('on-busy release: a holder that does not let go is named, the card gets its add back, nothing changed', async (t) => {
  const s = await sim(t, { console: false });
  await addSimProcess(s.kernel, { pid: 4242, comm: 'gnome-shell', fds: ['/dev/dri/card0'] });
  const life = lifecycle(s, null);
  // A short bound so the test does not wait long; what is asserted is the state after, never the time taken.
  const error = await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy({ onBusy: 'release', busyTimeoutMs: 300 }))), {
    instanceOf: DeviceBusy,
  });
  t.is(
    error.message,
    "Cannot detach '0000:01:00.0': still held by 'gnome-shell' (pid 4242) through '/dev/dri/card0' 0.3 s after a remove uevent " +
      'asked the graphics stack to let go; close it, or stop its service with on-busy = "stop-units", refusing',
  );
  t.deepEqual(await driversOf(s, GPU), HOST_DRIVERS);
  t.deepEqual(await uevents(s), ['remove card0', 'add card0']);
  t.is((await life.ledger.read()).machines.size, 0);
});

test('on-busy stop-units: only the active units are stopped, and exactly those start again after the VM', async (t) => {
  const s = await sim(t, { console: false });
  const systemd = new SimSystemd({ 'nvidia-persistenced.service': 'active', 'render-daemon.service': 'inactive' });
  const life = lifecycle(s, systemd);
  const units = ['nvidia-persistenced.service', 'render-daemon.service'];
  await life.handle(ev('prepare', 'begin'), vm(policy({ onBusy: 'stop-units', stopUnits: units })));
  t.deepEqual(await driversOf(s, GPU), ON_VFIO);
  t.deepEqual((await life.ledger.read()).machines.get('win11')?.hostChanges?.[0]?.record, {
    kind: 'stop-units',
    why: 'on-busy',
    units: ['nvidia-persistenced.service'],
  });
  await life.handle(ev('release', 'end'), null);
  t.deepEqual(systemd.calls, ['stop nvidia-persistenced.service', 'start nvidia-persistenced.service']);
  t.is(systemd.state('render-daemon.service'), 'inactive');
});

test('on-busy stop-units: a unit that fails to stop starts the ones already stopped again', async (t) => {
  const s = await sim(t, { console: false });
  const systemd = new SimSystemd({ 'a.service': 'active', 'b.service': 'active' });
  systemd.failJobsOf('b.service');
  const life = lifecycle(s, systemd);
  await t.throwsAsync(life.handle(ev('prepare', 'begin'), vm(policy({ onBusy: 'stop-units', stopUnits: ['a.service', 'b.service'] }))), {
    instanceOf: UnitFailed,
  });
  t.deepEqual(systemd.calls, ['stop a.service', 'stop b.service', 'start b.service', 'start a.service']);
  t.is(systemd.state('a.service'), 'active');
  t.deepEqual(await driversOf(s, GPU), HOST_DRIVERS);
});

test('recovery undoes the host changes of a prepare that never finished, from the record alone', async (t) => {
  const s = await sim(t);
  const systemd = new SimSystemd({ [DM]: 'active' });
  const state = new StateFile(s.kernel.roots.run);
  // What a daemon killed after unbinding the console left: the record, written ahead, and the console unbound.
  await fs.writeFile(path.join(s.dir, 'sys/class/vtconsole/vtcon1/bind'), '0\n');
  await systemd.stopUnit(DM);
  await state.save({
    claims: new Map(),
    pending: null,
    machines: new Map([
      [
        'win11',
        {
          stage: 'preparing',
          devices: ['0000:01:00.0'],
          user: null,
          units: [],
          removeShmOnStop: false,
          shm: [],
          since: new Date(0).toISOString(),
          hostChanges: [
            { phase: 'before-detach', describe: `stopping ${DM}`, record: { kind: 'stop-units', why: 'single-gpu', units: [DM] } },
            {
              phase: 'before-detach',
              describe: 'unbinding the console vtcon1',
              record: { kind: 'vtconsole-unbind', consoles: ['vtcon1'] },
            },
          ],
        },
      ],
    ]),
  });
  const life = lifecycle(s, systemd);
  const notes = await life.recover();
  t.true(notes.some((n) => n.startsWith("VM 'win11' was being prepared when vfio-hookd stopped")));
  t.deepEqual(await hostView(s), { vtcon1: '1', efifb: 'efi-framebuffer', drivers: HOST_DRIVERS });
  t.is(systemd.state(DM), 'active');
  t.is((await life.ledger.read()).machines.size, 0);
});

test('a damaged host-change entry makes the state file damaged, as any other bad value', async (t) => {
  const s = await sim(t);
  const state = new StateFile(s.kernel.roots.run);
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(
    state.path,
    JSON.stringify({
      version: 2,
      claims: {},
      machines: {
        win11: {
          stage: 'preparing',
          devices: [],
          user: null,
          units: [],
          removeShmOnStop: false,
          shm: [],
          since: 'x',
          hostChanges: [{ phase: 'before-detach', describe: 'x', record: { kind: '' } }],
        },
      },
      pending: null,
    }),
  );
  const { damaged } = await state.loadOrSetAside();
  t.regex(damaged ?? '', /unexpected values at 'machines.win11.hostChanges.0.record.kind'/);
});
