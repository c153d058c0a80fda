/**
 * `hold = "boot"` against the simulated reference host: the daemon's start
 * takes the RX 590 for win10 (or adopts it from the initrd), releases and
 * recovery leave it on vfio-pci, `devices` and `status` say so, only a
 * reattach by hand gives it back, and a configuration changed to "vm"
 * moves nothing by itself: the claims' record decides.
 */
import test from 'ava';
import { addSimProcess } from '../../lib/sim/index.js';
import { Lifecycle, type ManagedVm } from '../../lib/lifecycle/lifecycle.js';
import { parseHookEvent } from '../../lib/lifecycle/hook-event.js';
import { DeviceLedger } from '../../lib/lifecycle/device-ledger.js';
import { StateFile, type ClaimRecord } from '../../lib/state/state-file.js';
import { manualOwner, ownerKey } from '../../lib/pci/owner.js';
import { parseConfig } from '../../lib/config/index.js';
import type { Config } from '../../lib/config/types.js';
import { DaemonBackend } from '../../lib/daemon/daemon-backend.js';
import { bootHoldEntries } from '../../lib/daemon/outcome-journal.js';
import { MessageId } from '../../lib/systemd/index.js';
import { devicesView, formatDevices } from '../../lib/cli/device-view.js';
import { formatStatus } from '../../lib/cli/status-view.js';
import { pciDriverFile } from '../../lib/pci/sysfs-layout.js';
import { driversOf, fixtureCopy, makeSim, type TestSim } from '../helpers/sim.js';

const RX590 = ['0000:0b:00.0', '0000:0b:00.1'];
const HELD = { '0000:0b:00.0': 'vfio-pci', '0000:0b:00.1': 'vfio-pci' };
const HOST = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' };
const BOOT_CONFIG = '[vm.win10]\ndevices = ["0000:0b:00.0"]\nhold = "boot"\n';

const ev = (op: string, sub: string) => parseHookEvent('win10', op, sub, '-');

function win10(overrides: Partial<ManagedVm> = {}): ManagedVm {
  return {
    name: 'win10',
    devices: ['0000:0b:00.0'],
    shmFiles: [],
    force: false,
    removeShmOnStop: false,
    user: null,
    units: [],
    ...overrides,
  };
}

function lifecycle(sim: TestSim): Lifecycle {
  const ledger = new DeviceLedger({ engine: sim.engine, state: new StateFile(sim.kernel.roots.run) });
  return new Lifecycle({ ledger, roots: sim.kernel.roots, trustedShmOwners: () => [0] });
}

/** The daemon's backend over `life`, with the configuration `config()` returns. */
function backend(sim: TestSim, life: Lifecycle, config: () => Config): DaemonBackend {
  return new DaemonBackend({
    engine: sim.engine,
    lifecycle: life,
    config,
    reload: async () => undefined,
    accounts: { uid: async () => 1000, gid: async () => 1000, primaryGid: async () => 1000 },
  });
}

async function claims(life: Lifecycle): Promise<Record<string, Pick<ClaimRecord, 'owner' | 'originalDriver' | 'originalKnown' | 'hold'>>> {
  const out: Record<string, Pick<ClaimRecord, 'owner' | 'originalDriver' | 'originalKnown' | 'hold'>> = {};
  for (const [address, c] of (await life.ledger.read()).claims) {
    out[address] = {
      owner: c.owner,
      originalDriver: c.originalDriver,
      originalKnown: c.originalKnown,
      ...(c.hold ? { hold: c.hold } : {}),
    };
  }
  return out;
}

const heldFromHost = {
  '0000:0b:00.0': { owner: { kind: 'vm', name: 'win10' }, originalDriver: 'amdgpu', originalKnown: true, hold: 'boot' },
  '0000:0b:00.1': { owner: { kind: 'vm', name: 'win10' }, originalDriver: 'snd_hda_intel', originalKnown: true, hold: 'boot' },
} as const;

