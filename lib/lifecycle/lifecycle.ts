/**
 * The lifecycle table of DESIGN.md, run for one VM at a time:
 *
 * | stage     | what happens                                                       |
 * |-----------|--------------------------------------------------------------------|
 * | prepare   | create or repair the shm files, detach the devices; on failure,    |
 * |           | undo what this stage did (files removed or restored, devices back) |
 * | started   | re-check the shm files (QEMU may have created them): owner, mode,  |
 * |           | never their size (QEMU has them mapped)                            |
 * | stopped   | nothing yet (the user agent stops units: agent issue)              |
 * | release   | reattach the devices; remove shm files when configured             |
 * | reconnect | nothing changes: state is read back from disk                      |
 * | other     | nothing                                                            |
 *
 * Operations for one VM run in order (a queue per VM); changes to devices
 * and to the state file run one at a time across VMs, so two VMs can never
 * both claim a GPU. Not yet here (later issues): the sleep inhibitor and the
 * user units.
 */
import PQueue from 'p-queue';
import type { HostRoots } from '../roots.js';
import type { PciEngine } from '../pci/engine.js';
import { VFIO_DRIVER } from '../pci/iommu-group.js';
import { StateFile, type ClaimRecord } from '../state/state-file.js';
import { ensureShmFile, removeShmFile, type EnsureShmFileResult } from '../shm/index.js';
import { stageOf, type HookEvent, type HookStage } from './hook-event.js';

/** Everything the lifecycle needs to know about a managed VM (from the configuration and the domain XML). */
export interface ManagedVm {
  readonly name: string;
  readonly devices: readonly string[];
  /** The VM's user, owner of every shm file (each `shmFiles[].uid` is the same); 0 when it has none. */
  readonly uid: number;
  /** Each shm file `/dev/shm/<name>` with its size and its own owner, group and mode (e.g. 0o660): Looking Glass and Scream may differ. */
  readonly shmFiles: readonly { readonly name: string; readonly sizeBytes: number; readonly uid: number; readonly gid: number; readonly mode: number }[];
  /** Ignore the host-dependency safety rail. */
  readonly force: boolean;
  readonly removeShmOnStop: boolean;
}

/** A lock that keeps the host from suspending (logind's sleep inhibitor), one per VM. */
export interface SleepLock {
  take(vm: string, why: string): Promise<void>;
  release(vm: string): void;
}

export interface LifecycleOptions {
  /** Held from a prepare that moved devices to the VM's release. Default: none. */
  readonly sleepLock?: SleepLock;
  readonly engine: PciEngine;
  readonly roots: HostRoots;
  /** Uids that may already own an shm file (root and the qemu user: QEMU creates missing files). */
  readonly trustedShmOwners: readonly number[];
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
}

export class Lifecycle {
  readonly #engine: PciEngine;
  readonly #roots: HostRoots;
  readonly #trusted: readonly number[];
  readonly #sleepLock: SleepLock | undefined;
  readonly #state: StateFile;
  readonly #perVm = new Map<string, PQueue>();
  /** Device and state changes, one at a time across VMs. */
  readonly #devices = new PQueue({ concurrency: 1 });

  constructor(options: LifecycleOptions) {
    this.#engine = options.engine;
    this.#roots = options.roots;
    this.#trusted = options.trustedShmOwners;
    this.#sleepLock = options.sleepLock;
    this.#state = new StateFile(options.roots.run);
  }

  get state(): StateFile {
    return this.#state;
  }

  /** Run the hook's stage for a VM, after every earlier event for the same VM. */
  handle(event: HookEvent, vm: ManagedVm | null): Promise<HookOutcome> {
    const stage = stageOf(event);
    if (vm === null || stage === 'none') {
      return Promise.resolve(outcome(stage, vm === null ? `VM '${event.domainName}' is not managed by vfio-hookd` : 'nothing to do'));
    }
    return this.#queueFor(vm.name).add(() => this.#run(stage, vm));
  }

