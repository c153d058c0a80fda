/**
 * The daemon, put together in named steps, in this order (systemd
 * hostnamed's run(); docs/architecture.md has the data flow):
 *
 *  1. open the kernel port (real or simulated; crash points on a simulated one only);
 *  2. connect to the bus;
 *  3. load the configuration and follow it, then apply its `[daemon]` settings
 *     (the trusted shm owners' lookup runs beside steps 4 to 7b, and is
 *     awaited before step 8);
 *  4. build the objects (ledger, lifecycle, backend, Manager, libvirt follower)
 *     and take the signals;
 *  5. export the Manager;
 *  6. check that no other daemon owns the name: a second daemon exits here,
 *     before it reads or rewrites any state;
 *  7. recover the state file from sysfs;
 *  7b. take the devices of `hold = "boot"` VMs (before READY=1, so a unit
 *     ordered after ours, the display manager, never sees the card on its
 *     host driver), then export the Machine and Device objects (so a client
 *     that sees the name owned finds them there);
 *  8. own the name;
 *  9. follow libvirt through libvirt-dbus;
 * 10. retake the sleep locks of VMs that hold devices;
 * 11. READY=1, then start the sysfs writer child ahead of the first hook.
 *
 * SIGHUP or Reload(): re-read the configuration (a broken file keeps the
 * running one). Reload() returns once the new configuration is in force: the
 * [daemon] settings applied, the Machine objects and the hook's index rewritten
 * (the unit's ExecReload calls it, so `systemctl reload` waits for that too).
 * SIGTERM/SIGINT: STOPPING=1, give up the name (no new hook call reaches us),
 * let a hook already running finish or roll back, release a VM whose QEMU
 * was seen holding its devices and is gone with no release from libvirt
 * (DaemonBackend.releaseGone), exit 0.
 */
import { busSafe } from '../bus/dbus-types.js';
import { StageProgress, progressText } from './stage-progress.js';
import { DbusSystemdManager } from '../host/systemd-manager.js';
import { PLAIN_TUNABLES } from '../sim/sim-tunables.js';
import { describeStep } from '../pci/step-text.js';
import dbus from 'dbus-next';
import { DEFAULT_ROOTS, type HostRoots } from '../roots.js';
import { VfioHookdError, type InvalidConfig } from '../errors.js';
import { VERSION } from '../version.js';
import { openRealKernel } from '../pci/real-kernel-factory.js';
import { PciEngine } from '../pci/engine.js';
import type { KernelPort } from '../pci/kernel-port.js';
import { openSimulation } from '../sim/index.js';
import { Notifier, type Journal } from '../systemd/index.js';
import { BUS_NAME, ManagerMember, ROOT_PATH } from '../bus/names.js';
import { nameHasOwner } from '../bus/bus-driver.js';
import { ManagerInterface } from '../bus/manager-interface.js';
import { BusObjects } from '../bus/bus-objects.js';
import { CallerTracker } from '../bus/caller.js';
import { ConfigWatcher, emptyConfig, type Config } from '../config/index.js';
import { Lifecycle } from '../lifecycle/lifecycle.js';
import { DeviceLedger } from '../lifecycle/device-ledger.js';
import { StateFile } from '../state/state-file.js';
import { resolveGid, resolvePrimaryGid, resolveUid, resolveUids } from '../shm/index.js';
import { CRASH_ENV, CrashCounter, parseCrashPoint } from './crash-points.js';
import { CoalescedRefresh } from './coalesced-refresh.js';
import { DaemonBackend } from './daemon-backend.js';
import { DomainEventType, LibvirtEvents } from './libvirt-events.js';
import {
  hookNotReceivedEntry,
  bootHoldEntries,
  hookOutcomeEntries,
  hookRefusedEntry,
  manualChangeEntry,
  recoveredEntries,
  staleReleasedEntry,
  goneReleasedEntries,
  goneKeptEntry,
  type JournalEntry,
} from './outcome-journal.js';
import { SleepInhibitor } from './sleep-inhibitor.js';
import { OwedIndex } from './owed-index.js';
import { hookXmlDir } from '../domain/hook-xml-file.js';
import { trustedShmOwners } from './trusted-owners.js';

