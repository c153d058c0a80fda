/**
 * Run a plan's steps against the kernel, reading every result back, and undo
 * what this run changed when a step fails, so no device is left driverless.
 *
 * Never assumed: a write that returned is not a driver that bound. After each
 * write the executor reads the attribute or link back, waiting (bounded) for
 * the kernel to settle; that read-back is the one place we poll, since sysfs
 * links raise no event we could wait on.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BindFailed, GroupNotViable, Timeout, q } from '../errors.js';
import { KernelWriteError, KernelWriteTimeout, type KernelPort } from './kernel-port.js';
import { compareAddresses, isPciAddress } from './address.js';
import { isBridge } from './class-code.js';
import { parseOverride } from './pci-device.js';
import {
  iommuGroupDevicesDir,
  linkName,
  pciDeviceDir,
  pciDeviceEntry,
  pciDriverDir,
  pciDriverFile,
  pciDriversProbe,
  vfioGroupNode,
} from './sysfs-layout.js';
import { viability, VFIO_DRIVER, type MemberBinding } from './iommu-group.js';
import type { Plan, Step } from './plan.js';

export interface ExecuteOptions {
  /** Longest a single sysfs write may take before it counts as hung. Default 10 000 ms. */
  readonly writeTimeoutMs?: number;
  /** Longest to wait for a link or node to appear after a write. Default 3 000 ms. */
  readonly settleTimeoutMs?: number;
  /** Called after each step, for progress reporting. */
  readonly onStep?: (step: Step) => void;
  /** Called before each step: a step that hangs (an unbind) is visible while it hangs. */
  readonly onStepStart?: (step: Step) => void;
}

/** A device's driver and `driver_override`. */
export interface DeviceBinding {
  readonly driver: string | null;
  readonly override: string | null;
}

/** A device's state before this run first touched it (or the state to restore it to). */
export interface DeviceOrigin extends DeviceBinding {
  readonly address: string;
  /**
   * The driver it had is not known (a claim found without a record): restoring
   * clears the override and lets the kernel choose. Default false.
   */
  readonly anyDriver?: boolean;
}

export interface ExecuteResult {
  /** State before the run, for every device the run changed, in the order touched. */
  readonly origins: readonly DeviceOrigin[];
}

const DEFAULT_WRITE_TIMEOUT_MS = 10_000;
const DEFAULT_SETTLE_TIMEOUT_MS = 3_000;
// Reading a link or a node back after a write is polled: sysfs sends no event
// for it, and this is the one bounded poll the engine makes. The first
// retries come sooner (1, 2, 4 ms, then every 5): most links are there at
// the first read, and one that is not is usually there a moment later; a
// flat 5 ms cost a detach whole milliseconds per step under a slow machine.
const SETTLE_INTERVAL_MS = 5;
const SETTLE_FIRST_MS = 1;

export class PlanExecutor {
  readonly #port: KernelPort;
  readonly #writeTimeoutMs: number;
  readonly #settleTimeoutMs: number;
  readonly #onStep: ((step: Step) => void) | undefined;
  readonly #onStepStart: ((step: Step) => void) | undefined;

  constructor(port: KernelPort, options: ExecuteOptions = {}) {
    this.#port = port;
    this.#writeTimeoutMs = options.writeTimeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
    this.#settleTimeoutMs = options.settleTimeoutMs ?? DEFAULT_SETTLE_TIMEOUT_MS;
    this.#onStep = options.onStep;
    this.#onStepStart = options.onStepStart;
  }

  async run(plan: Plan): Promise<ExecuteResult> {
    const origins = new Map<string, DeviceOrigin>();
    try {
      for (const step of plan.steps) {
        if ('address' in step && !origins.has(step.address)) {
          const now = await this.#binding(step.address);
          origins.set(step.address, { address: step.address, ...now });
        }
        this.#onStepStart?.(step);
        await this.#step(step);
        this.#onStep?.(step);
      }
    } catch (error) {
      const undone = await this.rollback([...origins.values()].reverse());
      throw withRollbackNote(error, undone);
    }
    return { origins: [...origins.values()] };
  }

