/**
 * Every change to devices and to the state file goes through here, one at a
 * time in this process (a queue) and across processes (the state lock), so
 * the daemon and `vfio-hookctl` can never lose each other's claims.
 *
 * Each operation is written ahead (the write-ahead record, `pending` in the
 * state file) before its first sysfs write, with every device's driver and
 * override as they were; after its last write the claims are settled from
 * what sysfs shows and the record is cleared, in one save:
 *
 *   load -> plan (refusals here, nothing written) -> save pending
 *        -> execute (rolled back in memory on failure) -> settle -> save
 *
 * A process killed anywhere in that sequence leaves either no record (nothing
 * was written yet) or a record that `recover()` at the next start uses: an
 * unfinished detach is undone (its hook never got a reply, so libvirt did not
 * start QEMU), an unfinished reattach is finished (the VM is gone). Then the
 * claims are settled against sysfs (see `#settle` and `recover`).
 *
 * Settling, the one rule for "who holds what" after any operation, success,
 * failure or crash: a device of the operation that is on vfio-pci keeps (or
 * gets) a claim; one that is not loses it. So a device that a failed rollback
 * left on vfio-pci is still owned, and its VM's release gives it back.
 */
import PQueue from 'p-queue';
import { VfioHookdError, q } from '../errors.js';
import type { PciEngine } from '../pci/engine.js';
import type { DeviceOrigin } from '../pci/executor.js';
import { VFIO_DRIVER } from '../pci/iommu-group.js';
import type { Plan } from '../pci/plan.js';
import { UNKNOWN_OWNER, describeOwner, sameOwner, type Owner } from '../pci/owner.js';
import { StateLock } from '../state/state-lock.js';
import {
  EMPTY_STATE,
  StateFile,
  type ClaimRecord,
  type DeviceBefore,
  type MachineRecord,
  type PendingOperation,
  type State,
} from '../state/state-file.js';

interface DeviceLedgerOptions {
  readonly engine: PciEngine;
  readonly state: StateFile;
  /** Longest to wait for another process's state lock. Default 30 000 ms. */
  readonly lockTimeoutMs?: number;
  /** Called after every successful state save (the crash tests count them). */
  readonly onSaved?: () => void;
  /** The clock for `since` stamps. Default `new Date()`. */
  readonly now?: () => Date;
}

/** How a detach holds its devices (see `DeviceLedger.detach`). */
export interface DetachOptions {
  /**
   * 'boot': the claims are marked held at boot (`hold = "boot"`): a release
   * of their VM leaves them on vfio-pci. A device that was on vfio-pci
   * already and not this owner's (the initrd bound it) is adopted with its
   * original driver unknown. Default: held while the VM runs.
   */
  readonly hold?: 'boot';
}

export interface OperationResult {
  readonly plan: Plan;
  /** Addresses whose driver changed. */
  readonly moved: readonly string[];
}

export class DeviceLedger {
  readonly #engine: PciEngine;
  readonly #file: StateFile;
  readonly #lock: StateLock;
  readonly #onSaved: (() => void) | undefined;
  readonly #now: () => Date;
  readonly #queue = new PQueue({ concurrency: 1 });
  /** The state as last loaded or saved by this process (read-only callers use it between operations). */
  #cached: State = EMPTY_STATE;

  constructor(options: DeviceLedgerOptions) {
    this.#engine = options.engine;
    this.#file = options.state;
    this.#lock = new StateLock(options.state.dir, options.lockTimeoutMs !== undefined ? { timeoutMs: options.lockTimeoutMs } : {});
    this.#onSaved = options.onSaved;
    this.#now = options.now ?? (() => new Date());
  }

  get file(): StateFile {
    return this.#file;
  }

