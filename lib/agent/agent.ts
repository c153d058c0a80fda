/**
 * The per-user agent's logic: which of the daemon's machines are this user's,
 * and which user units each wants; start them on the user's manager while the
 * machine is `running`, stop them when it is `stopped`, `released` or
 * `failed` (or leaves the daemon's configuration).
 *
 * Ownership and units (see agent-config.ts):
 * - the Machine's `User` names this user (by name or uid): it is ours, and
 *   its units are the Machine's `Units` plus the agent.toml ones for it;
 * - `User` is empty, or the daemon has no `User` property: it is ours only
 *   when agent.toml has a `[vm.NAME]` table, with those units (plus `Units`);
 * - `User` names another user: never ours.
 *
 * Each machine has one worker that converges the units to the wanted state
 * (one job set at a time; a change while it works is picked up when it ends).
 * A unit that fails to start (job result other than `done`, a D-Bus error, an
 * invalid name, or `ActiveState` `failed` after starting) is logged once
 * (MESSAGE_ID UNIT_FAILED) and listed in `failures`; it is not retried until
 * the machine is `running` again after a stop.
 */
import { validateUnitName } from '../names/unit-name.js';
import type { MachineState } from '../bus/dbus-types.js';
import { MessageId } from '../systemd/index.js';
import type { AgentConfig } from './agent-config.js';
import type { MachineView } from './machine-follower.js';
import type { JobOutcome } from './user-systemd.js';

export interface AgentIdentity {
  readonly name: string;
  readonly uid: number;
}

/** The user manager, as much as the agent needs (UserSystemd). */
interface UnitManager {
  startUnit(unit: string): Promise<JobOutcome>;
  stopUnit(unit: string): Promise<JobOutcome>;
  activeState(unit: string): Promise<string>;
  onActiveState(listener: (unit: string, activeState: string) => void): void;
}

/** Logging, as much as the agent needs (lib/systemd Journal). */
export interface AgentLog {
  info(message: string, fields?: Record<string, string | undefined>): void;
  warning(message: string, fields?: Record<string, string | undefined>): void;
  error(message: string, fields?: Record<string, string | undefined>): void;
}

export interface UnitFailure {
  readonly machine: string;
  readonly unit: string;
  /** JobRemoved's result, 'error: TEXT' for a refused call, 'invalid: TEXT' for a bad name, or 'failed after start'. */
  readonly reason: string;
}

interface AgentOptions {
  readonly identity: AgentIdentity;
  readonly manager: UnitManager;
  readonly config: () => AgentConfig;
  readonly log: AgentLog;
  /** Called after every change of `activeUnits` or `failures`. */
  readonly onChange?: () => void;
}

type Want = 'active' | 'inactive';

interface Entry {
  view: MachineView;
  want: Want | null;
  applied: Want | null;
  working: boolean;
  /** Units this agent started and believes active. */
  readonly started: Set<string>;
  /** Failures of the current run, by unit. */
  readonly failed: Map<string, string>;
  gone: boolean;
}

/** States in which a machine's units are stopped; `running` starts them, the others leave them be. */
const STOP_STATES: ReadonlySet<MachineState | ''> = new Set<MachineState>(['stopped', 'releasing', 'released', 'failed']);

export class Agent {
  readonly #opts: AgentOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #idle = new Set<() => void>();