/** How long a stop waits for a running hook to finish or roll back (below systemd's TimeoutStopSec). */
const STOP_GRACE_MS = 80_000;

export interface DaemonOptions {
  /** The configuration file (the executable's default is DEFAULT_CONFIG_PATH). */
  readonly configPath: string;
  /** Name of a simulated host's fixture; default none: the real kernel. */
  readonly simulate?: string;
  /** Directory of the simulated host (with `simulate`); default the fixture's own (lib/sim). */
  readonly simDir?: string;
  /** Address of the bus to serve on; default the system bus. */
  readonly busAddress?: string;
  /** Runtime root (state file, hook files); default the port's, `/run` on a real host. */
  readonly runRoot?: string;
  /** Where every entry goes. */
  readonly log: Journal;
  /** Read for NOTIFY_SOCKET and friends (unset once read) and VFIO_HOOKD_CRASH_AFTER. Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** Ends the process: after a fatal error (1, or 2 for a refused setting) and after a stop (0). Default `process.exit`. */
  readonly exit?: (code: number) => never;
  /** How long a stop waits for a running hook. Default STOP_GRACE_MS. */
  readonly stopGraceMs?: number;
}

interface RunningDaemon {
  /** The SIGTERM sequence; ends with `exit(0)`. */
  stop(signal: string): Promise<void>;
}

export async function startDaemon(options: DaemonOptions): Promise<RunningDaemon> {
  const daemon = new Daemon(options);
  await daemon.openKernelPort();
  daemon.connectBus();
  await daemon.loadConfiguration();
  // The trusted shm owners are looked up (getent children) beside recovery: only a hook uses them, and no hook
  // reaches the daemon before it owns its name.
  const settings = daemon.applyDaemonSettings();
  settings.catch(() => undefined); // awaited below, where a failure stops the start; not unhandled meanwhile
  daemon.buildObjects();
  daemon.takeSignals();
  daemon.exportManager();
  await daemon.checkNameFree();
  await daemon.recoverState();
  await daemon.holdAtBoot();
  await settings;
  await daemon.ownName();
  await daemon.followLibvirt();
  await daemon.retakeSleepLocks();
  daemon.ready();
  return { stop: (signal) => daemon.stop(signal) };
}

/** Set by buildObjects(); everything the hooks and the bus reach. */
interface Parts {
  readonly inhibitor: SleepInhibitor;
  readonly lifecycle: Lifecycle;
  readonly backend: DaemonBackend;
  readonly manager: ManagerInterface;
  readonly libvirt: LibvirtEvents;
}

class Daemon {
  readonly #options: DaemonOptions;
  readonly #log: Journal;
  readonly #exit: (code: number) => never;
  readonly #notifier: Notifier;
  readonly #watcher: ConfigWatcher;
  readonly #refresh: CoalescedRefresh;
  #crashes = new CrashCounter(null);
  #port: KernelPort | null = null;
  /** The hook's list of VMs it must call us for (owed-index.ts). */
  #owed: OwedIndex | null = null;
  #roots: HostRoots = DEFAULT_ROOTS;
  #bus: dbus.MessageBus | null = null;
  #objects: BusObjects | null = null;
  #engine: PciEngine | null = null;
  #parts: Parts | null = null;
  // The last good configuration stays in force. One that cannot be read at
  // start leaves no last good one: passthrough VMs are then refused at
  // prepare with its error (fail closed), until a load succeeds.
  #config: Config = emptyConfig();
  #configError: InvalidConfig | null = null;
  /** Uids that may already own an shm file (trusted-owners.ts). */
  #trusted: readonly number[] = [0];
  /** The last `[daemon]` settings change in flight (a reload awaits it). */
  #settingsApplied: Promise<void> = Promise.resolve();
  #stopping = false;
  /** The step of the prepare or release now running (Machine.Step, StepStarted, STATUS=). */
  readonly #progress = new StageProgress();
  /** While a stage runs, STATUS= is refreshed every second with how long its step has run. */
  #statusTicker: NodeJS.Timeout | null = null;

