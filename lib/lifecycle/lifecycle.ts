/**
 * The lifecycle table (docs/architecture.md, "Lifecycle"), run for
 * one VM at a time:
 *
 * | stage     | what happens                                                       |
 * |-----------|--------------------------------------------------------------------|
 * | prepare   | record the VM (user, units, devices); create or repair the shm     |
 * |           | files, recording each; the host changes before the detach (each   |
 * |           | recorded, then made: units stopped, consoles unbound, a DRM        |
 * |           | remove uevent); detach the devices; the host changes after it;     |
 * |           | take the sleep lock. On failure undo what this stage did, in       |
 * |           | reverse (host changes, devices, files, record)                     |
 * | started   | re-check the recorded shm files (owner, mode; never their size:    |
 * |           | QEMU has them mapped)                                              |
 * | stopped   | nothing here: the user agent stops the VM's units                  |
 * | release   | undo the after-detach host changes, give back every device the VM  |
 * |           | holds, undo the before-detach host changes (reverse order), release|
 * |           | the sleep lock,                                                    |
 * |           | remove the recorded shm files when the record says so, drop the    |
 * |           | record                                                             |
 * | reconnect | nothing changes                                                    |
 *
 * A VM with `hold = "boot"` has its devices taken once more, at the daemon's
 * start (`holdAtBoot`), and their claims are marked so: its release leaves
 * them on vfio-pci (DeviceLedger.reattach skips them), so the host driver
 * never has the card until the host shuts down or someone gives a device
 * back by hand. The mark is the record: a configuration changed later
 * (boot to vm) never gives them back by itself.
 *
 * What was done decides what is undone: `started`, `stopped` and `release`
 * act on the machine record that prepare wrote into the state file, never on
 * today's configuration or domain XML, so an edited, broken or removed
 * configuration can never keep a GPU on vfio-pci after its VM is gone.
 *
 * Operations for one VM run in order (a queue per VM); device and state
 * changes run one at a time across VMs and processes (DeviceLedger).
 */
import PQueue from 'p-queue';
import type { HostRoots } from '../roots.js';
import { ensureShmFile, removeShmFile, type EnsureShmFileResult } from '../shm/index.js';
import { vmOwner, sameOwner } from '../pci/owner.js';
import type { HostChangeEntry, MachineRecord, ShmRecord } from '../state/state-file.js';
import type { HostContext } from '../host/host-change.js';
import { hostChangeSteps, kvmfrChoice, type HostPolicy } from '../host/host-policy.js';
import type { KvmfrSettings } from '../shm/kvmfr.js';
import { undoHostChanges } from '../host/undo.js';
import { HUGEPAGES_KIND } from '../host/hugepages.js';
import type { DeviceLedger } from './device-ledger.js';
import { unassignedFunctions } from '../pci/unassigned-functions.js';
import { stageOf, type HookEvent, type HookStage } from './hook-event.js';

/** One shared-memory file of a VM, as it must be. */
interface ShmFileWant {
  readonly name: string;
  readonly sizeBytes: number;
  readonly uid: number;
  readonly gid: number;
  /** Permission bits, e.g. 0o660. */
  readonly mode: number;
}

/** Everything the lifecycle needs to know about a managed VM (from the configuration and the domain XML). */
export interface ManagedVm {
  readonly name: string;
  readonly devices: readonly string[];
  readonly shmFiles: readonly ShmFileWant[];
  /** Ignore the host-dependency safety rail. */
  readonly force: boolean;
  readonly removeShmOnStop: boolean;
  /** Whose agent starts the units ('' or null: nobody's). */
  readonly user: string | null;
  readonly units: readonly string[];
  /** PCI addresses the domain XML gives the guest (`<hostdev>`), to warn of card functions left out. Default: not checked. */
  readonly givenToGuest?: readonly string[];
  /** 'boot': the devices are held from the daemon's start on, never given back at release. Default 'vm'. */
  readonly hold?: 'vm' | 'boot';
  /** What happens to the host around the VM (on-busy, single-gpu, host tuning). Default: nothing (on-busy = "refuse"). */
  readonly hostPolicy?: HostPolicy;
  /** The `<shmem>` names the domain XML maps (kvmfr = "auto" keeps the shm file for those). Default: none. */
  readonly mappedShm?: readonly string[];
}