  /**
   * Put each device back as it was (driver and override). Failures are
   * collected, not thrown: rollback must try every device. A device that
   * cannot get its original driver back is bound to vfio-pci rather than
   * left driverless.
   */
  async rollback(origins: readonly DeviceOrigin[]): Promise<string[]> {
    const notes: string[] = [];
    for (const origin of origins) {
      try {
        await this.#restore(origin);
        notes.push(`${q(origin.address)} restored to ${q(origin.driver ?? 'no driver')}`);
      } catch (error) {
        let last = '';
        try {
          const now = await this.#binding(origin.address);
          if (now.driver === null && origin.driver !== null) {
            await this.#step({ op: 'set-override', address: origin.address, driver: VFIO_DRIVER });
            await this.#step({ op: 'probe', address: origin.address, expect: VFIO_DRIVER });
            last = `, left on 'vfio-pci' so it is not driverless`;
          } else {
            last = `, left on ${q(now.driver ?? 'no driver')}`;
          }
        } catch (inner) {
          last = `, and binding it to vfio-pci failed too (${messageOf(inner)}); it may be driverless`;
        }
        notes.push(`${q(origin.address)} could not be restored (${messageOf(error)})${last}`);
      }
    }
    return notes;
  }

  async #restore(origin: DeviceOrigin): Promise<void> {
    if (origin.anyDriver) return this.#restoreToAnyDriver(origin);
    let now = await this.#binding(origin.address);
    if (now.override !== origin.override) {
      if (origin.override === null) await this.#step({ op: 'clear-override', address: origin.address });
      else await this.#step({ op: 'set-override', address: origin.address, driver: origin.override });
    }
    now = await this.#binding(origin.address);
    if (now.driver !== origin.driver) {
      if (now.driver !== null) await this.#step({ op: 'unbind', address: origin.address, driver: now.driver });
      if (origin.driver !== null) await this.#step({ op: 'probe', address: origin.address, expect: origin.driver });
    }
  }

  /** Clear our override and let the kernel bind whatever matches (the original driver is unknown). */
  async #restoreToAnyDriver(origin: DeviceOrigin): Promise<void> {
    const now = await this.#binding(origin.address);
    if (now.override !== null) await this.#step({ op: 'clear-override', address: origin.address });
    if (now.driver === VFIO_DRIVER) await this.#step({ op: 'unbind', address: origin.address, driver: VFIO_DRIVER });
    if (now.driver === null || now.driver === VFIO_DRIVER) await this.#step({ op: 'probe', address: origin.address, expect: null });
  }

  async #step(step: Step): Promise<void> {
    switch (step.op) {
      case 'set-override':
        await this.#write(pciDeviceEntry(this.#port.roots, step.address, 'driver_override'), step.driver);
        await this.#expectOverride(step.address, step.driver);
        return;
      case 'clear-override':
        // "\n", never "": a zero-byte write is ignored by sysfs and does not clear it.
        await this.#write(pciDeviceEntry(this.#port.roots, step.address, 'driver_override'), '\n');
        await this.#expectOverride(step.address, null);
        return;
      case 'unbind':
        return this.#unbind(step.address, step.driver);
      case 'probe':
        return this.#probe(step.address, step.expect);
      case 'await-vfio-node': {
        const node = vfioGroupNode(this.#port.roots, step.group);
        const ok = await this.#settle(() => this.#port.exists(node));
        if (!ok) {
          throw new Timeout(
            `${q(node)} did not appear within ${this.#settleTimeoutMs} ms after binding IOMMU group ${step.group} to vfio-pci; is devtmpfs or udev running?`,
          );
        }
        return;
      }
      case 'check-viable': {
        // Live, from the kernel's member list: each member's class (a bridge
        // or not) and driver link, all viability looks at. A whole
        // readPciDevice per member was a dozen more reads each.
        const members = (await this.#port.readDir(iommuGroupDevicesDir(this.#port.roots, step.group))).filter(isPciAddress);
        const devices = new Map<string, MemberBinding>();
        for (const address of members) {
          const [cls, driver] = await Promise.all([
            this.#port.readFile(pciDeviceEntry(this.#port.roots, address, 'class')),
            this.#driverOf(address),
          ]);
          const classCode = cls === null ? Number.NaN : Number.parseInt(cls.trim(), 16);
          devices.set(address, { isBridge: !Number.isNaN(classCode) && isBridge(classCode), driver });
        }
        const group = { number: step.group, devices: members.sort(compareAddresses) };
        const v = viability(group, devices);
        if (!v.viable) {
          throw new GroupNotViable(
            `IOMMU group ${step.group} is not viable after detaching: ` +
              v.blockers.map((b) => `${q(b.address)} is on ${q(b.driver)}`).join(', ') +
              `; every device in the group must be on vfio-pci, pci-stub, driverless, or a bridge`,
          );
        }
        return;
      }
    }
  }

  async #unbind(address: string, driver: string): Promise<void> {
    const now = await this.#binding(address);
    if (now.driver === null) return; // already unbound; nothing to do
    if (now.driver !== driver) {
      throw new BindFailed(`Cannot unbind ${q(address)} from ${q(driver)}: it is now on ${q(now.driver)}; something else changed it`);
    }
    await this.#write(pciDriverFile(this.#port.roots, driver, 'unbind'), address);
    const gone = await this.#settle(async () => (await this.#driverOf(address)) === null);
    if (!gone) {
      throw new BindFailed(`${q(address)} is still on ${q(driver)} after unbind; the driver refused to let go`);
    }
  }

  async #probe(address: string, expect: string | null): Promise<void> {
    let probeError: KernelWriteError | null = null;
    try {
      await this.#write(pciDriversProbe(this.#port.roots), address);
    } catch (error) {
      if (!(error instanceof KernelWriteError)) throw error;
      probeError = error; // e.g. EINVAL while the group is attached to a container
    }
    if (expect === null) return;
    if (await this.#settle(async () => (await this.#driverOf(address)) === expect)) return;

    // drivers_probe did not bind it: if it is driverless, bind explicitly.
    const driver = await this.#driverOf(address);
    if (driver === null) {
      if (!(await this.#port.exists(pciDriverDir(this.#port.roots, expect)))) {
        throw new BindFailed(`Cannot bind ${q(address)} to ${q(expect)}: the driver is not loaded; run 'modprobe ${expect}'`);
      }
      try {
        await this.#write(pciDriverFile(this.#port.roots, expect, 'bind'), address);
      } catch (error) {
        if (!(error instanceof KernelWriteError)) throw error;
        throw new BindFailed(
          `Cannot bind ${q(address)} to ${q(expect)}: ` +
            (probeError ? `drivers_probe failed with ${probeError.code} and ` : '') +
            `bind failed with ${error.code}`,
        );
      }
      if (await this.#settle(async () => (await this.#driverOf(address)) === expect)) return;
    }
    const found = await this.#driverOf(address);
    throw new BindFailed(
      `Cannot bind ${q(address)} to ${q(expect)}: its driver reads ${q(found ?? 'none')} after drivers_probe` +
        (probeError ? ` (which failed with ${probeError.code})` : '') +
        ` and bind`,
    );
  }

  async #expectOverride(address: string, want: string | null): Promise<void> {
    const now = (await this.#binding(address)).override;
    if (now !== want) {
      throw new BindFailed(`driver_override of ${q(address)} reads ${q(now ?? '(null)')}, expected ${q(want ?? '(null)')}`);
    }
  }

  async #write(file: string, data: string): Promise<void> {
    const controller = new AbortController();
    // A ref'd timer: AbortSignal.timeout() is unref'd and would let a CLI
    // exit silently while a hung write is pending.
    const timer = setTimeout(() => controller.abort(), this.#writeTimeoutMs);
    try {
      await this.#port.write(file, data, controller.signal);
    } catch (error) {
      if (error instanceof KernelWriteTimeout) {
        throw new Timeout(
          `Writing ${q(data)} to ${q(file)} did not return within ${this.#writeTimeoutMs} ms; the driver may hang on unbind or a process holds the device`,
        );
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async #settle(check: () => Promise<boolean>): Promise<boolean> {
    const deadline = Date.now() + this.#settleTimeoutMs;
    for (let wait = SETTLE_FIRST_MS; ; wait = Math.min(wait * 2, SETTLE_INTERVAL_MS)) {
      if (await check()) return true;
      if (Date.now() >= deadline) return false;
      await sleep(wait);
    }
  }

  async #driverOf(address: string): Promise<string | null> {
    const link = await this.#port.readLink(pciDeviceEntry(this.#port.roots, address, 'driver'));
    return link === null ? null : linkName(link);
  }

  /**
   * A device's driver and override, read afresh: the two facts every step
   * checks (a whole readPciDevice is a dozen reads, which a slow machine feels).
   * A missing driver_override reads as none; a missing device is an error.
   */
  binding(address: string): Promise<DeviceBinding> {
    return this.#binding(address);
  }

  async #binding(address: string): Promise<DeviceBinding> {
    const [override, driver] = await Promise.all([
      this.#port.readLockedFile(pciDeviceEntry(this.#port.roots, address, 'driver_override')),
      this.#driverOf(address),
    ]);
    if (override === null && !(await this.#port.exists(pciDeviceDir(this.#port.roots, address)))) {
      throw new BindFailed(`${q(address)} vanished from sysfs while we worked on it`);
    }
    return { driver, override: parseOverride(override) };
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Map a raw kernel error to an engine error, and append what the rollback did, keeping the class. */
function withRollbackNote(error: unknown, notes: readonly string[]): unknown {
  const mapped = error instanceof KernelWriteError ? new BindFailed(`Writing to ${q(error.path)} failed with ${error.code}`) : error;
  if (notes.length === 0) return mapped;
  if (mapped instanceof Error) mapped.message += ` (rolled back: ${notes.join('; ')})`;
  return mapped;
}