  /** Run `work` with the state loaded, alone in this process and under the cross-process lock. */
  #exclusive<T>(work: (state: State) => Promise<T>): Promise<T> {
    return this.#queue.add(() =>
      this.#lock.with(async () => {
        this.#cached = await this.#file.load();
        return work(this.#cached);
      }),
    ) as Promise<T>;
  }

  async #save(state: State): Promise<void> {
    await this.#file.save(state);
    this.#cached = state;
    this.#onSaved?.();
  }

  /**
   * The current state, read afresh after any operation of this process. No
   * lock: every save is an atomic rename, so a reader sees a whole state.
   */
  read(): Promise<State> {
    return this.#queue.add(async () => {
      this.#cached = await this.#file.load();
      return this.#cached;
    }) as Promise<State>;
  }

  /** The state as this process last saw it, without touching the disk. */
  get cached(): State {
    return this.#cached;
  }

  /** Resolves when no operation is running or queued here. */
  idle(): Promise<void> {
    return this.#queue.onIdle();
  }

  /** Change the machine records (what a prepare did), saved at once. */
  updateMachines(change: (machines: Map<string, MachineRecord>) => void): Promise<void> {
    return this.#exclusive(async (state) => {
      const machines = new Map(state.machines);
      change(machines);
      await this.#save({ ...state, machines });
    });
  }

  /** Detach devices for `owner`, write-ahead, and record the claims. */
  detach(owner: Owner, addresses: readonly string[], force = false, options: DetachOptions = {}): Promise<OperationResult> {
    return this.#exclusive(async (state) => {
      const { plan } = await this.#engine.planDetach(addresses, { owner, claims: state.claims, force });
      return this.#run(state, plan, 'detach', owner, options.hold === 'boot');
    });
  }

  /**
   * Give back devices: those named, or (no addresses) every device `owner`
   * holds except those held at boot, which only a reattach by address gives
   * back. Any owner's claim may be given back unless its group is in use
   * (the plan refuses then, naming the VM).
   */
  reattach(owner: Owner, addresses?: readonly string[]): Promise<OperationResult | null> {
    return this.#exclusive(async (state) => {
      const targets = addresses ?? [...state.claims].filter(([, c]) => sameOwner(c.owner, owner) && c.hold !== 'boot').map(([a]) => a);
      if (targets.length === 0) return null;
      const { plan } = await this.#engine.planReattach(targets, { owner, claims: state.claims });
      return this.#run(state, plan, 'reattach', owner);
    });
  }

  async #run(state: State, plan: Plan, kind: 'detach' | 'reattach', owner: Owner, atBoot = false): Promise<OperationResult> {
    const moved = plan.devices.filter((d) => d.changes).map((d) => d.address);
    if (moved.length === 0) {
      // Nothing to write: only the claims change (a detach of devices already on vfio-pci).
      const claims = kind === 'detach' ? this.#claimsAfterDetach(state.claims, plan, owner) : dropClaims(state.claims, plan);
      if (atBoot) markHeldAtBoot(claims, state.claims, plan, owner);
      if (!sameClaims(claims, state.claims)) await this.#save({ ...state, claims });
      return { plan, moved };
    }
    const before: DeviceBefore[] = [];
    for (const d of plan.devices) {
      const binding = await this.#engine.binding(d.address);
      before.push({ address: d.address, driver: binding.driver, override: binding.override, group: d.group });
    }
    const pending: PendingOperation = { kind, owner, devices: before, since: this.#now().toISOString() };
    // Write ahead: nothing is touched when this save fails.
    await this.#save({ ...state, pending });

    let failure: unknown = null;
    try {
      await this.#engine.execute(plan);
    } catch (error) {
      failure = error;
    }
    const claims = await this.#settle(state.claims, pending, failure === null ? plan : null);
    // Only after a success: what a failed rollback left on vfio-pci stays an ordinary claim, which the VM's release gives back.
    if (atBoot && failure === null) markHeldAtBoot(claims, state.claims, plan, owner);
    try {
      await this.#save({ ...state, claims, pending: null });
    } catch (error) {
      if (failure !== null) throw failure;
      if (kind === 'detach') {
        // Never report success with a device nobody recorded: put them back.
        const notes = await this.#engine.restore(originsOf(before).reverse());
        await this.#file.save({ ...state, pending: null }).catch(() => undefined);
        throw new StateNotSaved(
          `Cannot record the detach of ${moved.map(q).join(', ')} in ${q(this.#file.path)} (${messageOf(error)}); ` +
            `the devices were put back (${notes.join('; ')}), refusing`,
        );
      }
      throw new StateNotSaved(
        `${moved.map(q).join(', ')} were given back, but ${q(this.#file.path)} could not be updated (${messageOf(error)}); ` +
          `their old claims are dropped at the next start`,
      );
    }
    if (failure !== null) throw failure;
    return { plan, moved };
  }

  /**
   * Claims after an operation, from what sysfs shows now for every device of
   * its record. `plan` is the executed plan after a success (every device of
   * a detach is then claimed, including those already on vfio-pci), null
   * after a failure or a crash (only devices moved onto vfio-pci by us keep a
   * claim).
   */
  async #settle(current: ReadonlyMap<string, ClaimRecord>, op: PendingOperation, plan: Plan | null): Promise<Map<string, ClaimRecord>> {
    const next = new Map(current);
    const since = this.#now().toISOString();
    for (const before of op.devices) {
      const now = await this.#engine.binding(before.address).catch(() => null);
      const existing = current.get(before.address);
      const onVfio = now !== null && isOnVfio(now.driver, now.override);
      if (!onVfio) {
        next.delete(before.address);
        continue;
      }
      if (op.kind === 'reattach') {
        // Still on vfio-pci after giving back: keep the claim unless vfio-pci is where it started.
        if (existing && existing.originalKnown && existing.originalDriver === VFIO_DRIVER) next.delete(before.address);
        continue;
      }
      const wasOnVfio = isOnVfio(before.driver, before.override);
      if (existing && (sameOwner(existing.owner, op.owner) || existing.owner.kind !== 'unknown')) continue;
      if (existing?.owner.kind === 'unknown') {
        if (plan !== null) next.set(before.address, { ...existing, owner: op.owner });
        continue;
      }
      if (plan === null && wasOnVfio) continue; // a failed detach claims only what it moved
      next.set(before.address, {
        owner: op.owner,
        originalDriver: before.driver,
        originalOverride: before.override,
        // vfio-pci with our own override and no record: nobody knows what it had.
        originalKnown: !(before.driver === null && before.override === VFIO_DRIVER),
        group: before.group,
        since,
      });
    }
    return next;
  }

  /** Claims after a detach that wrote nothing: every device of the plan is already on vfio-pci. */
  #claimsAfterDetach(current: ReadonlyMap<string, ClaimRecord>, plan: Plan, owner: Owner): Map<string, ClaimRecord> {
    const next = new Map(current);
    const since = this.#now().toISOString();
    for (const d of plan.devices) {
      const existing = current.get(d.address);
      if (existing && sameOwner(existing.owner, owner)) continue;
      if (existing?.owner.kind === 'unknown') {
        next.set(d.address, { ...existing, owner });
        continue;
      }
      next.set(d.address, { owner, originalDriver: d.driver, originalOverride: null, originalKnown: true, group: d.group, since });
    }
    return next;
  }

  /**
   * After a start (or a crash): finish or undo an unfinished operation, then
   * make the claims agree with sysfs. Never makes things worse:
   * - a claimed device that is driverless is bound again (to its recorded
   *   driver, or whatever the kernel probes when that is unknown) and loses
   *   its claim;
   * - a claimed device on vfio-pci keeps its claim; one on another driver, or
   *   gone, loses it;
   * - a device on vfio-pci with a `vfio-pci` override and no claim (driverless
   *   with that override too) becomes a claim of unknown owner, bound to
   *   vfio-pci if it was driverless.
   * A damaged state file is moved aside first. Returns one sentence per change.
   */
  recover(): Promise<string[]> {
    return this.#queue.add(() =>
      this.#lock.with(async () => {
        const notes: string[] = [];
        const { state: loaded, damaged } = await this.#file.loadOrSetAside(this.#now());
        if (damaged !== null) notes.push(`${damaged}; rebuilding what sysfs shows`);
        let state = loaded;
        const pending = state.pending;
        if (pending !== null) {
          if (pending.kind === 'detach') {
            const undone = await this.#engine.restore(originsOf(pending.devices).reverse());
            notes.push(`An unfinished detach for ${describeOwner(pending.owner)} was undone: ${undone.join('; ')}`);
          } else {
            const targets = pending.devices.map((d) => targetOf(d, state.claims.get(d.address)));
            const done = await this.#engine.restore(targets);
            notes.push(`An unfinished reattach for ${describeOwner(pending.owner)} was finished: ${done.join('; ')}`);
          }
          state = { ...state, claims: await this.#settle(state.claims, pending, null), pending: null };
        }

        const claims = new Map(state.claims);
        // Only the devices: recovery needs their drivers, not who holds them or what the host depends on
        // (reading every process's descriptors is the costly part of a full inspect, and nothing here uses it).
        const devices = await this.#engine.devices();
        for (const [address, claim] of state.claims) {
          const device = devices.get(address);
          if (device === undefined) {
            claims.delete(address);
            notes.push(`Claim of ${describeOwner(claim.owner)} on ${q(address)} dropped: the device is gone`);
            continue;
          }
          if (isOnVfio(device.driver, device.driverOverride) && device.driver !== null) continue;
          if (device.driver === null) {
            // Held at boot: back to vfio-pci, where it stays; otherwise to the driver it had.
            const target =
              claim.hold === 'boot'
                ? { address, driver: VFIO_DRIVER, override: VFIO_DRIVER }
                : targetOf({ address, driver: null, override: null, group: claim.group }, claim);
            const done = await this.#engine.restore([target]);
            const after = await this.#engine.binding(address).catch(() => null);
            if (after !== null && isOnVfio(after.driver, after.override)) continue; // left on vfio-pci: still theirs
            claims.delete(address);
            notes.push(`${q(address)} of ${describeOwner(claim.owner)} was driverless: ${done.join('; ')}; its claim is dropped`);
            continue;
          }
          claims.delete(address);
          notes.push(
            `Claim of ${describeOwner(claim.owner)} on ${q(address)} dropped: the device is on ${q(device.driver)}, not on vfio-pci`,
          );
        }
        for (const device of devices.values()) {
          if (claims.has(device.address) || device.driverOverride !== VFIO_DRIVER) continue;
          if (device.driver !== null && device.driver !== VFIO_DRIVER) continue;
          if (device.driver === null) {
            await this.#engine.restore([{ address: device.address, driver: VFIO_DRIVER, override: VFIO_DRIVER }]);
          }
          claims.set(device.address, {
            owner: UNKNOWN_OWNER,
            originalDriver: null,
            originalOverride: null,
            originalKnown: false,
            group: device.iommuGroup,
            since: this.#now().toISOString(),
          });
          notes.push(
            `${q(device.address)} is on vfio-pci with no record of who took it: kept as a claim of unknown owner; ` +
              `give it back with 'vfio-hookctl reattach ${device.address}'`,
          );
        }
        const next: State = { ...state, claims, pending: null };
        if (damaged !== null || pending !== null || !sameClaims(claims, loaded.claims)) await this.#save(next);
        else this.#cached = next;
        return notes;
      }),
    ) as Promise<string[]>;
  }
}

