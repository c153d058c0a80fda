/**
 * What the Manager object does: the daemon's behaviour behind the bus.
 *
 * `HandleHook` checks everything a stage needs before any side effect. For
 * `prepare`: the hook arguments, the domain XML, the VM's settings. For
 * `started`, `stopped` and `release`: nothing of the configuration or the
 * XML; those stages act on the record prepare wrote (lib/lifecycle), so a
 * configuration edited, broken or removed while the VM ran never refuses a
 * release. A VM that is not managed, and every stage without work, gets its
 * answer at once. libvirt is never asked anything here: the hook is in
 * flight, and a call back into libvirt would wait for it.
 *
 * Fail closed where we cannot judge: when the configuration could not be
 * loaded at start, a VM whose XML has a PCI `<hostdev>` or a `<shmem>` is
 * refused at prepare with the configuration's own error (we cannot tell
 * whether it is ours); a VM with neither starts.
 *
 * Manual `DetachDevice`/`ReattachDevice` go through the same DeviceLedger, so
 * one queue (and one lock, shared with vfio-hookctl) orders every device and
 * state change.
 */
import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import type { Config } from '../config/types.js';
import { hugepagesNotes, mergeVmSettings } from '../config/merge.js';
import { vmSettingsWarnings } from '../config/vm-settings.js';
import { closestName } from '../names/did-you-mean.js';
import { hasPassthroughDevices, type DomainInfo } from '../domain/domain-xml.js';
import { parseDomainXmlOffThread } from '../domain/parse-off-thread.js';
import type { PciEngine } from '../pci/engine.js';
import { parsePciAddress } from '../pci/address.js';
import { readPciDevices } from '../pci/pci-device.js';
import { describeHolders, groupHolders, holdersOf, type Holder } from '../pci/holders.js';
import { className } from '../pci/class-code.js';
import type { BootHoldResult, Lifecycle, HookOutcome as LifecycleOutcome } from '../lifecycle/lifecycle.js';
import type { OperationResult } from '../lifecycle/device-ledger.js';
import { parseHookEvent, stageOf, type HookEvent as ParsedHookEvent, type HookStage } from '../lifecycle/hook-event.js';
import { manualOwner, ownerKey, vmOwner, type Owner } from '../pci/owner.js';
import type { State } from '../state/state-file.js';
import { StageProgress, type ProgressStage } from './stage-progress.js';
import type { DeviceRow, HookEvent, MachineRow, MachineState } from '../bus/dbus-types.js';
import type { ManagerBackend } from '../bus/manager-interface.js';
import { toManagedVm, type AccountResolver } from './managed-vm.js';

/** A VM's state after each stage that changes it. */
const STATE_AFTER: Partial<Record<HookStage, MachineState>> = {
  prepare: 'prepared',
  started: 'running',
  reconnect: 'running',
  stopped: 'stopped',
  release: 'released',
};

/** Who called a manual method: their uid and, when it resolves, their name. */
export interface Caller {
  readonly uid: number;
  readonly name: string;
}

interface DaemonBackendOptions {
  readonly engine: PciEngine;
  readonly lifecycle: Lifecycle;
  /** The configuration in force (the watcher keeps the last good one). */
  readonly config: () => Config;
  /** Why the configuration could not be loaded at start (fail closed for passthrough VMs), or null. */
  readonly configError?: () => InvalidConfig | null;
  /** Re-read the configuration; rejects with InvalidConfig and keeps the old one. */
  readonly reload: () => Promise<void>;
  readonly accounts: AccountResolver;
  /** Told of every hook that acted, for the journal. */
  readonly onOutcome?: (event: ParsedHookEvent, outcome: LifecycleOutcome) => void;
  /**
   * Told after anything that may have changed devices, claims or machine
   * states (to refresh the bus objects); resolves once a refresh begun after
   * it has run. A hook, a detach or a reattach that changed something answers
   * only then, so what the bus shows right after (`vfio-hookctl status` after
   * `virsh start`) is what it did; a stage without work answers at once.
   */
  readonly onChange?: () => void | Promise<void>;
  /** Told of every hook that was refused (bad arguments, or the stage failed), for the journal. */
  readonly onRefused?: (domainName: string, operation: string, subOperation: string, error: unknown) => void;
  /** Told of a warning about a VM vfio-hookd does not manage (did-you-mean), for the journal. */
  readonly onUnmanagedWarning?: (domainName: string, warning: string) => void;
  /** Told of every manual detach or reattach, for the journal. */
  readonly onManual?: (what: 'detach' | 'reattach', caller: Caller, owner: Owner, result: OperationResult | null, error: unknown) => void;
  /** Where a prepare's or release's current step is kept while it runs (stage-progress.ts). Default: a private one. */
  readonly progress?: StageProgress;
}