test('the start takes the RX 590 and its audio for win10, marked held at boot, with their host drivers recorded', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const [result] = await life.holdAtBoot([{ name: 'win10', devices: ['0000:0b:00.0'], force: false }]);
  t.deepEqual(result, { name: 'win10', detached: ['0000:0b:00.1', '0000:0b:00.0'], held: RX590, adopted: [], error: null });
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(await claims(life), heldFromHost);
  t.is(await sim.driverOf('0000:0a:00.0'), 'amdgpu', 'the host GPU never moves');
  t.deepEqual(
    bootHoldEntries(result!).map((e) => [e.message, e.fields['MESSAGE_ID'] ?? null]),
    [
      ["Device '0000:0b:00.1' detached to vfio-pci at start, held at boot for VM 'win10'", MessageId.DEVICE_DETACHED],
      ["Device '0000:0b:00.0' detached to vfio-pci at start, held at boot for VM 'win10'", MessageId.DEVICE_DETACHED],
      ["VM 'win10' holds '0000:0b:00.0', '0000:0b:00.1' at boot: on vfio-pci until the host shuts down", null],
    ],
  );
});

test('a whole VM lifecycle leaves devices held at boot on vfio-pci, and the release says so', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.holdAtBoot([{ name: 'win10', devices: ['0000:0b:00.0'], force: false }]);
  const prepared = await life.handle(ev('prepare', 'begin'), win10({ hold: 'boot' }));
  t.is(prepared.message, "VM 'win10' prepared: no device moved, 0 shm file(s) ready");
  await life.handle(ev('started', 'begin'), win10());
  await life.handle(ev('stopped', 'end'), win10());
  const released = await life.handle(ev('release', 'end'), win10());
  t.is(
    released.message,
    "VM 'win10' released: 0 device(s) given back; '0000:0b:00.0', '0000:0b:00.1' stay on vfio-pci, held at boot for it",
  );
  t.deepEqual(released.reattached, []);
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(await claims(life), heldFromHost, 'the claims and their mark outlive the release');
  t.is((await life.ledger.read()).machines.size, 0, 'the record of the run is gone');
  // A second release, and recovery at the next start, change nothing either.
  await life.release('win10');
  t.deepEqual(await life.recover(), []);
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(await claims(life), heldFromHost);
});

test('devices already on vfio-pci at start (the initrd loop bound them) are adopted, their original driver unknown', async (t) => {
  const fixture = fixtureCopy('reference-host');
  for (const d of fixture.devices) {
    if (!RX590.includes(d.address)) continue;
    // The blog's preDeviceCommands: driver_override = vfio-pci before the host driver loads.
    d.hostDriver = d.driver ?? null;
    d.driver = 'vfio-pci';
    d.override = 'vfio-pci';
  }
  const sim = await makeSim(t, fixture);
  const life = lifecycle(sim);
  const recovered = await life.recover();
  t.is(recovered.length, 2, recovered.join('\n'));
  const [result] = await life.holdAtBoot([{ name: 'win10', devices: ['0000:0b:00.0'], force: false }]);
  t.deepEqual(result, { name: 'win10', detached: [], held: RX590, adopted: RX590, error: null });
  t.deepEqual(await claims(life), {
    '0000:0b:00.0': { owner: { kind: 'vm', name: 'win10' }, originalDriver: null, originalKnown: false, hold: 'boot' },
    '0000:0b:00.1': { owner: { kind: 'vm', name: 'win10' }, originalDriver: null, originalKnown: false, hold: 'boot' },
  });
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.is(
    bootHoldEntries(result!).at(-1)!.message,
    "VM 'win10' holds '0000:0b:00.0', '0000:0b:00.1' at boot: on vfio-pci until the host shuts down; " +
      "'0000:0b:00.0', '0000:0b:00.1' already on vfio-pci (the initrd?), adopted with the original driver unknown",
  );

  // `vfio-hookctl devices` shows them held at boot; only a reattach by address gives them back, to the kernel's choice.
  const listing = formatDevices(devicesView(await sim.engine.inspect(), (await life.ledger.read()).claims), { width: 200 });
  t.regex(
    listing,
    /0000:0b:00\.0 +1002:67df +\S+ +vfio-pci .*\n +subsystem 1682:c590; driver_override vfio-pci; held at boot for VM 'win10' \(was unknown: the kernel chooses at reattach\)/,
  );
  const view = devicesView(await sim.engine.inspect(), (await life.ledger.read()).claims);
  t.deepEqual(view.devices.find((d) => d.address === '0000:0b:00.1')?.claim, {
    owner: 'vm:win10',
    originalDriver: null,
    originalKnown: false,
    hold: 'boot',
  });
  await life.ledger.reattach(manualOwner('root'), RX590);
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.deepEqual(await claims(life), {});
});

