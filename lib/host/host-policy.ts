/**
 * A VM's host-change settings (`on-busy`, `stop-units`, `busy-timeout`,
 * `single-gpu`) turned into the ordered list of changes its prepare makes.
 *
 * Each change is planned just before it is applied, so it reads the host
 * as the changes before it left it (the display manager stopped, then the
 * units still running). What can be checked without the host (a systemd
 * connection for the kinds that need one) is checked here, before the
 * first side effect.
 *
 * Order, all before the detach: with `single-gpu`, stop the display manager
 * (the compositor lets go of the card), unbind the consoles from the frame
 * buffer, unbind the firmware frame buffer; then `on-busy`'s units are
 * stopped, or its DRM remove uevent sent. Release undoes them in reverse.
 */
import { UnitFailed, q } from '../errors.js';
import { planDrmRelease } from './drm-release.js';
import { planFramebufferUnbind } from './framebuffer.js';
import type { HostChange, HostContext } from './host-change.js';
import { planUnitStop } from './unit-stop.js';
import { planVtconsoleUnbind } from './vtconsole.js';

/** The unit every display manager's unit file aliases itself as (`Alias=display-manager.service`). */
export const DISPLAY_MANAGER_UNIT = 'display-manager.service';

export const ON_BUSY_VALUES = ['refuse', 'release', 'stop-units'] as const;
export type OnBusy = (typeof ON_BUSY_VALUES)[number];

export interface HostPolicy {
  /** What to do about processes holding the card. Default 'refuse'. */
  readonly onBusy: OnBusy;
  /** With `onBusy` 'stop-units': the system units to stop. */
  readonly stopUnits: readonly string[];
  /** How long `release` waits for the holders to let go. */
  readonly busyTimeoutMs: number;
  /** Hand the only GPU over: display manager, consoles, frame buffer. */
  readonly singleGpu: boolean;
}

/** A change still to be planned: its phase is known now, its record when it is planned. */
export interface PlannedStep {
  readonly phase: HostChange['phase'];
  plan(): Promise<HostChange>;
}

export function hostChangeSteps(vm: string, devices: readonly string[], policy: HostPolicy, context: HostContext): PlannedStep[] {
  const needsSystemd = policy.singleGpu || policy.onBusy === 'stop-units';
  if (needsSystemd && context.systemd === null) {
    const what = policy.singleGpu ? `single-gpu = true stops ${DISPLAY_MANAGER_UNIT}` : 'on-busy = "stop-units" stops units';
    throw new UnitFailed(`Cannot prepare VM ${q(vm)}: ${what}, and vfio-hookd has no connection to systemd's manager, refusing`);
  }
  const steps: PlannedStep[] = [];
  const before = (plan: () => Promise<HostChange>): void => void steps.push({ phase: 'before-detach', plan });
  if (policy.singleGpu) {
    before(() => planUnitStop([DISPLAY_MANAGER_UNIT], 'single-gpu', context));
    before(() => planVtconsoleUnbind(context));
    before(() => planFramebufferUnbind(context));
  }
  if (policy.onBusy === 'stop-units' && policy.stopUnits.length > 0) before(() => planUnitStop(policy.stopUnits, 'on-busy', context));
  if (policy.onBusy === 'release' && devices.length > 0) before(() => planDrmRelease(devices, policy.busyTimeoutMs, context));
  return steps;
}