/** What the hooks told us of a VM, and since when (ms since the epoch) it is in that state. */
interface Seen {
  readonly state: MachineState;
  readonly message: string;
  readonly sinceMs: number;
}

/** The VMs' states as the hooks told them; a state's time is kept while only its message changes. */
class SeenStates extends Map<string, Seen> {
  override set(name: string, seen: { state: MachineState; message: string; sinceMs?: number }): this {
    const before = this.get(name);
    const sinceMs = seen.sinceMs ?? (before?.state === seen.state ? before.sinceMs : Date.now());
    return super.set(name, { state: seen.state, message: seen.message, sinceMs });
  }
}

/** What a hook answer carries besides success: a note the hook prints on stderr ('' for none). */
interface HookAnswer extends LifecycleOutcome {
  readonly note?: string;
}

export class DaemonBackend implements ManagerBackend {
  readonly #options: DaemonBackendOptions;
  /** What the hooks told us of each VM since the daemon started. */
  readonly #seen = new SeenStates();
  readonly #progress: StageProgress;
  /** The Device rows of the last refresh outside a stage. */
  #lastDevices: readonly DeviceRow[] | null = null;
  /** How many changes were announced (onChange), to tell whether a call made one. */
  #changes = 0;
  /** The refresh that covers the last change announced. */
  #lastRefresh: Promise<void> | undefined;
  /** VMs that held devices when this daemon started (before any hook): candidates for a stale release. */
  #heldAtStart = new Set<string>();
  /** Whether libvirt-dbus is there to tell whether a VM still runs. */
  #libvirtAvailable = false;
  /**
   * VMs whose devices a process was seen holding while they ran (read after
   * their `started` or `reconnect` hook, or when libvirt listed them running
   * at our start), each with that read still pending or done: releaseGone's
   * evidence that QEMU had them.
   */
  readonly #seenHeld = new Map<string, Promise<boolean>>();

  constructor(options: DaemonBackendOptions) {
    this.#options = options;
    this.#progress = options.progress ?? new StageProgress();
  }