test('a second start (the daemon restarted) changes nothing and keeps the drivers the devices had', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const hold = [{ name: 'win10', devices: ['0000:0b:00.0'], force: false }];
  await life.holdAtBoot(hold);
  const again = lifecycle(sim);
  t.deepEqual(await again.recover(), []);
  t.deepEqual(await again.holdAtBoot(hold), [{ name: 'win10', detached: [], held: RX590, adopted: [], error: null }]);
  t.deepEqual(await claims(again), heldFromHost);
});

test('a card a process holds is not taken at start: the host keeps it, and the VM says why', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await addSimProcess({ roots: sim.kernel.roots }, { pid: 4242, comm: 'Xorg', fds: ['/dev/dri/card1'] });
  const life = lifecycle(sim);
  const config = parseConfig(BOOT_CONFIG, 'vfio-hookd.toml');
  const daemon = backend(sim, life, () => config);
  const { results, notes } = await daemon.holdAtBoot();
  t.is(results.length, 1);
  t.is(
    results[0]!.error?.message,
    "Cannot detach '0000:0b:00.0': '0000:0b:00.0' is held by 'Xorg' (pid 4242) through '/dev/dri/card1'; close it, refusing",
  );
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.deepEqual(await claims(life), {});
  t.deepEqual(notes, [`VM 'win10' is hold = "boot" but holds nothing at boot yet: its devices are taken at vfio-hookd's next start`]);
  const [machine] = await daemon.listMachines();
  t.is(machine!.state, 'failed');
  t.is(
    machine!.lastMessage,
    "Cannot hold the devices of VM 'win10' at boot: Cannot detach '0000:0b:00.0': '0000:0b:00.0' is held by 'Xorg' (pid 4242) " +
      "through '/dev/dri/card1'; close it; they stay with the host until the VM starts, and are held from then on",
  );
  t.is(bootHoldEntries(results[0]!)[0]!.fields['MESSAGE_ID'], MessageId.BOOT_HOLD_FAILED);
});

test('status shows the devices held at boot, and a VM that only holds them is not prepared', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const config = parseConfig(BOOT_CONFIG, 'vfio-hookd.toml');
  const daemon = backend(sim, life, () => config);
  await daemon.noteStartState();
  const { notes } = await daemon.holdAtBoot();
  t.deepEqual(notes, []);
  const [machine] = await daemon.listMachines();
  t.like(machine, { name: 'win10', state: 'defined', devices: RX590, heldAtBoot: RX590, lastMessage: '' });
  t.is(
    formatStatus([
      {
        ...machine!,
        devices: [...machine!.devices],
        shmFiles: [],
        units: [],
        heldAtBoot: RX590,
        failedUnits: [],
        since: null,
        step: null,
        shmDetails: [],
        hostChanges: [],
        returnDrivers: [...(machine!.returnDrivers ?? [])],
      },
    ]),
    "win10: defined\n  devices: 0000:0b:00.0, 0000:0b:00.1\n  held at boot for VM 'win10': 0000:0b:00.0, 0000:0b:00.1 (on vfio-pci until the host shuts down)\n  shm files: -\n",
  );
  // Held at boot, not running: no sleep lock to retake, and no stale release to offer.
  t.deepEqual(await life.retakeSleepLocks(), []);
  t.deepEqual(await daemon.releaseStopped(new Map([['win10', false]])), []);
  t.deepEqual(await driversOf(sim, RX590), HELD);
});

