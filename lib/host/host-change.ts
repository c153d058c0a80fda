/**
 * A change to the host around a VM (busy-card policies, single-GPU hand-over,
 * CPU isolation, hugepages, reset methods): planned as data, recorded before
 * it is made, read back after, and undone from the record alone.
 *
 * The contract every kind keeps:
 * - `plan` (the kind's own function) reads what it needs and returns a
 *   HostChange whose `record` holds everything `undo` will need (the values
 *   as they were before), with no side effect yet.
 * - The lifecycle saves `record` in the VM's machine record (state.json)
 *   before `apply` runs (write-ahead), so a crash between the two is undone
 *   at recovery from the record.
 * - `apply` makes the change and reads it back; it throws a sentence (what,
 *   why, how to fix) when the host did not take it. The caller then runs
 *   `undo(record)`: apply need not clean up after itself.
 * - `undo` puts back what the record says and is idempotent: undoing a
 *   change never made, or made twice, leaves the host as the record found
 *   it. It never reads today's configuration.
 *
 * Prepare applies the VM's changes in order (`before-detach` ones, the
 * detach, `after-detach` ones); release, a failed prepare and recovery undo
 * them in reverse.
 */
import * as v from 'valibot';

import { DamagedState } from '../errors.js';
import type { KernelPort } from '../pci/kernel-port.js';
import type { HostRoots } from '../roots.js';
import type { TunableFiles } from './tunable-files.js';

/** What `undo` needs, saved in state.json: plain JSON, `kind` names the undoer. */
export interface HostChangeRecord {
  readonly kind: string;
  readonly [field: string]: unknown;
}

export interface HostChange<R extends HostChangeRecord = HostChangeRecord> {
  readonly record: R;
  /** One line for the journal and StepStarted: what apply does ("stop display-manager.service"). */
  readonly describe: string;
  /** Before the devices are detached or after. */
  readonly phase: 'before-detach' | 'after-detach';
  apply(): Promise<void>;
  /** Problems planning found that did not stop it (each ending in ', ignoring'), for the hook's outcome. Default: none. */
  readonly warnings?: readonly string[];
}

/** Reaching the host: the injected roots and, where a kind needs it, the system manager. */
export interface HostContext {
  readonly roots: HostRoots;
  /** systemd's manager (org.freedesktop.systemd1) on the system bus; null where there is none (a kind that needs it refuses at plan time). */
  readonly systemd: SystemdManager | null;
  /**
   * The kernel port (real: sysfs writes in the writer child, bounded by a
   * timeout; simulated: lib/sim). Added for the kinds that write sysfs
   * (DRM uevents, vtconsole bind, platform framebuffer unbind); optional so
   * a kind that does not write sysfs needs none. A kind that needs it and
   * finds none refuses at plan time.
   */
  readonly kernel?: KernelPort;
  /**
   * The kernel tunables hugepages and reset-method write (tunable-files.ts).
   * Default: the files themselves; the sim tier passes its simulated pool.
   */
  readonly tunables?: TunableFiles;
  /**
   * Hugepages of `pageKiB` that the other VMs' records hold reserved now
   * (the lifecycle sums its machine records), so a release gives back only
   * its own VM's (hugepages.ts). Absent: not known, and undo keeps to the
   * record's `before`.
   */
  readonly hugepagesHeldByOthers?: (pageKiB: number) => number;
  /** Where kvmfr's module options are read (lib/shm/kvmfr.ts MODPROBE_DIRS by default); tests pass their own. */
  readonly modprobeDirs?: readonly string[];
}

/** The few systemd Manager calls the host changes use, each waiting for its job where it makes one. */
export interface SystemdManager {
  /** StartUnit/StopUnit in mode "replace", resolved when its JobRemoved says done; rejects with the job's result otherwise. */
  startUnit(name: string): Promise<void>;
  stopUnit(name: string): Promise<void>;
  /** `ActiveState` of a unit ('inactive' when not loaded). */
  activeState(name: string): Promise<string>;
  /** SetUnitProperties(name, runtime = true, [(property, value)]). */
  setRuntimeProperty(name: string, property: string, signature: string, value: unknown): Promise<void>;
  /** A property of the unit's own interface (e.g. Slice's AllowedCPUs, an `ay` bitmask). */
  unitProperty(name: string, iface: string, property: string): Promise<unknown>;
}

export type HostChangeUndo = (record: HostChangeRecord, context: HostContext) => Promise<void>;

/**
 * A record read back from state.json, checked before undo acts on it: the
 * file crosses a boundary (a damaged disk, a hand edit). A record that does
 * not fit is never guessed at: DamagedState says what to put right by hand.
 *
 * @param undoes what undo would have put back, and how to do it by hand.
 */
export function checkedRecord<S extends v.GenericSchema>(schema: S, record: unknown, undoes: string): v.InferOutput<S> {
  const parsed = v.safeParse(schema, record);
  if (!parsed.success) throw new DamagedState(`The record of this change is not valid, so it cannot be undone; put back ${undoes}`);
  return parsed.output;
}
