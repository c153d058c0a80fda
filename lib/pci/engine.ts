/**
 * The PCI engine: read the host, plan, execute with rollback, and say what
 * each device was before so it can be given back.
 */
import type { KernelPort } from './kernel-port.js';
import { readHost, type HostSnapshot } from './host-snapshot.js';
import { planDetach, planReattach, type Claim, type Plan, type PlanOptions } from './plan.js';
import { PlanExecutor, type ExecuteOptions } from './executor.js';

export interface DetachResult {
  readonly plan: Plan;
  /** The claims to record for every device of the plan (existing ones kept). */
  readonly claims: ReadonlyMap<string, Claim>;
}

export interface ReattachResult {
  readonly plan: Plan;
  /** Devices whose claims should now be dropped. */
  readonly released: readonly string[];
}

export class PciEngine {
  readonly #port: KernelPort;
  readonly #options: ExecuteOptions;

  /** `options` apply to every run (write and settle timeouts, progress). */
  constructor(port: KernelPort, options: ExecuteOptions = {}) {
    this.#port = port;
    this.#options = options;
  }

  get port(): KernelPort {
    return this.#port;
  }

  inspect(): Promise<HostSnapshot> {
    return readHost(this.#port);
  }

  /** Take the devices, their companions and their IOMMU groups to vfio-pci. */
  async detach(addresses: readonly string[], options: PlanOptions): Promise<DetachResult> {
    const snapshot = await this.inspect();
    const plan = planDetach(snapshot, addresses, options);
    const { origins } = await new PlanExecutor(this.#port, this.#options).run(plan);
    const before = new Map(origins.map((o) => [o.address, o]));
    const claims = new Map<string, Claim>();
    for (const device of plan.devices) {
      const existing = options.claims?.get(device.address);
      if (existing && existing.owner === options.owner) {
        claims.set(device.address, existing); // keep the first original driver
        continue;
      }
      const origin = before.get(device.address);
      const was = snapshot.devices.get(device.address)!;
      claims.set(device.address, {
        owner: options.owner,
        originalDriver: origin ? origin.driver : was.driver,
        originalOverride: origin ? origin.override : was.driverOverride,
      });
    }
    return { plan, claims };
  }

  /** Give the devices (and the rest of their groups) back to the drivers they had. */
  async reattach(addresses: readonly string[], options: PlanOptions): Promise<ReattachResult> {
    const snapshot = await this.inspect();
    const plan = planReattach(snapshot, addresses, options);
    await new PlanExecutor(this.#port, this.#options).run(plan);
    return { plan, released: plan.devices.map((d) => d.address) };
  }
}