test('hold changed from boot to vm: the record decides, the devices stay held at boot and the daemon says how to give them back', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  let config = parseConfig(BOOT_CONFIG, 'vfio-hookd.toml');
  const daemon = backend(sim, life, () => config);
  await daemon.holdAtBoot();
  config = parseConfig(BOOT_CONFIG.replace('hold = "boot"', 'hold = "vm"'), 'vfio-hookd.toml');
  t.deepEqual(await daemon.bootHoldNotes(), [
    "VM 'win10' is now hold = \"vm\", but '0000:0b:00.0', '0000:0b:00.1' were taken at boot for it: they stay on vfio-pci until the host shuts down; " +
      "give them back now with 'vfio-hookctl reattach 0000:0b:00.0' (each address)",
  ]);
  // Its next run, prepared as hold = "vm", still leaves them at release: what was done decides what is undone.
  await life.handle(ev('prepare', 'begin'), win10({ hold: 'vm' }));
  await life.handle(ev('release', 'end'), win10());
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(await claims(life), heldFromHost);
  // The next start with hold = "vm" takes nothing new; recovery keeps what is recorded.
  const next = backend(sim, lifecycle(sim), () => config);
  t.deepEqual((await next.holdAtBoot()).results, []);
  // The VM removed from the file: the same note, with the other reason.
  config = parseConfig('', 'vfio-hookd.toml');
  t.regex(
    (await daemon.bootHoldNotes())[0]!,
    /^VM 'win10' is no longer in the configuration, but '0000:0b:00\.0', '0000:0b:00\.1' were taken at boot/,
  );
  // Given back by hand, one address at a time: the card and its audio go together.
  await life.ledger.reattach(manualOwner('root'), ['0000:0b:00.0']);
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.deepEqual(await daemon.bootHoldNotes(), []);
});

test('a VM prepared with hold = "boot" whose devices were not taken at start holds them from its prepare on', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.handle(ev('prepare', 'begin'), win10({ hold: 'boot' }));
  await life.handle(ev('release', 'end'), win10());
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(
    Object.values(await claims(life)).map((c) => [ownerKey(c.owner), c.hold]),
    [
      ['vm:win10', 'boot'],
      ['vm:win10', 'boot'],
    ],
  );
});

test('recovery puts a device held at boot that is found driverless back on vfio-pci, keeping its claim', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  await life.holdAtBoot([{ name: 'win10', devices: ['0000:0b:00.0'], force: false }]);
  // Someone unbound the audio function from vfio-pci by hand.
  await sim.kernel.write(pciDriverFile(sim.kernel.roots, 'vfio-pci', 'unbind'), '0000:0b:00.1', new AbortController().signal);
  t.is(await sim.driverOf('0000:0b:00.1'), null);
  const notes = await lifecycle(sim).recover();
  t.deepEqual(notes, []);
  t.deepEqual(await driversOf(sim, RX590), HELD);
  t.deepEqual(await claims(life), heldFromHost);
});

test('a VM started without its prepare hook is still reported when it only holds devices at boot', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const life = lifecycle(sim);
  const config = parseConfig(BOOT_CONFIG, 'vfio-hookd.toml');
  const daemon = backend(sim, life, () => config);
  await daemon.holdAtBoot();
  t.regex((await daemon.domainStarted('win10')) ?? '', /^VM 'win10' started, but its prepare hook never reached vfio-hookd/);
  // After a prepare (a record), a start is no news.
  const other = backend(sim, life, () => config);
  await life.handle(ev('prepare', 'begin'), win10({ hold: 'boot' }));
  t.is(await other.domainStarted('win10'), null);
});