  constructor(options: AgentOptions) {
    this.#opts = options;
    options.manager.onActiveState((unit, state) => this.#activeStateChanged(unit, state));
  }

  /** Units started by this agent and active, sorted. */
  get activeUnits(): string[] {
    return [...new Set([...this.#entries.values()].flatMap((e) => [...e.started]))].sort();
  }

  /** Units that failed in their machine's current run. */
  get failures(): UnitFailure[] {
    return [...this.#entries.values()].flatMap((e) => [...e.failed].map(([unit, reason]) => ({ machine: e.view.name, unit, reason })));
  }

  /** Whether the machine is this user's. */
  isMine(view: MachineView): boolean {
    const { name, uid } = this.#opts.identity;
    if (view.user !== null && view.user !== '') return view.user === name || view.user === String(uid);
    return this.#opts.config().vms.has(view.name);
  }

  /** The units the machine wants, as given (validated when started). */
  unitsOf(view: MachineView): string[] {
    return [...new Set([...(view.units ?? []), ...(this.#opts.config().vms.get(view.name) ?? [])])];
  }

  /** A machine was read or changed. */
  machine(view: MachineView): void {
    let entry = this.#entries.get(view.path);
    if (!entry) {
      entry = { view, want: null, applied: null, working: false, started: new Set(), failed: new Map(), gone: false };
      this.#entries.set(view.path, entry);
    }
    entry.view = view;
    entry.gone = false;
    if (this.isMine(view)) {
      if (view.state === 'running') entry.want = 'active';
      else if (STOP_STATES.has(view.state)) entry.want = 'inactive';
    } else if (entry.started.size > 0 || entry.applied === 'active') {
      entry.want = 'inactive'; // given to another user: stop what we started
    }
    this.#kick(entry);
  }

  /** A machine left the daemon's configuration: stop what we started for it. */
  machineGone(path: string): void {
    const entry = this.#entries.get(path);
    if (!entry) return;
    entry.gone = true;
    entry.want = 'inactive';
    this.#kick(entry);
  }

  /** Resolves when no machine has work in flight (for tests and an orderly stop). */
  idle(): Promise<void> {
    if ([...this.#entries.values()].every((e) => !e.working)) return Promise.resolve();
    return new Promise((resolve) => this.#idle.add(resolve));
  }

  #kick(entry: Entry): void {
    if (entry.working || entry.want === null || entry.want === entry.applied) {
      this.#maybeForget(entry);
      return;
    }
    entry.working = true;
    void (async () => {
      try {
        while (entry.want !== null && entry.want !== entry.applied) {
          const target: Want = entry.want;
          if (target === 'active') await this.#startAll(entry);
          else await this.#stopAll(entry);
          entry.applied = target;
        }
      } catch (error) {
        this.#opts.log.error(`Agent error for VM '${entry.view.name}': ${(error as Error).message}`, { VFIO_DOMAIN: entry.view.name });
      } finally {
        entry.working = false;
        this.#maybeForget(entry);
        if ([...this.#entries.values()].every((e) => !e.working)) {
          for (const resolve of [...this.#idle]) resolve();
          this.#idle.clear();
        }
      }
    })();
  }

  #maybeForget(entry: Entry): void {
    if (entry.gone && !entry.working && entry.started.size === 0) {
      this.#entries.delete(entry.view.path);
      if (entry.failed.size > 0) this.#opts.onChange?.();
    }
  }

  #fail(entry: Entry, unit: string, reason: string): void {
    if (entry.failed.has(unit)) return; // reported once per run
    entry.failed.set(unit, reason);
    entry.started.delete(unit);
    this.#opts.log.error(`User unit '${unit}' of VM '${entry.view.name}' failed (${reason}); not retried until the VM starts again`, {
      MESSAGE_ID: MessageId.UNIT_FAILED,
      VFIO_DOMAIN: entry.view.name,
      UNIT: unit,
      UNIT_RESULT: reason,
    });
    this.#opts.onChange?.();
  }

  async #startAll(entry: Entry): Promise<void> {
    const name = entry.view.name;
    // A new run: earlier failures are forgotten, each unit gets one try.
    if (entry.failed.size > 0) {
      entry.failed.clear();
      this.#opts.onChange?.();
    }
    const units = this.unitsOf(entry.view);
    if (units.length === 0) return;
    this.#opts.log.info(`VM '${name}' is running: starting ${units.map((u) => `'${u}'`).join(', ')}`, { VFIO_DOMAIN: name });
    await Promise.all(
      units.map(async (unit) => {
        try {
          validateUnitName(unit);
        } catch (error) {
          this.#fail(entry, unit, `invalid: ${(error as Error).message}`);
          return;
        }
        const outcome = await this.#opts.manager.startUnit(unit);
        if (outcome.result !== 'done') {
          this.#fail(entry, unit, outcome.result === 'error' ? `error: ${outcome.message ?? ''}` : `job ${outcome.result}`);
          return;
        }
        entry.started.add(unit);
        this.#opts.onChange?.();
        // A Type=simple service is "started" once forked; one that died at once shows here or in ActiveState signals.
        if ((await this.#opts.manager.activeState(unit)) === 'failed') this.#fail(entry, unit, 'failed after start');
      }),
    );
  }

  async #stopAll(entry: Entry): Promise<void> {
    const name = entry.view.name;
    const valid = this.unitsOf(entry.view).filter((u) => {
      try {
        validateUnitName(u);
        return true;
      } catch {
        return false;
      }
    });
    // Stopping a unit that is not running is a no-op job: also covers units started before this agent did.
    const units = this.isMine(entry.view) ? [...new Set([...entry.started, ...valid])] : [...entry.started];
    if (units.length === 0) return;
    this.#opts.log.info(
      `VM '${name}' is ${entry.gone ? 'no longer managed' : entry.view.state}: stopping ${units.map((u) => `'${u}'`).join(', ')}`,
      {
        VFIO_DOMAIN: name,
      },
    );
    await Promise.all(
      units.map(async (unit) => {
        const outcome = await this.#opts.manager.stopUnit(unit);
        entry.started.delete(unit);
        if (outcome.result !== 'done' && !/not loaded|not found|NoSuchUnit/i.test(outcome.message ?? '')) {
          this.#opts.log.warning(
            `Stopping user unit '${unit}' of VM '${name}' ended with ${outcome.result}${outcome.message ? `: ${outcome.message}` : ''}`,
            {
              MESSAGE_ID: MessageId.UNIT_FAILED,
              VFIO_DOMAIN: name,
              UNIT: unit,
            },
          );
        }
      }),
    );
    this.#opts.onChange?.();
  }

  #activeStateChanged(unit: string, state: string): void {
    for (const entry of this.#entries.values()) {
      if (!entry.started.has(unit)) continue;
      if (state === 'failed' && entry.want === 'active') this.#fail(entry, unit, 'failed after start');
      else if (state === 'inactive' && entry.want === 'active' && !entry.working) {
        // Ended on its own (the user closed the client): not a failure, and not restarted.
        entry.started.delete(unit);
        this.#opts.onChange?.();
      }
    }
  }
}
