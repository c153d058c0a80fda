#!/usr/bin/env node
/**
 * vfio-hookd: wiring only. Build the kernel port (real or simulated), load
 * the configuration and follow it, reconcile the state file with sysfs, build
 * the lifecycle and the Manager object, export it, THEN own `org.vfiohookd1`,
 * THEN send READY=1 (systemd's hostnamed order).
 *
 * SIGHUP or Reload(): re-read the configuration (a broken file keeps the
 * running one). SIGTERM/SIGINT: STOPPING=1, give up the name (no new hook
 * call reaches us), let a hook already running finish or roll back, exit 0.
 */
import { parseArgs } from 'node:util';
import dbus from 'dbus-next';
import { DEFAULT_ROOTS } from '../lib/roots.js';
import { VfioHookdError } from '../lib/errors.js';
import { openRealKernel } from '../lib/pci/real-kernel-factory.js';
import { PciEngine } from '../lib/pci/engine.js';
import type { KernelPort } from '../lib/pci/kernel-port.js';
import { openSimulation } from '../lib/sim/index.js';
import { Journal, MessageId, Notifier } from '../lib/systemd/index.js';
import { BUS_NAME, ROOT_PATH } from '../lib/bus/names.js';
import { ManagerInterface } from '../lib/bus/manager-interface.js';
import { BusObjects } from '../lib/bus/bus-objects.js';
import { ConfigWatcher, DEFAULT_CONFIG_PATH, DEFAULT_QEMU_USERS, emptyConfig, type Config } from '../lib/config/index.js';
import { Lifecycle } from '../lib/lifecycle/lifecycle.js';
import { DaemonBackend } from '../lib/daemon/daemon-backend.js';
import { DomainEventType, LibvirtEvents } from '../lib/daemon/libvirt-events.js';
import { SleepInhibitor } from '../lib/daemon/sleep-inhibitor.js';
import { resolveGid, resolvePrimaryGid, resolveUid } from '../lib/shm/index.js';
import { VERSION } from '../lib/version.js';
import { StateFile } from '../lib/state/state-file.js';
import { DeviceLedger } from '../lib/lifecycle/device-ledger.js';
import { describeOwner } from '../lib/pci/owner.js';
import { CallerTracker } from '../lib/bus/caller.js';
import { CRASH_ENV, CrashCounter, parseCrashPoint } from '../lib/daemon/crash-points.js';
import type { InvalidConfig } from '../lib/errors.js';

const USAGE =
  'Usage: vfio-hookd [--config FILE] [--simulate FIXTURE [--sim-dir DIR]] [--bus-address ADDRESS] [--run-root DIR] [--journal-socket PATH]';
/** How long a stop waits for a running hook to finish or roll back (below systemd's TimeoutStopSec). */
const STOP_GRACE_MS = 80_000;

// Until the journal is set up (it needs the options), usage errors go to stderr as they are.
let journal: Journal | null = null;

function fail(message: string, code = 1): never {
  if (journal) journal.error(message);
  else process.stderr.write(`vfio-hookd: ${message}\n`);
  process.exit(code);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      config: { type: 'string' },
      simulate: { type: 'string' },
      'sim-dir': { type: 'string' },
      'bus-address': { type: 'string' },
      'run-root': { type: 'string' },
      'journal-socket': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
} catch (error) {
  fail(`${(error as Error).message}\n${USAGE}`, 2);
}
const values = parsed.values;
if (values['sim-dir'] !== undefined && values.simulate === undefined) fail(`--sim-dir needs --simulate\n${USAGE}`, 2);
const configPath = values.config ?? DEFAULT_CONFIG_PATH;
// Native journal protocol when stderr is the journal stream (systemd sets JOURNAL_STREAM), else <N> lines.
const log = new Journal(values['journal-socket'] !== undefined ? { socketPath: values['journal-socket'] } : {});
journal = log;

const notifier = Notifier.fromEnv(process.env, {
  unsetEnvironment: true,
  onError: (error) => log.warning(error.message),
});

// Crash tests only, and only on a simulated host (lib/daemon/crash-points.ts).
let crashes: CrashCounter;
try {
  const point = parseCrashPoint(process.env[CRASH_ENV]);
  if (point !== null && values.simulate === undefined) fail(`${CRASH_ENV} is for crash tests on a simulated host only (--simulate); unset it`, 2);
  crashes = new CrashCounter(point);
} catch (error) {
  fail((error as Error).message, 2);
}
const port: KernelPort = crashes.wrap(
  values.simulate !== undefined
    ? await openSimulation(values.simulate, values['sim-dir'] !== undefined ? { dir: values['sim-dir'] } : {})
    : openRealKernel({ ...DEFAULT_ROOTS, run: values['run-root'] ?? DEFAULT_ROOTS.run }),
);
const roots = values['run-root'] !== undefined ? { ...port.roots, run: values['run-root'] } : port.roots;

