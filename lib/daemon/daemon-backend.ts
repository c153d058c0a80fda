/**
 * What the Manager object does: the daemon's behaviour behind the bus.
 *
 * `HandleHook` checks everything before any side effect: the hook arguments,
 * then (for the stages that act) the domain XML and the VM's settings, and
 * only then hands the VM to the lifecycle. A VM that is not managed, and
 * every stage that has nothing to do, gets its answer at once. libvirt is
 * never asked anything here: the hook is in flight, and a call back into
 * libvirt would wait for it.
 *
 * Manual `DetachDevice`/`ReattachDevice` go through the lifecycle too, so
 * one queue orders every device and state change.
 */
import { InvalidArgs, q } from '../errors.js';
import type { Config } from '../config/types.js';
import { mergeVmSettings } from '../config/merge.js';
import { parseDomainXml } from '../domain/domain-xml.js';
import type { PciEngine } from '../pci/engine.js';
import { parsePciAddress } from '../pci/address.js';
import { devicesView } from '../cli/device-view.js';
import type { Lifecycle, HookOutcome as LifecycleOutcome } from '../lifecycle/lifecycle.js';
import { parseHookEvent, stageOf, type HookEvent as ParsedHookEvent } from '../lifecycle/hook-event.js';
import type { DeviceRow, HookEvent } from '../bus/dbus-types.js';
import type { ManagerBackend } from '../bus/manager-interface.js';
import { toManagedVm, type AccountResolver } from './managed-vm.js';

/** Who a device detached by `DetachDevice` is recorded for. */
export const BUS_OWNER = 'dbus';

export interface DaemonBackendOptions {
  readonly engine: PciEngine;
  readonly lifecycle: Lifecycle;
  /** The configuration in force (the watcher keeps the last good one). */
  readonly config: () => Config;
  /** Re-read the configuration; rejects with InvalidConfig and keeps the old one. */
  readonly reload: () => Promise<void>;
  readonly accounts: AccountResolver;
  /** Told of every hook that acted, for the journal. */
  readonly onOutcome?: (event: ParsedHookEvent, outcome: LifecycleOutcome) => void;
  /** Told of every hook that was refused (bad arguments, or the stage failed), for the journal. */
  readonly onRefused?: (domainName: string, operation: string, subOperation: string, error: unknown) => void;
}

export class DaemonBackend implements ManagerBackend {
  readonly #options: DaemonBackendOptions;

  constructor(options: DaemonBackendOptions) {
    this.#options = options;
  }

  async listDevices(): Promise<readonly DeviceRow[]> {
    const view = devicesView(await this.#options.engine.inspect(), await this.#options.lifecycle.claims());
    return view.devices.map((d) => ({
      address: d.address,
      vendorId: d.vendorId,
      deviceId: d.deviceId,
      className: d.className,
      driver: d.driver,
      iommuGroup: d.iommuGroup,
      owner: d.claim?.owner ?? null,
    }));
  }

  async detachDevice(address: string): Promise<void> {
    await this.#options.lifecycle.detach(BUS_OWNER, [parsePciAddress(address)]);
  }

  async reattachDevice(address: string): Promise<void> {
    await this.#options.lifecycle.reattach(BUS_OWNER, [parsePciAddress(address)]);
  }

  reload(): Promise<void> {
    return this.#options.reload();
  }

  async handleHook(raw: HookEvent): Promise<LifecycleOutcome> {
    try {
      return await this.#handleHook(raw);
    } catch (error) {
      this.#options.onRefused?.(raw.domainName, raw.operation, raw.subOperation, error);
      throw error;
    }
  }

  async #handleHook(raw: HookEvent): Promise<LifecycleOutcome> {
    const event = parseHookEvent(raw.domainName, raw.operation, raw.subOperation, raw.extra);
    const stage = stageOf(event);
    const lifecycle = this.#options.lifecycle;
    if (stage === 'none') return lifecycle.handle(event, null);

    const domain = parseDomainXml(raw.domainXml);
    if (domain.name !== event.domainName) {
      throw new InvalidArgs(
        `The domain XML is for ${q(domain.name)} but the hook was called for ${q(event.domainName)}; libvirt passes the VM's own XML on stdin`,
      );
    }
    const settings = mergeVmSettings(this.#options.config().vms.get(event.domainName), domain);
    let outcome: LifecycleOutcome;
    if (settings === null) {
      // Its table may have been removed while it ran: what it holds still goes back.
      const holds = [...(await lifecycle.claims()).values()].some((c) => c.owner === event.domainName);
      outcome = stage === 'release' && holds ? await lifecycle.releaseOwner(event.domainName) : await lifecycle.handle(event, null);
    } else {
      outcome = await lifecycle.handle(event, await toManagedVm(settings, this.#options.accounts));
    }
    this.#options.onOutcome?.(event, outcome);
    return outcome;
  }
}
