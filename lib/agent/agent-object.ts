/**
 * `org.vfiohookd1.Agent` at `/org/vfiohookd1/agent` on the user's session bus
 * (bus name `org.vfiohookd1.Agent`): what the agent did, for `busctl --user`
 * and for a later `vfio-hookctl status`. Read-only properties with
 * `PropertiesChanged`:
 *
 * - `ActiveUnits` (as): units it started and that are active;
 * - `FailedUnits` (as): units that failed in their VM's current run (not retried);
 * - `Failures` (a(sss)): the same with the VM and the reason: (vm, unit, reason).
 */
import dbus from 'dbus-next';
import { AGENT_INTERFACE, AgentMember } from '../bus/names.js';
import type { UnitFailure } from './agent.js';

interface AgentState {
  readonly activeUnits: readonly string[];
  readonly failures: readonly UnitFailure[];
}

function values(state: AgentState): Record<string, unknown> {
  return {
    [AgentMember.ActiveUnits]: [...state.activeUnits],
    [AgentMember.FailedUnits]: [...new Set(state.failures.map((f) => f.unit))].sort(),
    [AgentMember.Failures]: state.failures.map((f) => [f.machine, f.unit, f.reason]),
  };
}

export class AgentObject extends dbus.interface.Interface {
  readonly #source: () => AgentState;
  #last: Record<string, unknown>;

  constructor(source: () => AgentState) {
    super(AGENT_INTERFACE);
    this.#source = source;
    this.#last = values(source());
  }

  get ActiveUnits(): unknown {
    return this.#last[AgentMember.ActiveUnits];
  }

  get FailedUnits(): unknown {
    return this.#last[AgentMember.FailedUnits];
  }

  get Failures(): unknown {
    return this.#last[AgentMember.Failures];
  }

  /** Re-read the agent's state and announce what changed. */
  refresh(): void {
    const next = values(this.#source());
    const changed: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(next)) {
      if (JSON.stringify(value) !== JSON.stringify(this.#last[key])) changed[key] = value;
    }
    this.#last = next;
    if (Object.keys(changed).length > 0) dbus.interface.Interface.emitPropertiesChanged(this, changed, []);
  }
}

AgentObject.configureMembers({
  properties: {
    ActiveUnits: { signature: 'as', access: 'read' },
    FailedUnits: { signature: 'as', access: 'read' },
    Failures: { signature: 'a(sss)', access: 'read' },
  },
});
