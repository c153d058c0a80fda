/**
 * Stop system units while the VM runs, start them again after it: the
 * `on-busy = "stop-units"` policy (`nvidia-persistenced.service`, a render
 * daemon holding the card) and, with `single-gpu = true`, the display
 * manager (`display-manager.service`, the alias every display manager's
 * unit installs).
 *
 * Only the units that were active are stopped, and the record says which:
 * release starts exactly those, never a unit the user had stopped before
 * the VM. Each job goes through systemd's D-Bus and is waited for on
 * `JobRemoved` (systemd-manager.ts).
 */
import * as v from 'valibot';
import { DamagedState, UnitFailed, q } from '../errors.js';
import type { HostChange, HostContext, HostChangeRecord, SystemdManager } from './host-change.js';

export const UNIT_STOP_KIND = 'stop-units';

const RecordSchema = v.object({
  kind: v.literal(UNIT_STOP_KIND),
  /** What the units are stopped for, for messages: 'on-busy' or 'single-gpu'. */
  why: v.picklist(['on-busy', 'single-gpu']),
  /** The units that were active before, in the order they are stopped. */
  units: v.array(v.pipe(v.string(), v.minLength(1))),
});
export type UnitStopRecord = v.InferOutput<typeof RecordSchema>;

/** ActiveStates that mean "running or on its way": stopping one of these is a change to undo. */
const ACTIVE = new Set(['active', 'activating', 'reloading', 'refreshing']);

function needSystemd(systemd: SystemdManager | null, units: readonly string[]): SystemdManager {
  if (systemd === null) {
    throw new UnitFailed(`Cannot stop ${units.map(q).join(', ')}: vfio-hookd has no connection to systemd's manager, refusing`);
  }
  return systemd;
}

/** Read which of `units` are active (no side effect) and plan stopping those. */
export async function planUnitStop(
  units: readonly string[],
  why: UnitStopRecord['why'],
  context: HostContext,
): Promise<HostChange<UnitStopRecord>> {
  const systemd = needSystemd(context.systemd, units);
  const active: string[] = [];
  for (const unit of units) if (ACTIVE.has(await systemd.activeState(unit))) active.push(unit);
  const record: UnitStopRecord = { kind: UNIT_STOP_KIND, why, units: active };
  return {
    record,
    describe: active.length === 0 ? `${units.join(', ')} not running: nothing to stop` : `stopping ${active.join(', ')}`,
    phase: 'before-detach',
    async apply() {
      for (const unit of active) await systemd.stopUnit(unit);
    },
  };
}

/** Start the recorded units again, in reverse order; starting a unit that runs already is a job that does nothing. */
export async function undoUnitStop(input: HostChangeRecord, context: HostContext): Promise<void> {
  const parsed = v.safeParse(RecordSchema, input);
  if (!parsed.success) throw new DamagedState(`The record of stopped units is not valid; start them by hand with 'systemctl start'`);
  const { units } = parsed.output;
  if (units.length === 0) return;
  const systemd = needSystemd(context.systemd, units);
  const failures: string[] = [];
  for (const unit of [...units].reverse()) {
    try {
      await systemd.startUnit(unit);
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
}
