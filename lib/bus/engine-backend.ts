/**
 * A first `ManagerBackend`: devices are listed, detached and reattached by
 * hand through the PCI engine, with claims recorded in the state file under
 * one owner ('dbus'). The hook lifecycle is not here: `handleHook` answers
 * 'not managed' at once (TODO: wire the lifecycle's handler in its place).
 *
 * Changes run one at a time (a detach and a reattach must never interleave
 * their sysfs writes or their state-file updates); listing does not wait.
 */
import type { PciEngine } from '../pci/engine.js';

import { StateFile } from '../state/state-file.js';
import { devicesView } from '../cli/device-view.js';
import type { DeviceRow, HookEvent } from './dbus-types.js';
import type { HookOutcome, ManagerBackend } from './manager-interface.js';

/** Who a device detached over the bus by `DetachDevice` is recorded for. */
export const BUS_OWNER = 'dbus';

export interface EngineBackendOptions {
  readonly engine: PciEngine;
  readonly state: StateFile;
  /** Claim owner for `DetachDevice`. Default 'dbus'. */
  readonly owner?: string;
  /** The hook handler; default answers 'not managed' (TODO: the lifecycle). */
  readonly handleHook?: (event: HookEvent) => Promise<HookOutcome>;
  /** Re-read configuration; default does nothing (there is no configuration yet). */
  readonly reload?: () => Promise<void>;
}

export class EngineBackend implements ManagerBackend {
  readonly #engine: PciEngine;
  readonly #state: StateFile;
  readonly #owner: string;
  readonly #handleHook: (event: HookEvent) => Promise<HookOutcome>;
  readonly #reload: () => Promise<void>;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: EngineBackendOptions) {
    this.#engine = options.engine;
    this.#state = options.state;
    this.#owner = options.owner ?? BUS_OWNER;
    // TODO(lifecycle): replace with the hook lifecycle's handler.
    this.#handleHook = options.handleHook ?? (async () => ({ message: 'not managed' }));
    this.#reload = options.reload ?? (async () => {});
  }

  /** Run `work` after every change queued before it, whatever their outcome. */
  #serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(work, work);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async listDevices(): Promise<readonly DeviceRow[]> {
    const view = devicesView(await this.#engine.inspect(), await this.#state.load());
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

  detachDevice(address: string): Promise<void> {
    return this.#serial(async () => {
      const claims = await this.#state.load();
      const result = await this.#engine.detach([address], { owner: this.#owner, claims });
      const groups = new Map(result.plan.devices.map((d) => [d.address, d.group]));
      await this.#state.save(StateFile.withClaims(claims, result.claims, groups));
    });
  }

  reattachDevice(address: string): Promise<void> {
    return this.#serial(async () => {
      const claims = await this.#state.load();
      const result = await this.#engine.reattach([address], { owner: this.#owner, claims });
      const next = new Map(claims);
      for (const a of result.released) next.delete(a);
      await this.#state.save(next);
    });
  }

  handleHook(event: HookEvent): Promise<HookOutcome> {
    return this.#handleHook(event);
  }

  reload(): Promise<void> {
    return this.#serial(() => this.#reload());
  }
}
