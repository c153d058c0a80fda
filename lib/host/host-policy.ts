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
 * Order, before the detach: the kvmfr device's owner and mode (with Looking
 * Glass's shm files, which come first), the hugepages (a refusal for short
 * memory comes before anything visible happened to the desktop); with
 * `single-gpu`, stop the display manager (the compositor lets go of the
 * card), unbind the consoles from the frame buffer, unbind the firmware
 * frame buffer; then `on-busy`'s units are stopped, or its DRM remove uevent
 * sent; then each device's `reset-method` (last, so nothing after it can
 * make the device's methods probe differently before vfio-pci takes it).
 * After the detach: CPU isolation (the host's processes are restricted only
 * once the VM is sure to start). Release undoes them in reverse.
 */
import { UnitFailed, q } from '../errors.js';
import { planDrmRelease } from './drm-release.js';
import { planFramebufferUnbind } from './framebuffer.js';
import type { HostChange, HostContext } from './host-change.js';
import { planUnitStop } from './unit-stop.js';
import { planVtconsoleUnbind } from './vtconsole.js';
import { planCpuIsolation } from './cpu-isolation.js';
import { planHugepages, type HugepagesSettings } from './hugepages.js';
import { planResetMethod } from './reset-method.js';
import { kvmfrPresent, planKvmfr, type KvmfrSettings } from '../shm/kvmfr.js';

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
  /** `host-cpus`: restrict the host's units to these CPUs while the VM runs. Default: no isolation. */
  readonly hostCpus?: string | null;
  /** `hugepages` and `hugepage-size`: reserve them at prepare. Default: none. */
  readonly hugepages?: HugepagesSettings | null;
  /** `reset-method` per device. Default: none. */
  readonly resetMethods?: readonly { readonly address: string; readonly methods: readonly string[] }[];
  /** Looking Glass's kvmfr choice and the shm file it would replace; the lifecycle resolves it (kvmfrChoice). Default: none. */
  readonly kvmfr?: { readonly device: 'auto' | 'off' | string; readonly shmName: string } | null;
}

/** A change still to be planned: its phase is known now, its record when it is planned. */
export interface PlannedStep {
  readonly phase: HostChange['phase'];
  plan(): Promise<HostChange>;
}

/**
 * The steps, planned lazily, in the order of the module comment.
 *
 * @param kvmfr the kvmfr device to set up instead of Looking Glass's shm
 *   file, as the lifecycle chose it (kvmfrChoice); null for none.
 */
export function hostChangeSteps(
  vm: string,
  devices: readonly string[],
  policy: HostPolicy,
  context: HostContext,
  kvmfr: KvmfrSettings | null = null,
): PlannedStep[] {
  const hostCpus = policy.hostCpus ?? null;
  const needsSystemd = policy.singleGpu || policy.onBusy === 'stop-units' || hostCpus !== null;
  if (needsSystemd && context.systemd === null) {
    const what = policy.singleGpu
      ? `single-gpu = true stops ${DISPLAY_MANAGER_UNIT}`
      : policy.onBusy === 'stop-units'
        ? 'on-busy = "stop-units" stops units'
        : "host-cpus sets the host's units' AllowedCPUs";
    throw new UnitFailed(`Cannot prepare VM ${q(vm)}: ${what}, and vfio-hookd has no connection to systemd's manager, refusing`);
  }
  const tunables = context.tunables ? { files: context.tunables } : {};
  const steps: PlannedStep[] = [];
  const before = (plan: () => Promise<HostChange>): void => void steps.push({ phase: 'before-detach', plan });
  if (kvmfr !== null) {
    before(() => planKvmfr(kvmfr, context, context.modprobeDirs ? { modprobeDirs: context.modprobeDirs } : {}));
  }
  if (policy.hugepages) {
    const settings = policy.hugepages;
    before(() => planHugepages(settings, context, tunables));
  }
  if (policy.singleGpu) {
    before(() => planUnitStop([DISPLAY_MANAGER_UNIT], 'single-gpu', context));
    before(() => planVtconsoleUnbind(context));
    before(() => planFramebufferUnbind(context));
  }
  if (policy.onBusy === 'stop-units' && policy.stopUnits.length > 0) before(() => planUnitStop(policy.stopUnits, 'on-busy', context));
  if (policy.onBusy === 'release' && devices.length > 0) before(() => planDrmRelease(devices, policy.busyTimeoutMs, context));
  for (const { address, methods } of policy.resetMethods ?? []) {
    before(() => planResetMethod({ address, resetMethod: methods }, context, tunables));
  }
  if (hostCpus !== null) steps.push({ phase: 'after-detach', plan: () => planCpuIsolation({ hostCpus }, context) });
  return steps;
}

/**
 * Which kvmfr device, if any, stands in for Looking Glass's shm file at
 * this prepare (the `kvmfr` key, schema.ts): 'off' none; a device name that
 * device (its plan refuses when it is missing); 'auto' `kvmfr0` when it
 * exists and the domain maps no `<shmem>` of the file's name (a domain that
 * maps the file uses the file: QEMU would otherwise make it itself, as its
 * own user, where the client cannot open it).
 */
export async function kvmfrChoice(
  choice: HostPolicy['kvmfr'],
  mappedShm: readonly string[],
  roots: Pick<HostContext['roots'], 'dev'>,
): Promise<string | null> {
  if (!choice || choice.device === 'off') return null;
  if (choice.device !== 'auto') return choice.device;
  if (mappedShm.includes(choice.shmName)) return null;
  return (await kvmfrPresent(roots, 'kvmfr0')) ? 'kvmfr0' : null;
}
