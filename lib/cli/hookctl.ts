/**
 * `vfio-hookctl`: look at and move PCI devices.
 *
 * One writer of the state: `detach` and `reattach` go through the daemon's
 * `DetachDevice`/`ReattachDevice` when it runs (on the system bus, or the bus
 * `--bus-address` names); only when it does not do they write sysfs and the
 * state file here, under the state lock the daemon takes too, with the same
 * write-ahead record (lib/lifecycle/device-ledger.ts).
 *
 * Exit codes: 0 done, 1 refused or failed (one sentence on stderr saying
 * why, never a stack trace), 2 bad usage.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InvalidArgs, VfioHookdError, q } from '../errors.js';
import { DEFAULT_ROOTS, type HostRoots } from '../roots.js';
import { openRealKernel } from '../pci/real-kernel-factory.js';
import { PciEngine } from '../pci/engine.js';
import type { KernelPort } from '../pci/kernel-port.js';
import type { Plan } from '../pci/plan.js';
import { describeStep, stepLine } from '../pci/step-text.js';
import { StateFile } from '../state/state-file.js';
import { DeviceLedger } from '../lifecycle/device-ledger.js';
import { manualOwner, vmOwner, type Owner } from '../pci/owner.js';
import { callDaemon, daemonRunning } from './daemon-client.js';
import { ManagerMember } from '../bus/names.js';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_CONFIG_PATH } from '../config/index.js';
import { doctorExitCode, formatChecks } from './doctor/check.js';
import { runDoctor } from './doctor/doctor.js';
import { runMonitor } from './monitor.js';
import { appendTable, formatSuggestion, suggest } from './config-suggest.js';
import { HostView } from './doctor/host-view.js';
import { loadPciNames } from '../pci/pci-ids.js';
import { openSimulation } from '../sim/index.js';
import { VERSION } from '../version.js';
import { devicesView, formatDevices } from './device-view.js';
import { addAgentFailures, formatDaemonStatus, formatStatus, readDaemonStatus, readStatus } from './status-view.js';

interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** The terminal's width when stdout is one (devices fits it). */
  readonly columns?: number;
}

const USAGE = `Usage: vfio-hookctl [OPTIONS] COMMAND [ARGS]

Commands:
  status                  What the running daemon knows of each VM (state, devices, files)
  devices                 List PCI devices by IOMMU group: ids, revision, driver, names
                          from pci.ids, holders, host needs, viability, claims
  detach ADDRESS...       Bind the devices, the functions of their cards and the rest
                          of their IOMMU groups to vfio-pci (checked, rolled back on failure)
  reattach ADDRESS...     Give them back to the drivers they had before
  config suggest VM       Propose the [vm.VM] table from the domain libvirt has (devices,
                          shm sizes) and the XML changes it needs; --write appends it
  monitor                 Follow hooks, steps and state changes live, until Ctrl-C
                          (--json: one object a line)
  doctor [VM...]          Check the whole setup read-only (IOMMU, vfio-pci, the hook, the
                          daemon, the configuration, each VM); exit 0 good, 1 a problem,
                          2 something could not be checked (run as root to check all)

Options:
  --json                  Machine-readable output (devices, doctor, and plans with --dry-run)
  --config FILE           doctor: the configuration (default /etc/vfio-hookd/vfio-hookd.toml)
  --connect URI           doctor: the libvirt to read domains from (default qemu:///system;
                          with --simulate or --root, only when given)
  --root DIR              doctor: the system's / (etc, usr, var) to read (default /)
  --write                 config suggest: append the table to the configuration
  --tree                  devices: by bridge (the PCI tree) instead of by IOMMU group
  --width COLUMNS         devices: fit this many columns (default: the terminal's, or 80)
  --pci-ids FILE          devices: the pci.ids to name devices from (default: where lspci
                          finds it, /usr/share/misc/pci.ids or /usr/share/hwdata/pci.ids)
  --dry-run               Print the plan of detach/reattach without changing anything
  --for NAME              Record detached devices as VM NAME's; default: a detach by hand, by you
  --force                 detach: ignore the host-dependency safety rail (mounted disks,
                          network interfaces that are up, the console). Never ignores a
                          process holding the device. (reattach needs no force: a device
                          of a VM that no longer runs is given back; one in use is refused.)
  --simulate FIXTURE      Work on a simulated host instead of this machine: a built-in
                          name (reference-host, single-gpu-host, nvidia-host,
                          split-board-host) or a JSON fixture. Its folder persists, so
                          successive commands see each other's changes.
  --sim-dir DIR           Where the simulated host lives (default
                          $XDG_RUNTIME_DIR/vfio-hookd-sim/FIXTURE)
  --reset-sim             Rebuild the simulated host from its fixture first
  --sysfs-root DIR        sysfs mount (default /sys)
  --proc-root DIR         procfs mount (default /proc)
  --dev-root DIR          device nodes (default /dev)
  --run-root DIR          runtime state, <DIR>/vfio-hookd/state.json (default /run)
  --write-timeout MS      Longest a sysfs write may take (default 10000)
  --bus-address ADDRESS   the bus vfio-hookd is on (default: the system bus); status, and
                          detach/reattach when the daemon runs there
  --session-bus-address ADDRESS
                          status: your session bus, where your agent reports failed units
                          (default: $DBUS_SESSION_BUS_ADDRESS)
  -v, --verbose           Print each kernel step and its time on stderr
  -h, --help              Show this help
  --version               Show the version
`;