/** A VM whose devices are held from the daemon's start (`hold = "boot"`). */
export interface BootHold {
  readonly name: string;
  readonly devices: readonly string[];
  /** Ignore the host-dependency safety rail, as for its prepare. */
  readonly force: boolean;
}

/** What `holdAtBoot` did for one VM. */
export interface BootHoldResult {
  readonly name: string;
  /** Devices moved onto vfio-pci now. */
  readonly detached: readonly string[];
  /** Every device the VM holds at boot now, in address order. */
  readonly held: readonly string[];
  /** Of those, the ones whose original driver nobody knows (found on vfio-pci: the initrd put them there). */
  readonly adopted: readonly string[];
  /** Why nothing was taken (the plan refused, a write failed); null when it worked. */
  readonly error: Error | null;
}

/** A lock that keeps the host from suspending (logind's sleep inhibitor), one per VM. */
interface SleepLock {
  take(vm: string, why: string): Promise<void>;
  release(vm: string): void;
}

interface LifecycleOptions {
  readonly ledger: DeviceLedger;
  readonly roots: HostRoots;
  /** Uids that may already own an shm file (root and the qemu user: QEMU creates missing files); read at each use. */
  readonly trustedShmOwners: () => readonly number[];
  /** Held from a prepare that moved devices to the VM's release. Default: none. */
  readonly sleepLock?: SleepLock;
  /**
   * How the host changes reach the host (kernel port, systemd). Default:
   * none; a VM whose policy asks for a change is then refused.
   */
  readonly host?: Omit<HostContext, 'roots'>;
  /** Hears each host change as it starts (the daemon's StepStarted and Step). Default: nobody. */
  readonly onStep?: (step: string) => void;
}

export interface HookOutcome {
  readonly stage: HookStage;
  /** One sentence for HookHandled and the journal. */
  readonly message: string;
  readonly shm: readonly EnsureShmFileResult[];
  readonly detached: readonly string[];
  readonly reattached: readonly string[];
  /** Problems that did not stop the stage (each ends in ', ignoring'). */
  readonly warnings: readonly string[];
  /** Of those, what the VM's owner should see where they start it (the hook's stderr): the VM's own setup, not the host's. */
  readonly notes?: readonly string[];
  /** Host changes made (prepare) or undone (release), a phrase each, in order: for the journal. */
  readonly hostChanges?: readonly string[];
}

export class Lifecycle {
  readonly #ledger: DeviceLedger;
  readonly #roots: HostRoots;
  readonly #trusted: () => readonly number[];
  readonly #sleepLock: SleepLock | undefined;
  readonly #host: HostContext | null;
  readonly #onStep: (step: string) => void;
  readonly #perVm = new Map<string, PQueue>();

  constructor(options: LifecycleOptions) {
    this.#ledger = options.ledger;
    this.#roots = options.roots;
    this.#trusted = options.trustedShmOwners;
    this.#sleepLock = options.sleepLock;
    this.#host = options.host ? { ...options.host, roots: options.roots } : null;
    this.#onStep = options.onStep ?? (() => undefined);
  }

  /** The kvmfr device this prepare sets up instead of Looking Glass's shm file, with that file's size, owner and mode; null for none. */
  async #kvmfr(vm: ManagedVm): Promise<KvmfrSettings | null> {
    const choice = vm.hostPolicy?.kvmfr;
    const file = choice ? vm.shmFiles.find((f) => f.name === choice.shmName) : undefined;
    if (!choice || file === undefined) return null;
    const device = await kvmfrChoice(choice, vm.mappedShm ?? [], this.#roots);
    return device === null ? null : { device, size: file.sizeBytes, uid: file.uid, gid: file.gid, mode: file.mode };
  }

  /** The host context, or a refusal for a VM whose policy needs one; `vm` is whose changes it plans or undoes. */
  #hostContext(vm: string): HostContext {
    const base = this.#host ?? { roots: this.#roots, systemd: null };
    return { ...base, hugepagesHeldByOthers: (pageKiB) => this.#hugepagesOfOthers(vm, pageKiB) };
  }