  async #run(stage: HookStage, vm: ManagedVm): Promise<HookOutcome> {
    switch (stage) {
      case 'prepare':
        return this.#prepare(vm);
      case 'started': {
        const shm = await this.#ensureShm(vm, false);
        return { ...outcome(stage, `shm files of '${vm.name}' checked`), shm };
      }
      case 'release':
        return this.#release(vm);
      case 'reconnect': {
        const claims = await this.#state.load();
        const owned = [...claims].filter(([, c]) => c.owner === vm.name).map(([a]) => a);
        return outcome(stage, `VM '${vm.name}' reconnected; it holds ${owned.length === 0 ? 'no devices' : owned.join(', ')}`);
      }
      default:
        return outcome(stage, 'nothing to do');
    }
  }

  async #prepare(vm: ManagedVm): Promise<HookOutcome> {
    const shm: EnsureShmFileResult[] = [];
    try {
      for (const file of vm.shmFiles) {
        shm.push(await ensureShmFile(this.#spec(vm, file), { trustedOwners: [...this.#trusted, vm.uid] }));
      }
      const detached = vm.devices.length > 0 ? await this.detach(vm.name, vm.devices, vm.force) : [];
      const warnings = vm.devices.length > 0 ? await this.#takeSleepLock(vm.name) : [];
      return {
        ...outcome('prepare', `VM '${vm.name}' prepared: ${describeDetached(detached)}, ${vm.shmFiles.length} shm file(s) ready`),
        shm,
        detached,
        warnings,
      };
    } catch (error) {
      await this.#undoShm(vm, shm);
      throw error;
    }
  }

  async #release(vm: ManagedVm): Promise<HookOutcome> {
    const reattached = await this.reattach(vm.name);
    this.#sleepLock?.release(vm.name);
    if (vm.removeShmOnStop) {
      for (const file of vm.shmFiles) {
        await removeShmFile({ root: this.#roots.shm, name: file.name, uid: vm.uid }, { trustedOwners: [...this.#trusted, vm.uid] });
      }
    }
    return { ...outcome('release', `VM '${vm.name}' released: ${reattached.length} device(s) given back`), reattached };
  }

  /**
   * Detach devices for `owner` (a VM, or a caller of DetachDevice) and record
   * the claims. Runs on the one queue for device and state changes.
   * Returns the addresses that moved.
   */
  detach(owner: string, addresses: readonly string[], force = false): Promise<string[]> {
    return this.#devices.add(async () => {
      const claims = await this.#state.load();
      const result = await this.#engine.detach(addresses, { owner, claims: asClaims(claims), force });
      const groups = new Map(result.plan.devices.map((d) => [d.address, d.group]));
      await this.#state.save(StateFile.withClaims(claims, result.claims, groups));
      return result.plan.devices.filter((d) => d.changes).map((d) => d.address);
    });
  }

  /**
   * Give back devices claimed by `owner` (all of them when `addresses` is
   * omitted) and drop their claims. Returns the addresses that moved.
   */
  reattach(owner: string, addresses?: readonly string[]): Promise<string[]> {
    return this.#devices.add(async () => {
      const claims = await this.#state.load();
      const targets = addresses ?? [...claims].filter(([, c]) => c.owner === owner).map(([a]) => a);
      if (targets.length === 0) return [];
      const result = await this.#engine.reattach(targets, { owner, claims: asClaims(claims) });
      const next = new Map(claims);
      for (const a of result.released) next.delete(a);
      await this.#state.save(next);
      return result.plan.devices.filter((d) => d.changes).map((d) => d.address);
    });
  }

  /**
   * Release a VM the configuration no longer manages but which still holds
   * devices (its table was removed while it ran): its devices go back all the
   * same. Nothing else is known of it, so no shm file is touched.
   */
  async releaseOwner(name: string): Promise<HookOutcome> {
    return this.#queueFor(name).add(async () => {
      const reattached = await this.reattach(name);
      this.#sleepLock?.release(name);
      return { ...outcome('release', `VM '${name}' released: ${reattached.length} device(s) given back`), reattached };
    });
  }

  /**
   * Compare the state file with sysfs after a restart: a claimed device that
   * is no longer on vfio-pci (someone rebound it, or the host rebooted
   * without clearing /run) loses its claim. Changes no driver. Returns one
   * sentence per dropped claim.
   */
  reconcile(): Promise<string[]> {
    return this.#devices.add(async () => {
      const claims = await this.#state.load();
      if (claims.size === 0) return [];
      const snapshot = await this.#engine.inspect();
      const notes: string[] = [];
      const next = new Map(claims);
      for (const [address, claim] of claims) {
        const device = snapshot.devices.get(address);
        const onVfio = device !== undefined && (device.driver === VFIO_DRIVER || (device.driver === null && device.driverOverride === VFIO_DRIVER));
        if (!onVfio) {
          next.delete(address);
          notes.push(
            `Claim of '${claim.owner}' on '${address}' dropped: the device is ${device === undefined ? 'gone' : `on '${device.driver ?? 'no driver'}'`}, not on vfio-pci`,
          );
        }
      }
      if (notes.length > 0) await this.#state.save(next);
      return notes;
    });
  }

  /**
   * Take the sleep lock for every VM that holds devices (after a restart of
   * the daemon, whose locks died with it); `isVm` tells VMs from other
   * owners (a DetachDevice caller). Returns the warnings.
   */
  async retakeSleepLocks(isVm: (owner: string) => boolean): Promise<string[]> {
    const owners = new Set([...(await this.#state.load()).values()].map((c) => c.owner).filter(isVm));
    const warnings: string[] = [];
    for (const owner of owners) warnings.push(...(await this.#takeSleepLock(owner)));
    return warnings;
  }

  async #takeSleepLock(vm: string): Promise<string[]> {
    if (!this.#sleepLock) return [];
    const held = [...(await this.#state.load())].filter(([, c]) => c.owner === vm).map(([a]) => a);
    try {
      await this.#sleepLock.take(vm, `VM '${vm}' owns ${held.join(', ')}`);
      return [];
    } catch (error) {
      return [`Cannot take logind's sleep inhibitor for VM '${vm}' (${(error as Error).message}); the host may suspend under the guest, ignoring`];
    }
  }

  /** Current claims, by address (for listings). */
  claims(): Promise<ReadonlyMap<string, ClaimRecord>> {
    return this.#state.load();
  }

  /** Resolves when no hook and no device change is running or queued (for a clean stop). */
  async idle(): Promise<void> {
    await Promise.all([...this.#perVm.values()].map((q) => q.onIdle()));
    await this.#devices.onIdle();
  }

  #queueFor(name: string): PQueue {
    let queue = this.#perVm.get(name);
    if (!queue) {
      queue = new PQueue({ concurrency: 1 });
      this.#perVm.set(name, queue);
    }
    return queue;
  }

  #spec(_vm: ManagedVm, file: ManagedVm['shmFiles'][number]) {
    return { root: this.#roots.shm, name: file.name, size: file.sizeBytes, uid: file.uid, gid: file.gid, mode: file.mode };
  }

  /** Put the shm files back as this prepare found them: remove created ones, restore repaired ones. */
  async #undoShm(vm: ManagedVm, done: readonly EnsureShmFileResult[]): Promise<void> {
    for (const result of [...done].reverse()) {
      const name = result.path.slice(result.path.lastIndexOf('/') + 1);
      try {
        if (result.action === 'created') {
          await removeShmFile({ root: this.#roots.shm, name, uid: vm.uid }, { trustedOwners: [...this.#trusted, vm.uid] });
        } else if (result.action === 'repaired' && result.before) {
          const b = result.before;
          await ensureShmFile(
            { root: this.#roots.shm, name, size: b.size, uid: b.uid, gid: b.gid, mode: b.mode },
            { trustedOwners: [...this.#trusted, vm.uid, b.uid] },
          );
        }
      } catch {
        // Best effort: the error that caused the undo is the one reported.
      }
    }
  }

  async #ensureShm(vm: ManagedVm, allowResize: boolean): Promise<EnsureShmFileResult[]> {
    const out: EnsureShmFileResult[] = [];
    for (const file of vm.shmFiles) {
      out.push(await ensureShmFile(this.#spec(vm, file), { allowResize, trustedOwners: [...this.#trusted, vm.uid] }));
    }
    return out;
  }
}

function asClaims(records: ReadonlyMap<string, ClaimRecord>) {
  return new Map([...records].map(([a, r]) => [a, { owner: r.owner, originalDriver: r.originalDriver, originalOverride: r.originalOverride }]));
}

function describeDetached(addresses: readonly string[]): string {
  return addresses.length === 0 ? 'no device moved' : `${addresses.join(', ')} on vfio-pci`;
}

function outcome(stage: HookStage, message: string): HookOutcome {
  return { stage, message, shm: [], detached: [], reattached: [], warnings: [] };
}
