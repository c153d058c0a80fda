/**
 * A simulated system manager behind the host changes' SystemdManager port
 * (lib/host/host-change.ts), as the simulated kernel is behind KernelPort:
 * units with an ActiveState, jobs that end `done` or, for a unit told to,
 * `failed`. The real manager is tested in the system tier
 * (test/system/guest); this is for planning and rollback in the sim tier.
 * `calls` lists every job in order, to assert what was stopped and started.
 */
import { UnitFailed, q } from '../errors.js';
import type { SystemdManager } from '../host/host-change.js';

export class SimSystemd implements SystemdManager {
  readonly #states = new Map<string, string>();
  readonly #failing = new Set<string>();
  readonly #failingProperties = new Set<string>();
  readonly #properties = new Map<string, unknown>();
  readonly calls: string[] = [];

  /** `units`: name -> ActiveState; a unit not named is not loaded ('inactive'). */
  constructor(units: Record<string, string> = {}) {
    for (const [name, state] of Object.entries(units)) this.#states.set(name, state);
  }

  /** Jobs for `unit` end `failed` from now on (its state stays). */
  failJobsOf(unit: string): void {
    this.#failing.add(unit);
  }

  state(unit: string): string {
    return this.#states.get(unit) ?? 'inactive';
  }

  async startUnit(name: string): Promise<void> {
    this.#job('start', name, 'active');
  }

  async stopUnit(name: string): Promise<void> {
    this.#job('stop', name, 'inactive');
  }

  async activeState(name: string): Promise<string> {
    return this.state(name);
  }

  /**
   * SetUnitProperties(runtime): the value is kept and read back by
   * unitProperty, as systemd's is. A unit told to (failPropertiesOf) refuses,
   * as systemd does for a unit whose cgroup has no cpuset controller.
   */
  async setRuntimeProperty(name: string, property: string, _signature?: string, value?: unknown): Promise<void> {
    this.calls.push(`set ${name} ${property}`);
    if (this.#failingProperties.has(name)) {
      throw new UnitFailed(`Cannot set ${property} of ${q(name)}: the simulated manager refuses it, refusing`);
    }
    this.#properties.set(`${name} ${property}`, value);
  }

  /** Properties as set; AllowedCPUs (an `ay`) is empty, every CPU, until set. */
  async unitProperty(name?: string, _iface?: string, property?: string): Promise<unknown> {
    const value = this.#properties.get(`${name} ${property}`);
    return value ?? (property === 'AllowedCPUs' ? Buffer.alloc(0) : undefined);
  }

  /** SetUnitProperties on `unit` fails from now on. */
  failPropertiesOf(unit: string): void {
    this.#failingProperties.add(unit);
  }

  #job(verb: 'start' | 'stop', name: string, after: string): void {
    this.calls.push(`${verb} ${name}`);
    if (this.#failing.has(name))
      throw new UnitFailed(`Cannot ${verb} ${q(name)}: its job ended 'failed'; see 'journalctl -u ${name}', refusing`);
    this.#states.set(name, after);
  }
}