  constructor(options: DaemonOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#exit = options.exit ?? ((code) => process.exit(code));
    this.#notifier = Notifier.fromEnv(options.env ?? process.env, {
      unsetEnvironment: true,
      onError: (error) => this.#log.warning(error.message),
    });
    this.#watcher = new ConfigWatcher({ path: options.configPath });
    this.#refresh = new CoalescedRefresh(() => this.#refreshObjects());
  }

  #fail(message: string, code = 1): never {
    this.#log.error(message);
    return this.#exit(code);
  }

  #write(entries: readonly JournalEntry[]): void {
    for (const entry of entries) this.#log.log(entry.priority, entry.message, entry.fields);
  }

  #need<T>(part: T | null): T {
    if (part === null) throw new Error('vfio-hookd: a start step ran out of order');
    return part;
  }

  /** 1. The kernel port; crash points (tests only) on a simulated host only (crash-points.ts). */
  async openKernelPort(): Promise<void> {
    const { simulate, simDir, runRoot } = this.#options;
    try {
      const point = parseCrashPoint((this.#options.env ?? process.env)[CRASH_ENV]);
      if (point !== null && simulate === undefined)
        this.#fail(`${CRASH_ENV} is for crash tests on a simulated host only (--simulate); unset it`, 2);
      this.#crashes = new CrashCounter(point);
    } catch (error) {
      this.#fail((error as Error).message, 2);
    }
    const port = this.#crashes.wrap(
      simulate !== undefined
        ? await openSimulation(simulate, simDir !== undefined ? { dir: simDir } : {})
        : openRealKernel({ ...DEFAULT_ROOTS, run: runRoot ?? DEFAULT_ROOTS.run }),
    );
    this.#port = port;
    this.#roots = runRoot !== undefined ? { ...port.roots, run: runRoot } : port.roots;
    this.#owed = new OwedIndex(hookXmlDir(this.#roots.run));
  }

  /** 2. The bus, with unix fd passing: logind's Inhibit() returns the lock as a file descriptor. */
  connectBus(): void {
    const address = this.#options.busAddress;
    const bus =
      address !== undefined
        ? // dbus-next passes negotiateUnixFd through for any bus; only its types omit it here.
          dbus.sessionBus({ busAddress: address, negotiateUnixFd: true } as dbus.SessionBusOptions)
        : dbus.systemBus({ negotiateUnixFd: true });
    bus.on('error', (error: Error) => this.#fail(`D-Bus connection failed: ${error.message}`));
    this.#bus = bus;
    this.#objects = new BusObjects(bus);
  }

  /** 3. The configuration, followed from now on. */
  async loadConfiguration(): Promise<void> {
    const CONFIG_FILE = this.#options.configPath;
    try {
      this.#config = await this.#watcher.start();
      for (const warning of this.#config.warnings) this.#log.warning(warning, { CONFIG_FILE });
    } catch (error) {
      this.#config = emptyConfig();
      this.#configError = error as InvalidConfig;
      this.#log.error(`${(error as Error).message}; VMs with <hostdev> or <shmem> are refused until it is fixed`, { CONFIG_FILE });
    }
    this.#watcher.on('change', (next) => {
      this.#config = next;
      if (this.#configError !== null) {
        this.#configError = null;
        if (this.#parts) dbus.interface.Interface.emitPropertiesChanged(this.#parts.manager, { [ManagerMember.ConfigError]: '' }, []);
      }
      this.#settingsApplied = this.applyDaemonSettings().catch((error: Error) =>
        this.#log.warning(`Cannot apply the [daemon] settings: ${error.message}`, { CONFIG_FILE }),
      );
      void this.#refresh.request();
      this.#log.notice(`Configuration reloaded from '${CONFIG_FILE}': ${next.vms.size} VM(s) managed`, { CONFIG_FILE });
      for (const warning of next.warnings) this.#log.warning(warning, { CONFIG_FILE });
      // A changed hold moves nothing now (the claims' record decides); say what it will do.
      void this.#parts?.backend
        .bootHoldNotes()
        .then((notes) => notes.forEach((note) => this.#log.notice(note, { CONFIG_FILE })))
        .catch((error: Error) => this.#log.warning(`Cannot compare the boot holds with the configuration: ${error.message}`));
    });
    this.#watcher.on('error', (error) => this.#log.error(`${error.message}; keeping the running configuration`, { CONFIG_FILE }));
    this.#engine = new PciEngine(this.#need(this.#port), {
      writeTimeoutMs: this.#config.daemon.writeTimeoutMs,
      onStepStart: (step) => this.#progress.step(describeStep(step)),
    });
  }

  /**
   * 3b. `[daemon]` settings take effect at start and at every reload: the
   * write timeout at once (recovery may write), the trusted shm owners when
   * their lookup ends (the returned promise).
   */
  async applyDaemonSettings(): Promise<void> {
    const { qemuUser, writeTimeoutMs } = this.#config.daemon;
    this.#need(this.#engine).configure({ writeTimeoutMs });
    const trusted = await trustedShmOwners(qemuUser, resolveUids);
    for (const warning of trusted.warnings) this.#log.warning(warning);
    this.#trusted = trusted.uids;
  }

  /** 4. Everything behind the bus, wired to the journal. */
  buildObjects(): void {
    const bus = this.#need(this.#bus);
    const engine = this.#need(this.#engine);
    const log = this.#log;
    const notifier = this.#notifier;
    const inhibitor = new SleepInhibitor(bus);
    const ledger = new DeviceLedger({ engine, state: new StateFile(this.#roots.run), onSaved: () => this.#crashes.saved() });
    const lifecycle = new Lifecycle({
      ledger,
      roots: this.#roots,
      trustedShmOwners: () => this.#trusted,
      sleepLock: inhibitor,
      // Host changes: sysfs through the same kernel port, units and AllowedCPUs through the system manager, and the
      // tunables (hugepages, reset_method) as files, or as a plain tree's files on a simulated host (a write replaces
      // the text, as one write(2) to a sysfs attribute sets its value).
      host: {
        kernel: this.#need(this.#port),
        systemd: new DbusSystemdManager(bus),
        ...(this.#options.simulate !== undefined ? { tunables: PLAIN_TUNABLES } : {}),
      },
      onStep: (step) => this.#progress.step(step),
    });
    // libvirt's own view through libvirt-dbus, when it is on this bus (it is optional).
    const libvirt = new LibvirtEvents({
      bus,
      idle: () => lifecycle.idle(),
      onAvailable: (available) => this.#libvirtAvailable(available),
      onDomainEvent: (name, event) => {
        if (event === DomainEventType.STARTED) this.#domainStarted(name);
      },
      onError: (error) => log.debug(`libvirt-dbus: ${error.message}`),
    });
    const backend = new DaemonBackend({
      engine,
      lifecycle,
      config: () => this.#config,
      reload: async () => {
        notifier.reloading('Reloading configuration');
        try {
          this.#config = await this.#watcher.reload();
          // A changed file emitted 'change' inside reload(), which applied the settings and requested a refresh:
          // wait for both, so a VM started right after `systemctl reload` meets the new configuration in the
          // hook's index (owed-index.ts) and in the Machine objects, not the old one.
          await this.#settingsApplied;
          await this.#refresh.settled();
        } finally {
          notifier.ready('Ready');
        }
      },
      configError: () => this.#configError,
      accounts: { uid: resolveUid, gid: resolveGid, primaryGid: resolvePrimaryGid },
      onUnmanagedWarning: (domainName, warning) => log.warning(warning, { VFIO_DOMAIN: domainName }),
      onManual: (what, caller, owner, result, error) => this.#write([manualChangeEntry(what, caller, owner, result, error)]),
      onChange: () => this.#refresh.request(),
      onOutcome: (event, outcome) => {
        this.#write(hookOutcomeEntries(event, outcome));
        // After a libvirtd restart libvirt-dbus is silent until called: call it once
        // when libvirtd shows it restarted (reconnect) or is starting a VM (prepare),
        // so the events of that VM reach us. poke() waits until no hook runs.
        if (outcome.stage === 'reconnect' || outcome.stage === 'prepare') void libvirt.poke();
        notifier.status(`Ready; last: ${event.operation} ${event.subOperation} of '${event.domainName}'`);
      },
      onRefused: (domainName, operation, subOperation, error) =>
        this.#write([hookRefusedEntry(domainName, operation, subOperation, error)]),
      progress: this.#progress,
    });
    const callers = new CallerTracker(bus);
    const manager = new ManagerInterface(backend, {
      version: VERSION,
      currentCaller: () => callers.current(),
      configError: () => this.#configError?.message ?? '',
      configFile: this.#options.configPath,
      runRoot: this.#roots.run,
      machines: () => this.#need(this.#objects).machinePaths,
      onError: (member, error) => {
        // Hook refusals are logged once by onRefused; everything else here, with the stack for unknown errors.
        if (member === ManagerMember.HandleHook) return;
        const e = error as Error;
        log.warning(`${member} failed: ${e.message ?? String(error)}`, {
          DBUS_MEMBER: member,
          ...(error instanceof VfioHookdError ? {} : { ERROR_STACK: e.stack }),
        });
      },
    });
    this.#parts = { inhibitor, lifecycle, backend, manager, libvirt };
    this.#followProgress(manager);
  }

  /** Each step as it starts: the StepStarted signal, the Machine's Step (a refresh), and STATUS= with its age. */
  #followProgress(manager: ManagerInterface): void {
    const status = (): void => {
      const p = this.#progress.current;
      if (p !== null)
        this.#notifier.status(`${p.stage === 'prepare' ? 'Preparing' : 'Releasing'} '${p.vm}': ${progressText(p, Date.now())}`);
    };
    this.#progress.listen((p) => {
      void this.#refresh.request();
      if (p !== null) {
        // After the refresh this step asked for, so a follower sees the Machine `preparing` before its first step.
        const signal: [string, string, string] = [busSafe(p.vm), p.stage, p.step];
        void this.#refresh.settled().then(() => manager.StepStarted(signal));
        status();
        this.#statusTicker ??= setInterval(status, 1000);
        // The ticker must never keep a stopping daemon alive.
        this.#statusTicker.unref();
      } else {
        // The hook's outcome follows with "Ready; last: ..." when it succeeded.
        this.#notifier.status('Ready');
        if (this.#statusTicker !== null) clearInterval(this.#statusTicker);
        this.#statusTicker = null;
      }
    });
  }

  /** 4b. SIGTERM/SIGINT stop; SIGHUP reloads. */
  takeSignals(): void {
    const { backend } = this.#need(this.#parts);
    process.on('SIGTERM', () => void this.stop('SIGTERM'));
    process.on('SIGINT', () => void this.stop('SIGINT'));
    process.on('SIGHUP', () => {
      void backend.reload().catch(() => {
        // The watcher's 'error' event has logged it; the running configuration stays.
      });
    });
  }

  /** 5. */
  exportManager(): void {
    this.#need(this.#bus).export(ROOT_PATH, this.#need(this.#parts).manager);
  }

  /**
   * 6. A second daemon must exit before it reads or rewrites what the running
   * one records: ask the bus whether the name has an owner before touching
   * any state. The name itself is requested only after recovery and the
   * first refresh, so a client that sees it owned (the user agent) finds the
   * Machine objects already there. Two daemons started in the same instant
   * could both pass this check; their recoveries then run one after the
   * other under the state lock (recovery on a consistent state changes
   * nothing) and the loser's RequestName fails. systemd never starts two anyway.
   */
  async checkNameFree(): Promise<void> {
    const bus = this.#need(this.#bus);
    try {
      if (await nameHasOwner(bus, BUS_NAME)) {
        this.#fail(`The bus name '${BUS_NAME}' is already owned by another process (is vfio-hookd already running?), exiting`);
      }
    } catch (error) {
      this.#fail(`Cannot ask the bus who owns '${BUS_NAME}': ${(error as Error).message}`);
    }
  }

  /** 7. The state file put right from sysfs. */
  async recoverState(): Promise<void> {
    const { lifecycle, backend } = this.#need(this.#parts);
    this.#write(recoveredEntries(await lifecycle.recover()));
    await backend.noteStartState();
  }

  /** 7b. Devices held at boot taken (a failure is journaled, never fatal), then the Machine and Device objects exported. */
  async holdAtBoot(): Promise<void> {
    const { backend } = this.#need(this.#parts);
    const { results, notes } = await backend.holdAtBoot();
    for (const result of results) this.#write(bootHoldEntries(result));
    for (const note of notes) this.#log.notice(note);
    await this.#refresh.request();
  }

  /** 8. */
  async ownName(): Promise<void> {
    let reply: number;
    try {
      reply = await this.#need(this.#bus).requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
    } catch (error) {
      this.#fail(`Cannot own the bus name '${BUS_NAME}': ${(error as Error).message}`);
    }
    if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
      this.#fail(`The bus name '${BUS_NAME}' is already owned by another process (is vfio-hookd already running?), exiting`);
    }
  }

  /** 9. */
  async followLibvirt(): Promise<void> {
    await this.#need(this.#parts)
      .libvirt.start()
      .catch((error: Error) => this.#log.warning(`Cannot follow libvirt-dbus: ${error.message}`));
  }

  /** 10. */
  async retakeSleepLocks(): Promise<void> {
    for (const warning of await this.#need(this.#parts).lifecycle.retakeSleepLocks()) this.#log.warning(warning);
  }

  /** 11. */
  ready(): void {
    const { configPath, simulate } = this.#options;
    this.#notifier.ready(`Ready; ${this.#config.vms.size} VM(s) managed`);
    this.#notifier.startWatchdog();
    // The writer child (a node start of its own) starts now, so no hook waits for it, and it does not compete
    // with the start for the CPU; a recovery or boot hold that writes before this starts it itself.
    this.#need(this.#port).prepareWrites?.();
    this.#log.info(
      `vfio-hookd ${VERSION} owns '${BUS_NAME}'; ${this.#config.vms.size} VM(s) in '${configPath}'` +
        (simulate !== undefined ? ` (simulated host '${simulate}')` : ''),
    );
  }

  async stop(signal: string): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const bus = this.#need(this.#bus);
    const { lifecycle, libvirt, inhibitor } = this.#need(this.#parts);
    const graceMs = this.#options.stopGraceMs ?? STOP_GRACE_MS;
    this.#notifier.stopping(`Stopping on ${signal}`);
    this.#watcher.close();
    libvirt.close();
    try {
      await bus.releaseName(BUS_NAME);
    } catch (error) {
      this.#log.warning(`Cannot release '${BUS_NAME}': ${(error as Error).message}`);
    }
    // A hook in flight finishes, or fails and rolls back: never a half-bound device.
    const grace = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
    // Then the refresh it asked for: a hook answers once the objects show what it did (DaemonBackend's onChange),
    // and the index must not be rewritten by a late refresh after it is removed below. A turn of the event loop
    // after that lets those answers go out before the bus is closed.
    const finished = async (): Promise<'idle'> => {
      await lifecycle.idle();
      await this.#refresh.settled();
      await new Promise((resolve) => setImmediate(resolve));
      return 'idle';
    };
    if ((await Promise.race([finished(), grace])) === 'timeout') {
      this.#log.error(`A hook was still running ${graceMs / 1000} s after ${signal}; stopping anyway`);
    } else {
      // VMs whose QEMU is gone without libvirt's release (libvirtd stopped first at a shutdown): what was done is
      // undone now rather than left on vfio-pci (DaemonBackend.releaseGone says when, and why only then). Should
      // systemd's TimeoutStopSec cut it short, the state file's pending operation is finished at the next start.
      try {
        const { released, kept } = await this.#need(this.#parts).backend.releaseGone();
        await this.#refresh.settled(); // the refresh it asked for, before the hook's index is removed below
        this.#write([
          ...released.flatMap(({ name, outcome }) => goneReleasedEntries(name, outcome)),
          ...kept.map(({ name, why }) => goneKeptEntry(name, why)),
        ]);
      } catch (error) {
        this.#log.warning(`Cannot release VMs whose QEMU is gone: ${(error as Error).message}`);
      }
    }
    inhibitor.releaseAll();
    await this.#owed?.remove().catch((error: Error) => this.#log.warning(`Cannot remove the hook's index: ${error.message}`));
    this.#notifier.close();
    bus.disconnect();
    await this.#need(this.#port).close();
    this.#log.info(`vfio-hookd stopped on ${signal}`);
    this.#exit(0);
  }

  /** The Machine and Device objects read afresh (one at a time: CoalescedRefresh). */
  async #refreshObjects(): Promise<void> {
    try {
      const objects = this.#need(this.#objects);
      const { backend, manager } = this.#need(this.#parts);
      const before = objects.machinePaths.join(' ');
      const [machines, devices] = await Promise.all([backend.listMachines(), backend.listDevices()]);
      objects.sync(machines, devices);
      await this.#owed?.write(machines.map((m) => m.name));
      if (objects.machinePaths.join(' ') !== before) {
        dbus.interface.Interface.emitPropertiesChanged(manager, { [ManagerMember.Machines]: objects.machinePaths }, []);
      }
    } catch (error) {
      this.#log.warning(`Cannot refresh the Machine and Device objects: ${(error as Error).message}`);
    }
  }

  #libvirtAvailable(available: boolean): void {
    const { backend, libvirt } = this.#need(this.#parts);
    this.#log.info(available ? 'libvirt-dbus is on the bus: following domain events' : 'libvirt-dbus left the bus');
    backend.libvirtAvailable = available;
    if (!available) return;
    // VMs that stopped while we were down: released from their records (see DaemonBackend.releaseStopped).
    void libvirt
      .allDomains()
      .then(async (domains) => {
        if (domains === null) return;
        this.#write((await backend.releaseStopped(domains)).map(({ name, outcome }) => staleReleasedEntry(name, outcome)));
      })
      .catch((error: Error) => this.#log.warning(`Cannot release VMs that stopped while vfio-hookd was down: ${error.message}`));
    void libvirt
      .runningDomains()
      .then((names) => backend.domainsRunning(names))
      .catch((error: Error) => this.#log.warning(`Cannot list the running domains through libvirt-dbus: ${error.message}`));
  }

  #domainStarted(name: string): void {
    void this.#need(this.#parts)
      .backend.domainStarted(name)
      .then((warning) => {
        if (warning === null) return;
        this.#write([hookNotReceivedEntry(name, warning)]);
        this.#notifier.status(`Ready; VM '${name}' started without its prepare hook`);
      });
  }
}