/** The state-file save of an operation failed. */
export class StateNotSaved extends VfioHookdError {
  override readonly name = 'StateNotSaved';
  readonly dbusName = 'org.vfiohookd1.StateNotSaved';
}

function isOnVfio(driver: string | null, override: string | null): boolean {
  return driver === VFIO_DRIVER || (driver === null && override === VFIO_DRIVER);
}

function originsOf(devices: readonly DeviceBefore[]): DeviceOrigin[] {
  return devices.map((d) => ({ address: d.address, driver: d.driver, override: d.override }));
}

/** Where a reattach takes a device: its claim's original, or the kernel's choice when unknown. */
function targetOf(device: DeviceBefore, claim: ClaimRecord | undefined): DeviceOrigin {
  if (claim === undefined) return { address: device.address, driver: device.driver, override: device.override };
  if (!claim.originalKnown) return { address: device.address, driver: null, override: null, anyDriver: true };
  return { address: device.address, driver: claim.originalDriver, override: claim.originalOverride };
}

function dropClaims(current: ReadonlyMap<string, ClaimRecord>, plan: Plan): Map<string, ClaimRecord> {
  const next = new Map(current);
  for (const d of plan.devices) {
    const claim = current.get(d.address);
    if (claim && (!claim.originalKnown || claim.originalDriver === d.driver || !isOnVfio(d.driver, null))) next.delete(d.address);
  }
  return next;
}

