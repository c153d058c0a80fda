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
import { parseDomainXmlOffThread } from '../domain/parse-off-thread.js';
import type { PciEngine } from '../pci/engine.js';
import { parsePciAddress } from '../pci/address.js';
import { readPciDevices } from '../pci/pci-device.js';
import { className } from '../pci/class-code.js';
import type { Lifecycle, HookOutcome as LifecycleOutcome } from '../lifecycle/lifecycle.js';
import { parseHookEvent, stageOf, type HookEvent as ParsedHookEvent, type HookStage } from '../lifecycle/hook-event.js';
import type { DeviceRow, HookEvent, MachineRow } from '../bus/dbus-types.js';
import type { ManagerBackend } from '../bus/manager-interface.js';
import { toManagedVm, type AccountResolver } from './managed-vm.js';

/** Who a device detached by `DetachDevice` is recorded for. */
export const BUS_OWNER = 'dbus';

/** A VM's state after each stage that changes it. */
const STATE_AFTER: Partial<Record<HookStage, string>> = {
  prepare: 'prepared',
  started: 'running',
  reconnect: 'running',
  stopped: 'stopped',
  release: 'released',
};

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
  /** Told after anything that may have changed devices, claims or machine states (to refresh the bus objects). */
  readonly onChange?: () => void;
  /** Told of every hook that was refused (bad arguments, or the stage failed), for the journal. */
  readonly onRefused?: (domainName: string, operation: string, subOperation: string, error: unknown) => void;
}

export class DaemonBackend implements ManagerBackend {
  readonly #options: DaemonBackendOptions;
  /** What the hooks told us of each managed VM since the daemon started. */
  readonly #seen = new Map<string, { state: string; message: string }>();

  constructor(options: DaemonBackendOptions) {
    this.#options = options;
  }

  /**
   * The PCI devices with their claims. Reads only the devices themselves, not
   * holders or host dependencies: this runs after every hook, to refresh the
   * Device objects.
   */
  async listDevices(): Promise<readonly DeviceRow[]> {
    const [devices, claims] = await Promise.all([readPciDevices(this.#options.engine.port), this.#options.lifecycle.claims()]);
    return [...devices.values()].map((d) => ({
      address: d.address,
      vendorId: d.vendorId,
      deviceId: d.deviceId,
      className: className(d.classCode),
      driver: d.driver,
      iommuGroup: d.iommuGroup,
      owner: claims.get(d.address)?.owner ?? null,
    }));
  }

  /**
   * Every VM the daemon knows: configured ones, ones that hold devices (a VM
   * prepared before a restart), and ones whose hooks it has seen.
   */
  async listMachines(): Promise<readonly MachineRow[]> {
    const claims = await this.#options.lifecycle.claims();
    const config = this.#options.config();
    const held = new Map<string, string[]>();
    for (const [address, claim] of claims) {
      if (claim.owner === BUS_OWNER) continue;
      held.set(claim.owner, [...(held.get(claim.owner) ?? []), address]);
    }
    const names = new Set([...config.vms.keys(), ...held.keys(), ...this.#seen.keys()]);
    return [...names].sort().map((name) => {
      const settings = config.vms.get(name);
      const holds = held.get(name) ?? [];
      const seen = this.#seen.get(name);
      return {
        name,
        state: seen?.state ?? (holds.length > 0 ? 'prepared' : 'defined'),
        devices: holds.length > 0 ? holds : [...(settings?.devices ?? [])],
        shmFiles: [settings?.lookingGlass?.name, settings?.scream?.name].filter((n): n is string => n !== undefined),
        lastMessage: seen?.message ?? '',
        user: settings?.user ?? '',
        units: [...(settings?.units ?? [])],
      };
    });
  }

  /**
   * libvirt says `name` started. For a configured VM whose prepare never
   * reached us (no prepare seen, no devices held), returns the sentence to
   * log: the hook is missing, not executable, or libvirtd was not restarted
   * after install. Otherwise null.
   */
  async domainStarted(name: string): Promise<string | null> {
    if (!this.#options.config().vms.has(name)) return null;
    const seen = this.#seen.get(name)?.state;
    if (seen === 'prepared' || seen === 'running') return null;
    const holds = [...(await this.#options.lifecycle.claims()).values()].some((c) => c.owner === name);
    if (holds) return null;
    const message =
      `VM '${name}' started, but its prepare hook never reached vfio-hookd: its devices and shm files were not prepared. ` +
      `Check that the hook is installed and executable (/etc/libvirt/hooks/qemu.d/vfio-hookd) and restart libvirtd once so it sees it`;
    this.#seen.set(name, { state: 'failed', message });
    this.#options.onChange?.();
    return message;
  }

  /** At start, libvirt lists the running domains: managed ones that hold devices are running. */
  async domainsRunning(names: readonly string[]): Promise<void> {
    const owners = new Set([...(await this.#options.lifecycle.claims()).values()].map((c) => c.owner));
    for (const name of names) {
      if (!this.#seen.has(name) && (this.#options.config().vms.has(name) || owners.has(name))) {
        this.#seen.set(name, { state: 'running', message: 'running when vfio-hookd started' });
      }
    }
    this.#options.onChange?.();
  }

  async detachDevice(address: string): Promise<void> {
    try {
      await this.#options.lifecycle.detach(BUS_OWNER, [parsePciAddress(address)]);
    } finally {
      this.#options.onChange?.();
    }
  }

  async reattachDevice(address: string): Promise<void> {
    try {
      await this.#options.lifecycle.reattach(BUS_OWNER, [parsePciAddress(address)]);
    } finally {
      this.#options.onChange?.();
    }
  }

  async reload(): Promise<void> {
    try {
      await this.#options.reload();
    } finally {
      this.#options.onChange?.();
    }
  }

  async handleHook(raw: HookEvent): Promise<LifecycleOutcome> {
    try {
      return await this.#handleHook(raw);
    } catch (error) {
      this.#options.onChange?.();
      if (this.#options.config().vms.has(raw.domainName) || this.#seen.has(raw.domainName)) {
        this.#seen.set(raw.domainName, { state: 'failed', message: error instanceof Error ? error.message : String(error) });
      }
      this.#options.onRefused?.(raw.domainName, raw.operation, raw.subOperation, error);
      throw error;
    }
  }

  async #handleHook(raw: HookEvent): Promise<LifecycleOutcome> {
    const event = parseHookEvent(raw.domainName, raw.operation, raw.subOperation, raw.extra);
    const stage = stageOf(event);
    const lifecycle = this.#options.lifecycle;
    if (stage === 'none') return lifecycle.handle(event, null);

    // A large document is parsed on a worker thread: the bus keeps answering meanwhile.
    const domain = await parseDomainXmlOffThread(raw.domainXml);
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
      if (!(stage === 'release' && holds)) return lifecycle.handle(event, null);
      outcome = await lifecycle.releaseOwner(event.domainName);
    } else {
      outcome = await lifecycle.handle(event, await toManagedVm(settings, this.#options.accounts));
    }
    const state = STATE_AFTER[stage];
    if (state !== undefined) this.#seen.set(event.domainName, { state, message: outcome.message });
    this.#options.onOutcome?.(event, outcome);
    // Only a managed VM's hook can change devices or machine states; an
    // unmanaged one must stay a quick answer.
    this.#options.onChange?.();
    return outcome;
  }
}
