/**
 * Kind -> undo, for every host change a machine record may hold: release, a
 * failed prepare and recovery after a crash undo from the record alone,
 * whatever today's configuration says (host-change.ts).
 *
 * A kind this vfio-hookd does not know (a record from a newer version) is
 * never guessed at: its undo is reported as not done, with the record's
 * kind, for the operator to put right by hand.
 */
import { q } from '../errors.js';
import { DRM_RELEASE_KIND, undoDrmRelease } from './drm-release.js';
import { FRAMEBUFFER_KIND, undoFramebufferUnbind } from './framebuffer.js';
import type { HostChangeRecord, HostChangeUndo, HostContext } from './host-change.js';
import type { TunableFiles } from './tunable-files.js';
import { UNIT_STOP_KIND, undoUnitStop } from './unit-stop.js';
import { VTCONSOLE_KIND, undoVtconsoleUnbind } from './vtconsole.js';
import { CPU_ISOLATION_KIND, undoCpuIsolation } from './cpu-isolation.js';
import { HUGEPAGES_KIND, undoHugepages } from './hugepages.js';
import { RESET_METHOD_KIND, undoResetMethod } from './reset-method.js';
import { KVMFR_KIND, undoKvmfr } from '../shm/kvmfr.js';

const UNDO = new Map<string, HostChangeUndo>([
  [UNIT_STOP_KIND, undoUnitStop],
  [VTCONSOLE_KIND, undoVtconsoleUnbind],
  [FRAMEBUFFER_KIND, undoFramebufferUnbind],
  [DRM_RELEASE_KIND, undoDrmRelease],
  [CPU_ISOLATION_KIND, undoCpuIsolation],
  [HUGEPAGES_KIND, (record, context) => undoHugepages(record, context, tunablesOf(context))],
  [RESET_METHOD_KIND, (record, context) => undoResetMethod(record, context, tunablesOf(context))],
  [KVMFR_KIND, undoKvmfr],
]);

function tunablesOf(context: HostContext): { files?: TunableFiles } {
  return context.tunables ? { files: context.tunables } : {};
}

/** The kinds this build can undo. */
export function knownHostChangeKinds(): string[] {
  return [...UNDO.keys()];
}

/** A recorded change, as the machine record holds it. */
export interface RecordedHostChange {
  readonly phase: 'before-detach' | 'after-detach';
  readonly describe: string;
  readonly record: HostChangeRecord;
}

/**
 * Undo `changes` in reverse order, each one even when an earlier undo
 * failed. Returns a sentence for each that could not be undone (ending in
 * ', ignoring': a release is never refused), and what was undone.
 */
export async function undoHostChanges(
  changes: readonly RecordedHostChange[],
  context: HostContext,
): Promise<{ undone: string[]; failures: string[] }> {
  const undone: string[] = [];
  const failures: string[] = [];
  for (const change of [...changes].reverse()) {
    const undo = UNDO.get(change.record.kind);
    if (undo === undefined) {
      failures.push(
        `Cannot undo ${q(change.describe)}: this vfio-hookd does not know host changes of kind ${q(change.record.kind)}; undo it by hand, ignoring`,
      );
      continue;
    }
    try {
      await undo(change.record, context);
      undone.push(`undone: ${change.describe}`);
    } catch (error) {
      failures.push(`Cannot undo ${q(change.describe)}: ${(error as Error).message}, ignoring`);
    }
  }
  return { undone, failures };
}
