/**
 * The PCI engine: read the host, plan, execute with rollback, and say what
 * each device was before so it can be given back.
 *
 * `detach`/`reattach` run a whole operation in memory (tests, dry runs).
 * The daemon and the CLI go through lib/lifecycle/device-ledger.ts instead,
 * which uses `plan*`, `execute`, `restore` and `binding` to write the
 * operation's record before its first write and settle the claims after
 * its last, so a crash at any instant can be finished or undone.
 */
import type { KernelPort } from './kernel-port.js';
import { sameOwner } from './owner.js';
import { readHost, readHostFor, type HostSnapshot } from './host-snapshot.js';
import { readPciDevices, type PciDevice } from './pci-device.js';
import { planDetach, planReattach, type Claim, type Plan, type PlanOptions } from './plan.js';
import { PlanExecutor, type DeviceBinding, type DeviceOrigin, type ExecuteOptions } from './executor.js';

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
  #options: ExecuteOptions;

  /** `options` apply to every run (write and settle timeouts, progress). */
  constructor(port: KernelPort, options: ExecuteOptions = {}) {
    this.#port = port;
    this.#options = options;
  }

  /** Change run options (a reloaded `[daemon] write-timeout`); applies to the next operation. */
  configure(options: ExecuteOptions): void {
    this.#options = { ...this.#options, ...options };
  }

  get port(): KernelPort {
    return this.#port;
  }

  /** The whole host: every device, its holders and dependencies (listings, doctor). */
  inspect(): Promise<HostSnapshot> {
    return readHost(this.#port);
  }

  /**
   * What a plan for `addresses` can reach (host-snapshot.ts readHostFor):
   * their devices, companions and groups, the process scan, their host
   * dependencies. What detach and reattach plan from.
   */
  inspectFor(addresses: readonly string[]): Promise<HostSnapshot> {
    return readHostFor(this.#port, addresses);
  }

  /** The PCI devices alone, without processes and host dependencies (recovery, listings). */
  devices(): Promise<ReadonlyMap<string, PciDevice>> {
    return readPciDevices(this.#port);
  }

  async planDetach(addresses: readonly string[], options: PlanOptions): Promise<{ plan: Plan; snapshot: HostSnapshot }> {
    const snapshot = await this.inspectFor(addresses);
    return { plan: planDetach(snapshot, addresses, options), snapshot };
  }

  async planReattach(addresses: readonly string[], options: PlanOptions): Promise<{ plan: Plan; snapshot: HostSnapshot }> {
    const snapshot = await this.inspectFor(addresses);
    return { plan: planReattach(snapshot, addresses, options), snapshot };
  }

  /** Run a plan; on failure it is rolled back and the error says how. Returns the devices' states before. */
  async execute(plan: Plan): Promise<readonly DeviceOrigin[]> {
    return (await new PlanExecutor(this.#port, this.#options).run(plan)).origins;
  }

  /** Put devices into the given bindings (recovery, rollback); returns one note per device, never throws for one device. */
  restore(targets: readonly DeviceOrigin[]): Promise<string[]> {
    return new PlanExecutor(this.#port, this.#options).rollback(targets);
  }

  /** A device's driver and override now. */
  binding(address: string): Promise<DeviceBinding> {
    return new PlanExecutor(this.#port, this.#options).binding(address);
  }

  /** Take the devices, their companions and their IOMMU groups to vfio-pci. */
  async detach(addresses: readonly string[], options: PlanOptions): Promise<DetachResult> {
    const { plan, snapshot } = await this.planDetach(addresses, options);
    const origins = await this.execute(plan);
    const before = new Map(origins.map((o) => [o.address, o]));
    const claims = new Map<string, Claim>();
    for (const device of plan.devices) {
      const existing = options.claims?.get(device.address);
      if (existing && sameOwner(existing.owner, options.owner)) {
        claims.set(device.address, existing); // keep the first original driver
        continue;
      }
      if (existing?.owner.kind === 'unknown') {
        // Adopted: nobody knows what it had before, and we do not pretend to.
        claims.set(device.address, { ...existing, owner: options.owner });
        continue;
      }
      const origin = before.get(device.address);
      const was = snapshot.devices.get(device.address)!;
      claims.set(device.address, {
        owner: options.owner,
        originalDriver: origin ? origin.driver : was.driver,
        originalOverride: origin ? origin.override : was.driverOverride,
        originalKnown: true,
      });
    }
    return { plan, claims };
  }

  /** Give the devices (and the rest of their groups) back to the drivers they had. */
  async reattach(addresses: readonly string[], options: PlanOptions): Promise<ReattachResult> {
    const { plan } = await this.planReattach(addresses, options);
    await this.execute(plan);
    return { plan, released: plan.devices.map((d) => d.address) };
  }
}