/**
 * Mark the claims of a boot hold: every device of `plan` that `owner` now
 * claims is held at boot. One that was on vfio-pci before the plan ran and
 * was not already this owner's (the initrd put it there; recovery made it a
 * claim of unknown owner, or no override said anything) is adopted with its
 * original driver unknown: vfio-pci was not what it had, and what it had
 * nobody recorded. A reattach by hand then lets the kernel choose.
 */
function markHeldAtBoot(claims: Map<string, ClaimRecord>, before: ReadonlyMap<string, ClaimRecord>, plan: Plan, owner: Owner): void {
  for (const d of plan.devices) {
    const claim = claims.get(d.address);
    if (claim === undefined || !sameOwner(claim.owner, owner)) continue;
    const prior = before.get(d.address);
    const adopted = !d.changes && !(prior !== undefined && sameOwner(prior.owner, owner));
    claims.set(
      d.address,
      adopted ? { ...claim, originalDriver: null, originalOverride: null, originalKnown: false, hold: 'boot' } : { ...claim, hold: 'boot' },
    );
  }
}

function sameClaims(a: ReadonlyMap<string, ClaimRecord>, b: ReadonlyMap<string, ClaimRecord>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (JSON.stringify(v) !== JSON.stringify(b.get(k))) return false;
  return true;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