  /** Hugepages of that size the other VMs' records hold (each record's `pages`, as hugepages.ts wrote it). */
  #hugepagesOfOthers(vm: string, pageKiB: number): number {
    let pages = 0;
    for (const [name, record] of this.#ledger.cached.machines) {
      if (name === vm) continue;
      for (const change of record.hostChanges ?? []) {
        const r = change.record as { kind: string; pageKiB?: unknown; pages?: unknown };
        if (r.kind === HUGEPAGES_KIND && r.pageKiB === pageKiB && Number.isSafeInteger(r.pages) && (r.pages as number) > 0) {
          pages += r.pages as number;
        }
      }
    }
    return pages;
  }

  get ledger(): DeviceLedger {
    return this.#ledger;
  }

  /**
   * Run the hook's stage for a VM, after every earlier event for the same VM.
   * `vm` (today's settings) is used by prepare only, and by started when
   * nothing was recorded; null for a VM the configuration does not manage.
   */
  handle(event: HookEvent, vm: ManagedVm | null): Promise<HookOutcome> {
    const stage = stageOf(event);
    const name = event.domainName;
    switch (stage) {
      case 'prepare':
        if (vm === null) return Promise.resolve(outcome(stage, `VM '${name}' is not managed by vfio-hookd`));
        return this.#queueFor(name).add(() => this.#prepare(vm)) as Promise<HookOutcome>;
      case 'started':
        return this.#queueFor(name).add(() => this.#started(name, vm)) as Promise<HookOutcome>;
      case 'release':
        return this.release(name);
      case 'reconnect':
        return this.#queueFor(name).add(async () => {
          await this.#ledger.read();
          const held = this.#held(name);
          return outcome(stage, `VM '${name}' reconnected; it holds ${held.length === 0 ? 'no devices' : held.join(', ')}`);
        }) as Promise<HookOutcome>;
      default:
        return Promise.resolve(outcome(stage, 'nothing to do'));
    }
  }

  /** Has this VM a record of a prepare, or claims? (Then its later stages have work.) */
  async knows(name: string): Promise<boolean> {
    const state = await this.#ledger.read();
    return state.machines.has(name) || [...state.claims.values()].some((c) => sameOwner(c.owner, vmOwner(name)));
  }

  async #prepare(vm: ManagedVm): Promise<HookOutcome> {
    const previous = (await this.#ledger.read()).machines.get(vm.name);
    const record: MachineRecord = {
      stage: 'preparing',
      devices: [...vm.devices],
      user: vm.user,
      units: [...vm.units],
      removeShmOnStop: vm.removeShmOnStop,
      // Files a previous prepare made stay ours until a release.
      shm: previous?.shm.filter((f) => f.action === 'created') ?? [],
      since: new Date().toISOString(),
    };
    // Looking Glass on kvmfr: the device stands in for that shm file (host-policy.ts kvmfrChoice).
    const kvmfr = await this.#kvmfr(vm);
    const shmFiles = kvmfr === null ? vm.shmFiles : vm.shmFiles.filter((f) => f.name !== vm.hostPolicy?.kvmfr?.shmName);
    // Checked before any side effect: a policy that needs systemd without a connection to it.
    const steps = vm.hostPolicy ? hostChangeSteps(vm.name, vm.devices, vm.hostPolicy, this.#hostContext(vm.name), kvmfr) : [];
    await this.#ledger.updateMachines((m) => m.set(vm.name, record));
    const shm: EnsureShmFileResult[] = [];
    const changes: HostChangeEntry[] = [];
    const applied: string[] = [];
    const changeWarnings: string[] = [];
    let detachedNow: readonly string[] = [];
    const applyPhase = async (phase: 'before-detach' | 'after-detach'): Promise<void> => {
      for (const step of steps.filter((s) => s.phase === phase)) {
        const change = await step.plan();
        const entry: HostChangeEntry = { phase: change.phase, describe: change.describe, record: change.record };
        changes.push(entry);
        // Write-ahead: the record is saved before the change is made, so a crash in between is undone at recovery.
        await this.#ledger.updateMachines((m) => {
          const current = m.get(vm.name) ?? record;
          m.set(vm.name, { ...current, hostChanges: [...(current.hostChanges ?? []), entry] });
        });
        this.#onStep(change.describe);
        await change.apply();
        applied.push(change.describe);
        changeWarnings.push(...(change.warnings ?? []));
      }
    };
    try {
      for (const file of shmFiles) {
        const result = await ensureShmFile(this.#spec(file), { trustedOwners: [...this.#trusted(), file.uid] });
        shm.push(result);
        await this.#ledger.updateMachines((m) => {
          const current = m.get(vm.name) ?? record;
          m.set(vm.name, { ...current, shm: mergeShm(current.shm, shmRecord(file, result, this.#roots.shm)) });
        });
      }
      await applyPhase('before-detach');
      const hold = vm.hold === 'boot' ? { hold: 'boot' as const } : {};
      const result = vm.devices.length > 0 ? await this.#ledger.detach(vmOwner(vm.name), vm.devices, vm.force, hold) : null;
      const detached = result?.moved ?? [];
      detachedNow = detached;
      await applyPhase('after-detach');
      await this.#ledger.updateMachines((m) => {
        const current = m.get(vm.name) ?? record;
        m.set(vm.name, { ...current, stage: 'prepared' });
      });
      const notes = [
        ...shm.flatMap((r) => r.warnings),
        ...changeWarnings,
        ...(result !== null && vm.givenToGuest !== undefined
          ? unassignedFunctions(result.plan, vm.givenToGuest, vm.name).map((u) => u.message)
          : []),
      ];
      const warnings = [...notes, ...(vm.devices.length > 0 ? await this.#takeSleepLock(vm.name) : [])];
      return {
        ...outcome(
          'prepare',
          `VM '${vm.name}' prepared: ${describeDetached(detached)}, ${shmFiles.length} shm file(s) ready` +
            (kvmfr === null ? '' : `, Looking Glass on ${kvmfr.device}`),
        ),
        shm,
        detached: [...detached],
        warnings,
        notes,
        hostChanges: applied,
      };
    } catch (error) {
      // In reverse: the after-detach changes, the devices this prepare moved, the before-detach changes, the files.
      const context = this.#hostContext(vm.name);
      await undoHostChanges(
        changes.filter((c) => c.phase === 'after-detach'),
        context,
      );
      if (detachedNow.length > 0) await this.#ledger.reattach(vmOwner(vm.name), detachedNow).catch(() => undefined);
      await undoHostChanges(
        changes.filter((c) => c.phase === 'before-detach'),
        context,
      );
      await this.#undoShm(shm);
      await this.#ledger
        .updateMachines((m) => {
          if (previous) m.set(vm.name, previous);
          else m.delete(vm.name);
        })
        .catch(() => undefined);
      throw error;
    }
  }

  async #started(name: string, vm: ManagedVm | null): Promise<HookOutcome> {
    const record = (await this.#ledger.read()).machines.get(name);
    const files: ShmFileWant[] = record
      ? record.shm.map(({ name: n, sizeBytes, uid, gid, mode }) => ({ name: n, sizeBytes, uid, gid, mode }))
      : [...(vm?.shmFiles ?? [])];
    if (files.length === 0 && record === undefined && vm === null) return outcome('started', 'nothing to do');
    const shm: EnsureShmFileResult[] = [];
    for (const file of files) {
      shm.push(await ensureShmFile(this.#spec(file), { allowResize: false, trustedOwners: [...this.#trusted(), file.uid] }));
    }
    return { ...outcome('started', `shm files of '${name}' checked`), shm, warnings: shm.flatMap((r) => r.warnings) };
  }

  /**
   * Release a VM from its record: every device it holds goes back, its sleep
   * lock goes, its recorded shm files are removed when the record says so.
   * Idempotent: a second release (or one after a refused prepare) finds
   * nothing and says so. Never looks at the configuration.
   */
  release(name: string): Promise<HookOutcome> {
    return this.#queueFor(name).add(async () => {
      const state = await this.#ledger.read();
      const record = state.machines.get(name);
      const context = this.#hostContext(name);
      const recorded = record?.hostChanges ?? [];
      const warnings: string[] = [];
      const hostChanges: string[] = [];
      const undo = async (phase: 'before-detach' | 'after-detach'): Promise<void> => {
        const list = recorded.filter((c) => c.phase === phase);
        if (list.length === 0) return;
        this.#onStep(
          `undoing ${list.length} host change(s) ${phase === 'after-detach' ? 'made after the detach' : 'made before the detach'}`,
        );
        const { undone, failures } = await undoHostChanges(list, context);
        hostChanges.push(...undone);
        warnings.push(...failures);
      };
      await undo('after-detach');
      // A reattach that fails throws here: the devices stay on vfio-pci, and giving the console or the display
      // manager back now would draw on nothing. The record stays, so a second release tries again.
      const result = await this.#ledger.reattach(vmOwner(name));
      await undo('before-detach');
      this.#sleepLock?.release(name);
      if (record?.removeShmOnStop) {
        for (const file of record.shm) {
          try {
            await removeShmFile(
              { root: this.#roots.shm, name: file.name, uid: file.uid },
              { trustedOwners: [...this.#trusted(), file.uid] },
            );
          } catch (error) {
            warnings.push(`Cannot remove ${file.path} (${(error as Error).message}), ignoring`);
          }
        }
      }
      if (record) await this.#ledger.updateMachines((m) => m.delete(name));
      const reattached = result ? [...result.moved] : [];
      const kept = this.#heldAtBoot(name);
      const stay = kept.length === 0 ? '' : `; ${kept.map((a) => `'${a}'`).join(', ')} stay on vfio-pci, held at boot for it`;
      const message =
        result === null && record === undefined && kept.length === 0
          ? `VM '${name}' holds nothing: nothing to release`
          : `VM '${name}' released: ${reattached.length} device(s) given back${stay}`;
      return { ...outcome('release', message), reattached, warnings, hostChanges };
    }) as Promise<HookOutcome>;
  }

  /**
   * Take the devices of VMs held at boot (at the daemon's start, after
   * recovery, before anyone is told it is ready), each on its VM's queue.
   * A VM whose devices cannot be taken (a process holds the card, another
   * VM claims it) keeps nothing and the others go on: its result says why.
   */
  async holdAtBoot(vms: readonly BootHold[]): Promise<BootHoldResult[]> {
    const results: BootHoldResult[] = [];
    for (const vm of vms) {
      results.push(
        (await this.#queueFor(vm.name).add(async (): Promise<BootHoldResult> => {
          try {
            const result = await this.#ledger.detach(vmOwner(vm.name), vm.devices, vm.force, { hold: 'boot' });
            const held = this.#heldAtBoot(vm.name);
            const claims = this.#ledger.cached.claims;
            const adopted = held.filter((a) => !result.moved.includes(a) && claims.get(a)?.originalKnown === false);
            return { name: vm.name, detached: [...result.moved], held, adopted, error: null };
          } catch (error) {
            const held = this.#heldAtBoot(vm.name);
            return { name: vm.name, detached: [], held, adopted: [], error: error instanceof Error ? error : new Error(String(error)) };
          }
        })) as BootHoldResult,
      );
    }
    return results;
  }

  /**
   * Finish or undo what a crash left, and make the claims agree with sysfs
   * (DeviceLedger.recover). Then a VM whose prepare never finished and that
   * recorded host changes is released as a failed prepare would have been
   * (its hook never got a reply, so QEMU never ran): devices back, host
   * changes undone in reverse, from its record alone. A prepared VM keeps
   * its changes (QEMU may be running): its release undoes them.
   */
  async recover(): Promise<string[]> {
    const notes = await this.#ledger.recover();
    const state = await this.#ledger.read();
    for (const [name, record] of state.machines) {
      if (record.stage !== 'preparing' || (record.hostChanges ?? []).length === 0) continue;
      const released = await this.release(name);
      notes.push(
        `VM '${name}' was being prepared when vfio-hookd stopped: ${released.message}; ` +
          `host changes undone: ${released.hostChanges?.length ?? 0}` +
          (released.warnings.length > 0 ? `; ${released.warnings.join('; ')}` : ''),
      );
    }
    return notes;
  }

  /**
   * Take the sleep lock for every VM that holds devices (after a restart of
   * the daemon, whose locks died with it). Returns the warnings.
   */
  async retakeSleepLocks(): Promise<string[]> {
    const state = await this.#ledger.read();
    const owners = new Set<string>();
    // A device held at boot for a VM that is not running keeps no lock: an idle card on vfio-pci does not mind a suspend.
    for (const claim of state.claims.values()) {
      if (claim.owner.kind === 'vm' && (claim.hold !== 'boot' || state.machines.has(claim.owner.name))) owners.add(claim.owner.name);
    }
    const warnings: string[] = [];
    for (const owner of owners) warnings.push(...(await this.#takeSleepLock(owner)));
    return warnings;
  }

  #held(vm: string): string[] {
    return [...this.#ledger.cached.claims].filter(([, c]) => sameOwner(c.owner, vmOwner(vm))).map(([a]) => a);
  }

  /** The devices held at boot for `vm`, in address order (from the state last read or saved). */
  #heldAtBoot(vm: string): string[] {
    return [...this.#ledger.cached.claims]
      .filter(([, c]) => c.hold === 'boot' && sameOwner(c.owner, vmOwner(vm)))
      .map(([a]) => a)
      .sort();
  }

  async #takeSleepLock(vm: string): Promise<string[]> {
    if (!this.#sleepLock) return [];
    try {
      await this.#sleepLock.take(vm, `VM '${vm}' owns ${this.#held(vm).join(', ')}`);
      return [];
    } catch (error) {
      return [
        `Cannot take logind's sleep inhibitor for VM '${vm}' (${(error as Error).message}); the host may suspend under the guest, ignoring`,
      ];
    }
  }

  /** Resolves when no hook and no device change is running or queued (for a clean stop). */
  async idle(): Promise<void> {
    await Promise.all([...this.#perVm.values()].map((q) => q.onIdle()));
    await this.#ledger.idle();
  }

  #queueFor(name: string): PQueue {
    let queue = this.#perVm.get(name);
    if (!queue) {
      queue = new PQueue({ concurrency: 1 });
      this.#perVm.set(name, queue);
    }
    return queue;
  }

  #spec(file: ShmFileWant) {
    return { root: this.#roots.shm, name: file.name, size: file.sizeBytes, uid: file.uid, gid: file.gid, mode: file.mode };
  }

  /** Put the shm files back as this prepare found them: remove created ones, restore repaired ones. */
  async #undoShm(done: readonly EnsureShmFileResult[]): Promise<void> {
    for (const result of [...done].reverse()) {
      const name = result.path.slice(result.path.lastIndexOf('/') + 1);
      try {
        if (result.action === 'created') {
          await removeShmFile(
            { root: this.#roots.shm, name, uid: result.after.uid },
            { trustedOwners: [...this.#trusted(), result.after.uid] },
          );
        } else if (result.action === 'repaired' && result.before) {
          const b = result.before;
          await ensureShmFile(
            { root: this.#roots.shm, name, size: b.size, uid: b.uid, gid: b.gid, mode: b.mode },
            { trustedOwners: [...this.#trusted(), result.after.uid, b.uid] },
          );
        }
      } catch {
        // Best effort: the error that caused the undo is the one reported.
      }
    }
  }
}

function shmRecord(file: ShmFileWant, result: EnsureShmFileResult, root: string): ShmRecord {
  return {
    name: file.name,
    path: result.path || `${root}/${file.name}`,
    sizeBytes: result.after.size,
    uid: result.after.uid,
    gid: result.after.gid,
    mode: result.after.mode,
    action: result.action,
  };
}

/** One entry per file name; a file this VM created earlier stays 'created' (it is still ours to remove). */
function mergeShm(list: readonly ShmRecord[], entry: ShmRecord): ShmRecord[] {
  const old = list.find((f) => f.name === entry.name);
  const merged = old?.action === 'created' ? { ...entry, action: 'created' as const } : entry;
  return [...list.filter((f) => f.name !== entry.name), merged];
}

function describeDetached(addresses: readonly string[]): string {
  return addresses.length === 0 ? 'no device moved' : `${addresses.join(', ')} on vfio-pci`;
}

export function outcome(stage: HookStage, message: string): HookOutcome {
  return { stage, message, shm: [], detached: [], reattached: [], warnings: [] };
}