// Unix fd passing: logind's Inhibit() returns the lock as a file descriptor.
const bus =
  values['bus-address'] !== undefined
    ? // dbus-next passes negotiateUnixFd through for any bus; only its types omit it here.
      dbus.sessionBus({ busAddress: values['bus-address'], negotiateUnixFd: true } as dbus.SessionBusOptions)
    : dbus.systemBus({ negotiateUnixFd: true });
bus.on('error', (error: Error) => fail(`D-Bus connection failed: ${error.message}`));

// Machine and Device objects, refreshed after every change (one refresh at a time, bursts coalesced).
const objects = new BusObjects(bus);
let refreshing: Promise<void> = Promise.resolve();
let refreshQueued = false;
function refreshObjects(): void {
  // One refresh waiting is enough: it reads everything afresh when it runs.
  if (refreshQueued) return;
  refreshQueued = true;
  refreshing = refreshing.then(async () => {
    refreshQueued = false;
    try {
      const before = objects.machinePaths.join(' ');
      const [machines, devices] = await Promise.all([backend.listMachines(), backend.listDevices()]);
      objects.sync(machines, devices);
      if (objects.machinePaths.join(' ') !== before) {
        dbus.interface.Interface.emitPropertiesChanged(manager, { Machines: objects.machinePaths }, []);
      }
    } catch (error) {
      log.warning(`Cannot refresh the Machine and Device objects: ${(error as Error).message}`);
    }
  });
}
// Configuration: the last good one stays in force. One that cannot be read at
// start leaves no last good one: passthrough VMs are then refused at prepare
// with its error (fail closed), until a load succeeds.
const watcher = new ConfigWatcher({ path: configPath });
let config: Config;
let configError: InvalidConfig | null = null;
try {
  config = await watcher.start();
  for (const warning of config.warnings) log.warning(warning, { CONFIG_FILE: configPath });
} catch (error) {
  config = emptyConfig();
  configError = error as InvalidConfig;
  log.error(`${(error as Error).message}; VMs with <hostdev> or <shmem> are refused until it is fixed`, { CONFIG_FILE: configPath });
}
watcher.on('change', (next) => {
  config = next;
  if (configError !== null) {
    configError = null;
    dbus.interface.Interface.emitPropertiesChanged(manager, { ConfigError: '' }, []);
  }
  void applyDaemonSettings();
  refreshObjects();
  log.notice(`Configuration reloaded from '${configPath}': ${next.vms.size} VM(s) managed`, { CONFIG_FILE: configPath });
  for (const warning of next.warnings) log.warning(warning, { CONFIG_FILE: configPath });
});
watcher.on('error', (error) => log.error(`${error.message}; keeping the running configuration`, { CONFIG_FILE: configPath }));

const engine = new PciEngine(port, { writeTimeoutMs: config.daemon.writeTimeoutMs });
// Uids that may already own an shm file: root, and QEMU's user (QEMU creates a missing file itself).
let trusted: readonly number[] = [0];
/** `[daemon]` settings take effect at start and at every reload. */
async function applyDaemonSettings(): Promise<void> {
  const next = [0];
  for (const user of config.daemon.qemuUser !== null ? [config.daemon.qemuUser] : DEFAULT_QEMU_USERS) {
    try {
      next.push(await resolveUid(user));
    } catch {
      // Not every distribution has every name ('libvirt-qemu' on Debian, 'qemu' on Fedora, 'qemu-libvirtd' on NixOS).
      if (config.daemon.qemuUser !== null) log.warning(`[daemon] qemu-user '${user}' does not resolve to a user, ignoring`);
    }
  }
  trusted = next;
  engine.configure({ writeTimeoutMs: config.daemon.writeTimeoutMs });
}
await applyDaemonSettings();

const inhibitor = new SleepInhibitor(bus);
const ledger = new DeviceLedger({ engine, state: new StateFile(roots.run), onSaved: () => crashes.saved() });
const lifecycle = new Lifecycle({ ledger, roots, trustedShmOwners: () => trusted, sleepLock: inhibitor });