  /**
   * The recorded state for the bus objects. While a stage runs the ledger's
   * queue is busy with it, and reading through the queue would hold the
   * refresh (and so the Machine's `preparing` and its Step) until the stage
   * ends: then the state this process last saw is the answer.
   */
  #state(): Promise<State> {
    const ledger = this.#options.lifecycle.ledger;
    return this.#progress.current !== null ? Promise.resolve(ledger.cached) : ledger.read();
  }

  /** Announce a change (onChange), keeping the refresh that will show it. */
  #changed(): void {
    this.#changes++;
    this.#lastRefresh = this.#options.onChange?.() ?? undefined;
  }

  /**
   * Wait for the bus objects to show the changes announced so far (refreshes
   * run in order, so the last one's covers them all); a failed refresh is the
   * refresh's to report.
   */
  async #published(): Promise<void> {
    await this.#lastRefresh?.catch(() => undefined);
  }

  /**
   * Run a managed VM's prepare or release with its state `preparing` or
   * `releasing` meanwhile, and its steps visible (the Machine's Step).
   */
  async #inProgress<T>(name: string, stage: ProgressStage, work: () => Promise<T>): Promise<T> {
    const before = this.#seen.get(name);
    this.#seen.set(name, { state: stage === 'prepare' ? 'preparing' : 'releasing', message: before?.message ?? '' });
    this.#changed();
    return this.#progress.run(name, stage, work);
  }

  /**
   * Remember which VMs hold devices now, before any hook of this daemon (call
   * once at start, after recovery). Devices held at boot do not count: their
   * VM need not run for them to be held.
   */
  async noteStartState(): Promise<void> {
    const state = await this.#options.lifecycle.ledger.read();
    this.#heldAtStart = new Set(
      [...state.claims.values()]
        .flatMap((c) => (c.owner.kind === 'vm' && c.hold !== 'boot' ? [c.owner.name] : []))
        .concat([...state.machines.keys()]),
    );
  }

  /**
   * At start, after recovery: take the devices of every VM configured with
   * `hold = "boot"` (Lifecycle.holdAtBoot). A VM that cannot have them is
   * marked failed with the reason, for `status`. Returns what was done, and
   * the notes about boot holds the configuration no longer asks for.
   */
  async holdAtBoot(): Promise<{ results: BootHoldResult[]; notes: string[] }> {
    const vms = [...this.#options.config().vms.values()]
      .filter((vm) => vm.hold === 'boot')
      .map((vm) => ({ name: vm.name, devices: vm.devices, force: vm.force }));
    const results = await this.#options.lifecycle.holdAtBoot(vms);
    for (const r of results) {
      if (r.error !== null) this.#seen.set(r.name, { state: 'failed', message: bootHoldFailure(r) });
    }
    const notes = await this.bootHoldNotes();
    this.#changed();
    return { results, notes };
  }

  /**
   * The devices held at boot for a VM whose configuration no longer says
   * `hold = "boot"` (changed to "vm", or the VM removed), and the VMs now
   * set to "boot" that hold nothing at boot yet: a sentence each. The record
   * decides what was done: such devices stay on vfio-pci until the host shuts
   * down or are given back by hand, and new boot holds are taken at the
   * daemon's next start; a reload never moves a device by itself.
   */
  async bootHoldNotes(): Promise<string[]> {
    const state = await this.#options.lifecycle.ledger.read();
    const config = this.#options.config();
    const held = new Map<string, string[]>();
    for (const [address, claim] of state.claims) {
      if (claim.hold !== 'boot' || claim.owner.kind !== 'vm') continue;
      held.set(claim.owner.name, [...(held.get(claim.owner.name) ?? []), address].sort());
    }
    const notes: string[] = [];
    for (const [name, addresses] of [...held].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const vm = config.vms.get(name);
      if (vm?.hold === 'boot') continue;
      const now = vm === undefined ? 'is no longer in the configuration' : 'is now hold = "vm"';
      notes.push(
        `VM ${q(name)} ${now}, but ${addresses.map(q).join(', ')} were taken at boot for it: they stay on vfio-pci until the host shuts down; ` +
          `give them back now with 'vfio-hookctl reattach ${addresses[0]}'${addresses.length > 1 ? ' (each address)' : ''}`,
      );
    }
    for (const vm of config.vms.values()) {
      if (vm.hold !== 'boot' || held.has(vm.name)) continue;
      notes.push(`VM ${q(vm.name)} is hold = "boot" but holds nothing at boot yet: its devices are taken at vfio-hookd's next start`);
    }
    return notes;
  }

  set libvirtAvailable(available: boolean) {
    this.#libvirtAvailable = available;
    this.#changed();
  }

  /**
   * The PCI devices with their claims. Reads only the devices themselves, not
   * holders or host dependencies: this runs after every hook, to refresh the
   * Device objects.
   */
  async listDevices(): Promise<readonly DeviceRow[]> {
    // Mid-stage refreshes (each step asks for one, for the Machine's Step) keep the
    // Device objects as they were: they change once, to what the stage settled on,
    // not through the driverless instant between an unbind and a probe.
    if (this.#progress.current !== null && this.#lastDevices !== null) return this.#lastDevices;
    const [devices, state] = await Promise.all([readPciDevices(this.#options.engine.port), this.#state()]);
    this.#lastDevices = [...devices.values()].map((d) => {
      const claim = state.claims.get(d.address);
      return {
        address: d.address,
        vendorId: d.vendorId,
        deviceId: d.deviceId,
        className: className(d.classCode),
        driver: d.driver,
        iommuGroup: d.iommuGroup,
        owner: claim ? ownerKey(claim.owner) : null,
      };
    });
    return this.#lastDevices;
  }

  /**
   * Every VM the daemon knows: configured ones, recorded ones (a VM prepared
   * before a restart), ones that hold devices, and ones whose hooks it has seen.
   */
  async listMachines(): Promise<readonly MachineRow[]> {
    const state = await this.#state();
    const config = this.#options.config();
    const held = new Map<string, string[]>();
    const atBoot = new Map<string, string[]>();
    for (const [address, claim] of state.claims) {
      if (claim.owner.kind !== 'vm') continue;
      held.set(claim.owner.name, [...(held.get(claim.owner.name) ?? []), address]);
      if (claim.hold === 'boot') atBoot.set(claim.owner.name, [...(atBoot.get(claim.owner.name) ?? []), address]);
    }
    const names = new Set([...config.vms.keys(), ...state.machines.keys(), ...held.keys(), ...this.#seen.keys()]);
    return [...names].sort().map((name) => {
      const settings = config.vms.get(name);
      const record = state.machines.get(name);
      const holds = held.get(name) ?? [];
      const heldAtBoot = atBoot.get(name) ?? [];
      const seen = this.#seen.get(name);
      const stale =
        seen === undefined && this.#heldAtStart.has(name) && !this.#libvirtAvailable
          ? `holds ${holds.join(', ') || 'its shm files'} since before vfio-hookd started; libvirt-dbus is not on the bus, so whether it still runs is unknown: ` +
            `if it is off, give the devices back with 'vfio-hookctl reattach ${holds[0] ?? 'ADDRESS'}'`
          : null;
      const progress = this.#progress.current?.vm === name ? this.#progress.current : null;
      return {
        name,
        step: progress?.step ?? '',
        stepSinceUsec: progress === null ? 0n : BigInt(progress.stepSinceMs) * 1000n,
        stateSinceUsec: seen === undefined ? 0n : BigInt(seen.sinceMs) * 1000n,
        shmDetails: (record?.shm ?? []).map((f) => ({ name: f.name, sizeBytes: f.sizeBytes, uid: f.uid, gid: f.gid, mode: f.mode })),
        hostChanges: (record?.hostChanges ?? []).map((c) => ({ kind: c.record.kind, phase: c.phase, describe: c.describe })),
        // What a release gives back, and to which driver; devices held at boot stay, so they are not listed.
        returnDrivers: holds
          .filter((address) => !heldAtBoot.includes(address))
          .map((address) => {
            const claim = state.claims.get(address)!;
            return { address, driver: claim.originalKnown ? claim.originalDriver : null };
          }),
        // Devices held at boot do not make a VM prepared: they are held whether or not it runs.
        state: seen?.state ?? (record !== undefined || holds.length > heldAtBoot.length ? 'prepared' : 'defined'),
        devices: holds.length > 0 ? holds : [...(record?.devices ?? settings?.devices ?? [])],
        shmFiles: record
          ? record.shm.map((f) => f.name)
          : [settings?.lookingGlass?.name, settings?.scream?.name].filter((n): n is string => n !== undefined),
        lastMessage: seen?.message ?? stale ?? '',
        user: (record ? record.user : settings?.user) ?? '',
        units: [...((record ? record.units : settings?.units) ?? [])],
        heldAtBoot: heldAtBoot.sort(),
      };
    });
  }

  /**
   * libvirt says `name` started. For a configured VM whose prepare never
   * reached us (no prepare seen, no record), returns the sentence to log: the
   * hook is missing, not executable, or libvirtd was not restarted after
   * install. Otherwise null.
   */
  async domainStarted(name: string): Promise<string | null> {
    if (!this.#options.config().vms.has(name)) return null;
    const seen = this.#seen.get(name)?.state;
    if (seen === 'prepared' || seen === 'running') return null;
    // Devices held at boot say nothing of a prepare: they are held before any VM starts.
    const state = await this.#options.lifecycle.ledger.read();
    const prepared =
      state.machines.has(name) ||
      [...state.claims.values()].some((c) => c.hold !== 'boot' && c.owner.kind === 'vm' && c.owner.name === name);
    if (prepared) return null;
    const message =
      `VM '${name}' started, but its prepare hook never reached vfio-hookd: its devices and shm files were not prepared. ` +
      `Check that the hook is installed and executable (/etc/libvirt/hooks/qemu.d/vfio-hookd) and restart libvirtd once so it sees it`;
    this.#seen.set(name, { state: 'failed', message });
    this.#changed();
    return message;
  }

  /** At start, libvirt lists the running domains: managed ones that hold devices are running. */
  async domainsRunning(names: readonly string[]): Promise<void> {
    for (const name of names) {
      if (!this.#seen.has(name) && (this.#options.config().vms.has(name) || (await this.#options.lifecycle.knows(name)))) {
        this.#seen.set(name, { state: 'running', message: 'running when vfio-hookd started' });
        void this.#observeHolders(name);
      }
    }
    this.#changed();
  }

  /**
   * libvirt's view at our start: `active` maps every domain libvirt has to
   * whether it runs. A VM that held devices when this daemon started, of
   * which no hook has reached this daemon since, and that libvirt reports
   * shut off (or does not know), stopped while we were down: release it from
   * its record. Returns the names released.
   *
   * Why this cannot release a VM that is starting right now: a VM whose
   * prepare ran in this daemon has a hook seen (it is not in `heldAtStart`
   * either); a VM prepared by the previous daemon whose QEMU is being started
   * at this very moment sends `start begin` and `started begin` to us next,
   * and libvirt answers domain queries only between hooks, so when libvirt
   * says "not running" after our start, either its start failed (libvirt
   * then sends release, which is idempotent) or a hook of it reaches us
   * first and marks it seen. The check is repeated on the VM's own queue,
   * right before acting.
   */
  async releaseStopped(active: ReadonlyMap<string, boolean>): Promise<{ name: string; outcome: LifecycleOutcome }[]> {
    const released: { name: string; outcome: LifecycleOutcome }[] = [];
    for (const name of [...this.#heldAtStart].sort()) {
      if (this.#seen.has(name) || active.get(name) === true) continue;
      this.#heldAtStart.delete(name);
      const outcome = await this.#options.lifecycle.release(name);
      this.#seen.set(name, { state: 'released', message: `released at start: libvirt reports it not running (${outcome.message})` });
      released.push({ name, outcome });
    }
    if (released.length > 0) this.#changed();
    return released;
  }

  /**
   * At the daemon's stop, after the last hook: VMs whose QEMU ran and is gone,
   * with no release from libvirt (libvirtd stopped before it ran the hook, as
   * at a host shutdown where systemd stops the VM's scope and then libvirtd
   * before libvirtd has reaped QEMU; or libvirtd was killed). Released from
   * their records, as the release hook would have; the devices would
   * otherwise stay on vfio-pci with no VM, and a restarted daemon could only
   * tell with libvirt-dbus on the bus. Returns the VMs released and, for the
   * journal, those kept and why.
   *
   * Only where nothing is at stake, judged from what was seen, not from the
   * configuration: a VM is released only when a process was seen holding its
   * devices while it ran (#observeHolders, after its `started` hook: QEMU had
   * opened them), and now the whole process table was read and no process
   * holds any of its devices or their groups' VFIO nodes. So a QEMU that
   * still runs (`systemctl restart vfio-hookd` beside a running VM) keeps
   * everything, and so does a VM between its prepare and its start, a VM
   * whose hooks were run by hand with no QEMU, and a VM whose recorded
   * devices QEMU never opened (a device configured to keep it from the host
   * but not passed through): nothing there says QEMU is gone.
   *
   * No hook can arrive meanwhile (the bus name is given up first), so the
   * check and the release do not race a stage of the same VM.
   */
  async releaseGone(): Promise<{ released: { name: string; outcome: LifecycleOutcome }[]; kept: { name: string; why: string }[] }> {
    const released: { name: string; outcome: LifecycleOutcome }[] = [];
    const kept: { name: string; why: string }[] = [];
    for (const name of [...this.#seenHeld.keys()].sort()) {
      if (!(await this.#seenHeld.get(name))) continue;
      const state = await this.#options.lifecycle.ledger.read();
      if (state.machines.get(name)?.stage !== 'prepared') continue; // released already
      const now = await this.#holders(name, state);
      if (now === null) {
        kept.push({ name, why: "some processes' open files could not be read, so whether its QEMU still runs is unknown" });
        continue;
      }
      if (now.length > 0) {
        kept.push({ name, why: `its devices are still held by ${describeHolders(now)}` });
        continue;
      }
      const outcome = await this.#options.lifecycle.release(name);
      this.#seen.set(name, {
        state: 'released',
        message: `released at vfio-hookd's stop: no process holds its devices (${outcome.message})`,
      });
      released.push({ name, outcome });
    }
    if (released.length > 0) this.#changed();
    return { released, kept };
  }

  /** Note whether a process holds the devices of `name`, which runs (releaseGone's evidence); never rejects. */
  #observeHolders(name: string): Promise<boolean> {
    const held = this.#options.lifecycle.ledger
      .read()
      .then((state) => this.#holders(name, state))
      .then((holders) => holders !== null && holders.length > 0)
      .catch(() => false);
    // A later read replaces an earlier one only by adding evidence: once seen held, the VM's QEMU had them.
    const before = this.#seenHeld.get(name);
    const evidence = before === undefined ? held : Promise.all([before, held]).then(([a, b]) => a || b);
    this.#seenHeld.set(name, evidence);
    return evidence;
  }

  /**
   * The processes holding the devices a VM's record claims for it (held at
   * boot excepted) or their groups' VFIO nodes, each once; [] for none or no
   * such device, null when some processes' fds could not be read.
   */
  async #holders(name: string, state: State): Promise<Holder[] | null> {
    const claims = [...state.claims].filter(([, c]) => c.owner.kind === 'vm' && c.owner.name === name && c.hold !== 'boot');
    if (claims.length === 0) return [];
    const addresses = claims.map(([address]) => address);
    const snapshot = await this.#options.engine.inspectFor(addresses);
    if (!snapshot.processes.complete) return null;
    const groups = new Set(claims.map(([, c]) => c.group).filter((g): g is number => g !== null));
    const holders = [
      ...addresses.flatMap((a) => {
        const device = snapshot.devices.get(a);
        return device === undefined ? [] : holdersOf(device, snapshot.processes);
      }),
      ...[...groups].flatMap((g) => groupHolders(g, snapshot.processes)),
    ];
    return [...new Map(holders.map((h) => [`${h.pid} ${h.path}`, h])).values()];
  }

  async detachDevice(address: string, forVm: string, caller: Caller, force = false): Promise<void> {
    const owner = forVm === '' ? manualOwner(caller.name) : vmOwner(forVm);
    let result: OperationResult | null = null;
    try {
      result = await this.#options.lifecycle.ledger.detach(owner, [parsePciAddress(address)], force);
      this.#options.onManual?.('detach', caller, owner, result, null);
    } catch (error) {
      this.#options.onManual?.('detach', caller, owner, result, error);
      throw error;
    } finally {
      this.#changed();
      await this.#published();
    }
  }

  /**
   * Give a device back, whoever holds it, unless its group is in use by a
   * running VM (the plan refuses then, naming the VM and how to stop it).
   */
  async reattachDevice(address: string, caller: Caller): Promise<void> {
    const normalised = parsePciAddress(address);
    const owner = manualOwner(caller.name);
    let result: OperationResult | null = null;
    try {
      result = await this.#options.lifecycle.ledger.reattach(owner, [normalised]);
      this.#options.onManual?.('reattach', caller, owner, result, null);
    } catch (error) {
      this.#options.onManual?.('reattach', caller, owner, result, error);
      throw error;
    } finally {
      this.#changed();
      await this.#published();
    }
  }

  async reload(): Promise<void> {
    try {
      await this.#options.reload();
    } finally {
      this.#changed();
    }
  }

  async handleHook(raw: HookEvent): Promise<HookAnswer> {
    const before = this.#changes;
    try {
      const answer = await this.#handleHook(raw);
      if (this.#changes !== before) await this.#published();
      return answer;
    } catch (error) {
      this.#changed();
      if (this.#options.config().vms.has(raw.domainName) || this.#seen.has(raw.domainName)) {
        this.#seen.set(raw.domainName, { state: 'failed', message: error instanceof Error ? error.message : String(error) });
      }
      this.#options.onRefused?.(raw.domainName, raw.operation, raw.subOperation, error);
      await this.#published();
      throw error;
    }
  }

  async #handleHook(raw: HookEvent): Promise<HookAnswer> {
    const event = parseHookEvent(raw.domainName, raw.operation, raw.subOperation, raw.extra);
    const stage = stageOf(event);
    const lifecycle = this.#options.lifecycle;
    if (stage === 'none') return lifecycle.handle(event, null);
    if (stage === 'stopped') {
      // Nothing to do here but say so: the agents stop the VM's units when its State is 'stopped'
      // (a VM seen, recorded or configured; after a restart of ours only the record may know it).
      const name = event.domainName;
      if (this.#seen.has(name) || this.#options.config().vms.has(name) || (await lifecycle.knows(name))) {
        this.#seen.set(name, { state: 'stopped', message: `VM '${name}' stopped` });
        this.#changed();
      }
      return lifecycle.handle(event, null);
    }

    let outcome: LifecycleOutcome;
    if (stage === 'prepare') {
      // A large document is parsed on a worker thread: the bus keeps answering meanwhile.
      const domain = await parseDomainXmlOffThread(raw.domainXml);
      if (domain.name !== event.domainName) {
        throw new InvalidArgs(
          `The domain XML is for ${q(domain.name)} but the hook was called for ${q(event.domainName)}; libvirt passes the VM's own XML on stdin`,
        );
      }
      const configError = this.#options.configError?.() ?? null;
      if (configError !== null && hasPassthroughDevices(domain)) {
        throw new InvalidConfig(
          `Cannot tell whether VM ${q(event.domainName)} is managed: ${configError.message}. ` +
            `It has <hostdev> or <shmem> devices, so it does not start until the configuration loads (fix it, then 'systemctl reload vfio-hookd'), refusing`,
        );
      }
      const settings = mergeVmSettings(this.#options.config().vms.get(event.domainName), domain);
      if (settings === null) {
        const note = this.#unmanagedNote(domain);
        if (note !== null) this.#options.onUnmanagedWarning?.(event.domainName, note);
        return { ...(await lifecycle.handle(event, null)), note: note ?? '' };
      }
      const vm = {
        ...(await toManagedVm(settings, this.#options.accounts)),
        givenToGuest: domain.hostdevs.map((h) => h.address),
        mappedShm: domain.shmems.map((m) => m.name),
      };
      outcome = await this.#inProgress(event.domainName, 'prepare', () => lifecycle.handle(event, vm));
      const own = [...vmSettingsWarnings(settings), ...hugepagesNotes(settings, domain)];
      const warnings = [...own, ...outcome.warnings];
      const notes = [...own, ...(outcome.notes ?? [])];
      outcome = { ...outcome, warnings, notes };
      this.#seen.set(event.domainName, { state: 'prepared', message: outcome.message });
      this.#options.onOutcome?.(event, outcome);
      this.#changed();
      // The hook prints the warnings on its stderr (libvirt shows them in its log).
      return { ...outcome, note: notes.join('; ') };
    } else {
      // started, release, reconnect: act on the record; a VM without one has nothing to do.
      if (!(await lifecycle.knows(event.domainName))) {
        return lifecycle
          .handle(event, null)
          .then((o) => (stage === 'release' ? { ...o, message: `VM '${event.domainName}' holds nothing: nothing to release` } : o));
      }
      outcome =
        stage === 'release'
          ? await this.#inProgress(event.domainName, 'release', () => lifecycle.handle(event, null))
          : await lifecycle.handle(event, null);
    }
    const state = STATE_AFTER[stage];
    if (state !== undefined) this.#seen.set(event.domainName, { state, message: outcome.message });
    // Read before the answer (QEMU has opened its devices by `started`), so a stop right after it has the evidence.
    if (stage === 'started' || stage === 'reconnect') await this.#observeHolders(event.domainName);
    this.#options.onOutcome?.(event, outcome);
    // Only a managed VM's hook can change devices or machine states; an
    // unmanaged one must stay a quick answer.
    this.#changed();
    return outcome;
  }

  /**
   * For a VM the configuration does not name but whose XML passes devices
   * through: is it probably meant to be managed? Its PCI devices configured
   * for another VM, or its name close to a configured one. Null when neither.
   */
  #unmanagedNote(domain: DomainInfo): string | null {
    if (!hasPassthroughDevices(domain)) return null;
    const config = this.#options.config();
    const notes: string[] = [];
    for (const hostdev of domain.hostdevs) {
      for (const vm of config.vms.values()) {
        if (vm.devices.includes(hostdev.address)) {
          notes.push(`its device ${q(hostdev.address)} is configured for [vm.${tableName(vm.name)}]`);
        }
      }
    }
    const close = closestName(domain.name, config.vms.keys());
    if (close === null && notes.length === 0) return null;
    return (
      `VM ${q(domain.name)} is not managed by vfio-hookd, ` +
      (notes.length > 0 ? `but ${notes.join(' and ')}` : `but its name is close to the configured [vm.${tableName(close!)}]`) +
      `; did you mean that table? Name it [vm.${tableName(domain.name)}] to manage this VM; starting it as it is`
    );
  }
}

/** Why a VM's devices could not be held at boot, for `status` and the journal. */
export function bootHoldFailure(result: BootHoldResult): string {
  const message = result.error?.message ?? 'unknown error';
  return (
    `Cannot hold the devices of VM ${q(result.name)} at boot: ${message.replace(/, refusing$/, '')}; ` +
    `they stay with the host until the VM starts, and are held from then on`
  );
}

/** A TOML table key for a VM name: bare when it can be, quoted otherwise. */
function tableName(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
}