const OPTIONS = {
  json: { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  'dry-run': { type: 'boolean' },
  for: { type: 'string' },
  force: { type: 'boolean' },
  simulate: { type: 'string' },
  'sim-dir': { type: 'string' },
  'reset-sim': { type: 'boolean' },
  'sysfs-root': { type: 'string' },
  'proc-root': { type: 'string' },
  'dev-root': { type: 'string' },
  'run-root': { type: 'string' },
  'write-timeout': { type: 'string' },
  'bus-address': { type: 'string' },
  'session-bus-address': { type: 'string' },
  config: { type: 'string' },
  tree: { type: 'boolean' },
  write: { type: 'boolean' },
  width: { type: 'string' },
  'pci-ids': { type: 'string' },
  connect: { type: 'string' },
  root: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

class UsageError extends Error {}

function parse(argv: readonly string[]): { values: Values; positionals: string[] } {
  try {
    return parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function positiveInt(name: string, text: string | undefined, unit = 'milliseconds'): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) <= 0) throw new UsageError(`Invalid --${name} ${q(text)}: expected a positive number of ${unit}`);
  return Number(text);
}

async function openPort(values: Values): Promise<KernelPort> {
  if (values.simulate !== undefined) {
    if (values['sysfs-root'] || values['proc-root'] || values['dev-root'] || values['run-root']) {
      throw new UsageError('--simulate brings its own roots; do not combine it with --sysfs-root, --proc-root, --dev-root or --run-root');
    }
    return openSimulation(values.simulate, {
      ...(values['sim-dir'] !== undefined ? { dir: values['sim-dir'] } : {}),
      reset: values['reset-sim'] ?? false,
    });
  }
  if (values['sim-dir'] !== undefined || values['reset-sim']) throw new UsageError('--sim-dir and --reset-sim need --simulate');
  const roots: HostRoots = {
    sysfs: values['sysfs-root'] ?? DEFAULT_ROOTS.sysfs,
    proc: values['proc-root'] ?? DEFAULT_ROOTS.proc,
    dev: values['dev-root'] ?? DEFAULT_ROOTS.dev,
    shm: DEFAULT_ROOTS.shm,
    run: values['run-root'] ?? DEFAULT_ROOTS.run,
  };
  return openRealKernel(roots);
}

function planText(plan: Plan, dryRun: boolean): string {
  const lines: string[] = [];
  for (const d of plan.devices) {
    const move = d.changes ? `${d.driver ?? 'no driver'} -> ${d.target ?? 'host driver'}` : `stays on ${d.driver ?? 'no driver'}`;
    lines.push(`${d.address}  group ${d.group}  ${move}  (${d.reason})`);
  }
  if (dryRun) {
    lines.push('Steps:');
    plan.steps.forEach((s, i) => lines.push(`  ${i + 1}. ${stepLine(s)}`));
  }
  return lines.join('\n') + '\n';
}

async function run(values: Values, positionals: string[], io: CliIo): Promise<number> {
  const [command, ...args] = positionals;
  if (values.version) {
    io.stdout(`vfio-hookctl ${VERSION}\n`);
    return 0;
  }
  if (values.help || command === undefined) {
    io.stdout(USAGE);
    return command === undefined && !values.help ? 2 : 0;
  }
  if (!['status', 'devices', 'detach', 'reattach', 'doctor', 'monitor', 'config'].includes(command))
    throw new UsageError(`Unknown command ${q(command)}`);
  if (command === 'doctor') return doctor(values, args, io);
  if (command === 'config') return configCommand(values, args, io);
  if (values.write) throw new UsageError('--write is an option of config suggest');
  if (command === 'monitor') {
    if (args.length > 0) throw new UsageError(`'monitor' takes no arguments, got ${q(args[0])}`);
    const until = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    return runMonitor({
      busAddress: values['bus-address'],
      sessionBusAddress: values['session-bus-address'],
      json: values.json ?? false,
      write: io.stdout,
      until,
    });
  }
  if (values.config !== undefined || values.connect !== undefined || values.root !== undefined)
    throw new UsageError('--config, --connect and --root are options of doctor');
  if (command !== 'devices' && (values.tree || values.width !== undefined || values['pci-ids'] !== undefined))
    throw new UsageError('--tree, --width and --pci-ids are options of devices');
  if (command === 'status') {
    if (args.length > 0) throw new UsageError(`'status' takes no arguments, got ${q(args[0])}`);
    const daemon = await readDaemonStatus(values['bus-address']);
    const machines = await readStatus(values['bus-address']);
    await addAgentFailures(machines, values['session-bus-address']);
    io.stdout(values.json ? JSON.stringify({ daemon, machines }, null, 2) + '\n' : formatDaemonStatus(daemon) + formatStatus(machines));
    return 0;
  }
  if (command === 'devices' && args.length > 0) throw new UsageError(`'devices' takes no arguments, got ${q(args[0])}`);
  if (command !== 'devices' && args.length === 0) throw new UsageError(`'${command}' needs at least one PCI address, e.g. 0000:0b:00.0`);
  if (values.for !== undefined && !/^[^\s/][^\n/]{0,199}$/.test(values.for)) {
    throw new InvalidArgs(`Invalid --for ${q(values.for)}: expected a VM name`);
  }
  const owner: Owner = values.for !== undefined ? vmOwner(values.for) : manualOwner(invokingUser());
  const writeTimeoutMs = positiveInt('write-timeout', values['write-timeout']);

  let last = performance.now();
  const trace = (text: string): void => {
    if (!values.verbose) return;
    const now = performance.now();
    io.stderr(`vfio-hookctl: ${text} (${(now - last).toFixed(1)} ms, ${now.toFixed(0)} ms since start)\n`);
    last = now;
  };
  // Through the daemon when it runs (not on a simulated host unless its bus is named).
  if ((command === 'detach' || command === 'reattach') && !values['dry-run']) {
    const viaBus = values.simulate === undefined || values['bus-address'] !== undefined;
    if (viaBus && (await daemonRunning(values['bus-address']))) {
      trace('vfio-hookd runs: asking it');
      for (const address of args) {
        if (command === 'detach')
          await callDaemon(values['bus-address'], ManagerMember.DetachDevice, 'ssb', [address, values.for ?? '', values.force ?? false]);
        else await callDaemon(values['bus-address'], ManagerMember.ReattachDevice, 's', [address]);
      }
      io.stdout(`${command === 'detach' ? 'Detached' : 'Given back'} by vfio-hookd: ${args.join(', ')}\n`);
      return 0;
    }
  }

  const port = await openPort(values);
  try {
    const engine = new PciEngine(port, {
      ...(writeTimeoutMs !== undefined ? { writeTimeoutMs } : {}),
      onStepStart: (step) => trace(`${describeStep(step)}...`),
      onStep: (step) => trace(`done: ${stepLine(step)}`),
    });
    const ledger = new DeviceLedger({ engine, state: new StateFile(port.roots.run) });
    const state = await ledger.read();
    trace('opened host and state');

    if (command === 'devices') {
      // A simulated host is its own root, pci.ids included (none is fine: class names only).
      const root = values.simulate !== undefined ? path.dirname(port.roots.sysfs) : '/';
      const names = await loadPciNames(root, values['pci-ids']).catch((error: Error) => {
        throw new InvalidArgs(`Cannot read --pci-ids ${q(values['pci-ids'] ?? '')}: ${error.message}`);
      });
      const view = devicesView(await engine.inspect(), state.claims, names);
      const width = positiveInt('width', values.width, 'columns') ?? io.columns ?? 80;
      io.stdout(values.json ? JSON.stringify(view, null, 2) + '\n' : formatDevices(view, { width, tree: values.tree ?? false }));
      return 0;
    }

    const planOptions = { owner, claims: state.claims, force: values.force ?? false };
    if (values['dry-run']) {
      // The same read and plan as the real run (engine.planDetach/planReattach).
      const { plan } = command === 'detach' ? await engine.planDetach(args, planOptions) : await engine.planReattach(args, planOptions);
      io.stdout(values.json ? JSON.stringify(plan, null, 2) + '\n' : planText(plan, true));
      return 0;
    }

    const result = command === 'detach' ? await ledger.detach(owner, args, values.force ?? false) : await ledger.reattach(owner, args);
    trace(`saved ${ledger.file.path}`);
    if (result !== null) io.stdout(values.json ? JSON.stringify(result.plan, null, 2) + '\n' : planText(result.plan, false));
    return 0;
  } finally {
    await port.close();
    trace('closed the kernel port');
  }
}

async function configCommand(values: Values, args: string[], io: CliIo): Promise<number> {
  const [sub, vm, ...rest] = args;
  if (sub !== 'suggest')
    throw new UsageError(sub === undefined ? "'config' needs a subcommand: suggest VM" : `Unknown subcommand 'config ${sub}'`);
  if (vm === undefined || vm === '' || vm.startsWith('-')) throw new UsageError("'config suggest' needs a VM name");
  if (rest.length > 0) throw new UsageError(`'config suggest' takes one VM, got ${q(rest[0])} too`);
  const root = values.root ?? '/';
  const custom = values.root !== undefined;
  const configPath = values.config ?? (custom ? path.join(root, DEFAULT_CONFIG_PATH) : DEFAULT_CONFIG_PATH);
  const host = new HostView(root, DEFAULT_ROOTS);
  const sudo = process.env['SUDO_USER'];
  const user = sudo !== undefined && /^[a-z_][a-z0-9_.-]*$/i.test(sudo) ? sudo : process.getuid?.() === 0 ? null : invokingUser();
  const suggestion = await suggest(host, values.connect ?? (custom ? null : 'qemu:///system'), vm, user);
  if (values.json) io.stdout(JSON.stringify(suggestion, null, 2) + '\n');
  else io.stdout(formatSuggestion(suggestion, configPath));
  if (values.write) {
    await appendTable(configPath, suggestion);
    io.stderr(`vfio-hookctl: added [vm.${vm}] to ${configPath}; the daemon picks it up on its own\n`);
  }
  return 0;
}

async function doctor(values: Values, vms: string[], io: CliIo): Promise<number> {
  for (const vm of vms) if (vm.startsWith('-') || vm === '') throw new UsageError(`Invalid VM name ${q(vm)}`);
  const port = await openPort(values);
  try {
    const simulated = values.simulate !== undefined;
    // A simulated host is its own root: lib/sim lays out sys/, proc/, dev/ and run/ under one folder.
    const root = values.root ?? (simulated ? path.dirname(port.roots.sysfs) : '/');
    const custom = simulated || values.root !== undefined;
    const checks = await runDoctor({
      root,
      port,
      configPath: values.config ?? (custom ? path.join(root, DEFAULT_CONFIG_PATH) : DEFAULT_CONFIG_PATH),
      busAddress: values['bus-address'],
      connect: values.connect ?? (custom ? null : 'qemu:///system'),
      vms,
    });
    io.stdout(values.json ? JSON.stringify({ checks, exitCode: doctorExitCode(checks) }, null, 2) + '\n' : formatChecks(checks));
    return doctorExitCode(checks);
  } finally {
    await port.close();
  }
}

/** Who runs us: the user behind sudo when there is one, else the process's user. */
function invokingUser(): string {
  const sudo = process.env['SUDO_USER'];
  if (sudo && /^[a-z_][a-z0-9_.-]*\$?$/i.test(sudo)) return sudo;
  try {
    return os.userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? -1}`;
  }
}

/** Run the CLI; returns the exit code. Errors are reported on `io.stderr`, never thrown. */
export async function runHookctl(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    return await run(values, positionals, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`vfio-hookctl: ${error.message}\nTry 'vfio-hookctl --help'.\n`);
      return 2;
    }
    if (error instanceof VfioHookdError) {
      io.stderr(`vfio-hookctl: ${error.message}\n`);
      return 1;
    }
    const e = error as NodeJS.ErrnoException;
    if (e.code === 'EACCES' || e.code === 'EPERM') {
      io.stderr(`vfio-hookctl: ${e.message}; changing drivers needs root (sudo vfio-hookctl ...)\n`);
      return 1;
    }
    io.stderr(`vfio-hookctl: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