const backend = new DaemonBackend({
  engine,
  lifecycle,
  config: () => config,
  reload: async () => {
    notifier.reloading('Reloading configuration');
    try {
      config = await watcher.reload();
    } finally {
      notifier.ready('Ready');
    }
  },
  configError: () => configError,
  accounts: { uid: resolveUid, gid: resolveGid, primaryGid: resolvePrimaryGid },
  onUnmanagedWarning: (domainName, warning) => log.warning(warning, { VFIO_DOMAIN: domainName }),
  onManual: (what, caller, owner, result, error) => {
    const devices = result ? result.plan.devices.map((d) => d.address).join(', ') : '';
    const fields = { MESSAGE_ID: MessageId.MANUAL_CHANGE, CALLER_UID: String(caller.uid), ...(devices ? { PCI_ADDRESS: devices } : {}) };
    if (error !== null) {
      log.warning(`${what === 'detach' ? 'DetachDevice' : 'ReattachDevice'} by '${caller.name}' (uid ${caller.uid}) refused: ${(error as Error).message}`, fields);
    } else if (what === 'detach') {
      log.info(`Detached by hand by '${caller.name}' (uid ${caller.uid})${owner.kind === 'vm' ? ` for ${describeOwner(owner)}` : ''}: ${devices}`, fields);
    } else {
      log.info(`Given back by hand by '${caller.name}' (uid ${caller.uid}): ${devices || 'nothing to do'}`, fields);
    }
  },
  onChange: () => refreshObjects(),
  onOutcome: (event, outcome) => {
    const base = { VFIO_DOMAIN: event.domainName, VFIO_HOOK: `${event.operation} ${event.subOperation}` };
    for (const address of outcome.detached) {
      log.info(`Device '${address}' detached to vfio-pci for VM '${event.domainName}'`, { ...base, PCI_ADDRESS: address, MESSAGE_ID: MessageId.DEVICE_DETACHED });
    }
    for (const address of outcome.reattached) {
      log.info(`Device '${address}' given back to its driver after VM '${event.domainName}'`, { ...base, PCI_ADDRESS: address, MESSAGE_ID: MessageId.DEVICE_REATTACHED });
    }
    for (const shm of outcome.shm) {
      if (shm.action === 'unchanged') continue;
      const created = shm.action === 'created';
      log.info(
        created ? `Shared-memory file '${shm.path}' created` : `Shared-memory file '${shm.path}' repaired: ${shm.changes.join(', ')}`,
        { ...base, SHM_PATH: shm.path, MESSAGE_ID: created ? MessageId.SHM_FILE_CREATED : MessageId.SHM_FILE_REPAIRED },
      );
    }
    for (const warning of outcome.warnings) log.warning(warning, base);
    log.info(outcome.message, base);
    // After a libvirtd restart libvirt-dbus is silent until called: call it once
    // when libvirtd shows it restarted (reconnect) or is starting a VM (prepare),
    // so the events of that VM reach us. poke() waits until no hook runs.
    if (outcome.stage === 'reconnect' || outcome.stage === 'prepare') void libvirt.poke();
    notifier.status(`Ready; last: ${event.operation} ${event.subOperation} of '${event.domainName}'`);
  },
  onRefused: (domainName, operation, subOperation, error) => {
    log.error(`Hook '${operation} ${subOperation}' for VM '${domainName}' refused: ${(error as Error).message}`, {
      VFIO_DOMAIN: domainName,
      VFIO_HOOK: `${operation} ${subOperation}`,
      MESSAGE_ID: MessageId.HOOK_REFUSED,
    });
  },
});
const callers = new CallerTracker(bus);
const manager = new ManagerInterface(backend, {
  version: VERSION,
  currentCaller: () => callers.current(),
  configError: () => configError?.message ?? '',
  configFile: configPath,
  runRoot: roots.run,
  machines: () => objects.machinePaths,
  onError: (member, error) => {
    // Hook refusals are logged once by onRefused; everything else here, with the stack for unknown errors.
    if (member === 'HandleHook') return;
    const e = error as Error;
    log.warning(`${member} failed: ${e.message ?? String(error)}`, {
      DBUS_MEMBER: member,
      ...(error instanceof VfioHookdError ? {} : { ERROR_STACK: e.stack }),
    });
  },
});


let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  notifier.stopping(`Stopping on ${signal}`);
  watcher.close();
  libvirt.close();
  try {
    await bus.releaseName(BUS_NAME);
  } catch (error) {
    log.warning(`Cannot release '${BUS_NAME}': ${(error as Error).message}`);
  }
  // A hook in flight finishes, or fails and rolls back: never a half-bound device.
  const grace = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), STOP_GRACE_MS).unref());
  if ((await Promise.race([lifecycle.idle().then(() => 'idle' as const), grace])) === 'timeout') {
    log.error(`A hook was still running ${STOP_GRACE_MS / 1000} s after ${signal}; stopping anyway`);
  }
  inhibitor.releaseAll();
  notifier.close();
  bus.disconnect();
  await port.close();
  log.info(`vfio-hookd stopped on ${signal}`);
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGHUP', () => {
  void backend.reload().catch(() => {
    // The watcher's 'error' event has logged it; the running configuration stays.
  });
});

// libvirt's own view through libvirt-dbus, when it is on this bus (it is optional).
const libvirt = new LibvirtEvents({
  bus,
  idle: () => lifecycle.idle(),
  onAvailable: (available) => {
    log.info(available ? 'libvirt-dbus is on the bus: following domain events' : 'libvirt-dbus left the bus');
    backend.libvirtAvailable = available;
    if (available) {
      // VMs that stopped while we were down: released from their records (see DaemonBackend.releaseStopped).
      void libvirt
        .allDomains()
        .then(async (domains) => {
          if (domains === null) return;
          for (const { name, outcome } of await backend.releaseStopped(domains)) {
            log.notice(`VM '${name}' held devices but libvirt reports it not running (it stopped while vfio-hookd was down): ${outcome.message}`, {
              VFIO_DOMAIN: name,
              MESSAGE_ID: MessageId.STALE_RELEASED,
            });
          }
        })
        .catch((error: Error) => log.warning(`Cannot release VMs that stopped while vfio-hookd was down: ${error.message}`));
      void libvirt
        .runningDomains()
        .then((names) => backend.domainsRunning(names))
        .catch((error: Error) => log.warning(`Cannot list the running domains through libvirt-dbus: ${error.message}`));
    }
  },
  onDomainEvent: (name, event) => {
    if (event !== DomainEventType.STARTED) return;
    void backend.domainStarted(name).then((warning) => {
      if (warning === null) return;
      log.error(warning, { VFIO_DOMAIN: name, MESSAGE_ID: MessageId.HOOK_NOT_RECEIVED });
      notifier.status(`Ready; VM '${name}' started without its prepare hook`);
    });
  },
  onError: (error) => log.debug(`libvirt-dbus: ${error.message}`),
});
bus.export(ROOT_PATH, manager);

// A second daemon must exit before it reads or rewrites what the running one
// records: ask the bus whether the name has an owner before touching any
// state. The name itself is requested only after recovery and the first
// refresh, so a client that sees it owned (the user agent) finds the Machine
// objects already there. Two daemons started in the same instant could both
// pass this check; their recoveries then run one after the other under the
// state lock (recovery on a consistent state changes nothing) and the loser's
// RequestName below fails. systemd never starts two anyway.
try {
  const driver = (await bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus')).getInterface('org.freedesktop.DBus');
  if ((await (driver['NameHasOwner'] as (n: string) => Promise<boolean>)(BUS_NAME)) === true) {
    fail(`The bus name '${BUS_NAME}' is already owned by another process (is vfio-hookd already running?), exiting`);
  }
} catch (error) {
  fail(`Cannot ask the bus who owns '${BUS_NAME}': ${(error as Error).message}`);
}

const recovered = await lifecycle.recover();
for (const note of recovered) log.warning(note, { MESSAGE_ID: MessageId.STATE_RECOVERED });
await backend.noteStartState();
refreshObjects();
await refreshing;

let reply: number;
try {
  reply = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
} catch (error) {
  fail(`Cannot own the bus name '${BUS_NAME}': ${(error as Error).message}`);
}
if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
  fail(`The bus name '${BUS_NAME}' is already owned by another process (is vfio-hookd already running?), exiting`);
}

await libvirt.start().catch((error: Error) => log.warning(`Cannot follow libvirt-dbus: ${error.message}`));
for (const warning of await lifecycle.retakeSleepLocks()) log.warning(warning);

notifier.ready(`Ready; ${config.vms.size} VM(s) managed`);
notifier.startWatchdog();
log.info(
  `vfio-hookd ${VERSION} owns '${BUS_NAME}'; ${config.vms.size} VM(s) in '${configPath}'` +
    (values.simulate !== undefined ? ` (simulated host '${values.simulate}')` : ''),
);
