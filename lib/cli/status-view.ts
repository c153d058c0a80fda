/**
 * `vfio-hookctl status`: what the running daemon knows of each VM, read from
 * its Machine objects on the system bus (properties only: anyone may run it).
 */
import fs from 'node:fs/promises';
import dbus from 'dbus-next';
import { DaemonNotRunning } from '../errors.js';
import { decodeMachineProperties, decodeMachineTuple, type MachineState } from '../bus/dbus-types.js';
import {
  AGENT_BUS_NAME,
  AGENT_INTERFACE,
  AGENT_PATH,
  AgentMember,
  BUS_NAME,
  MACHINE_INTERFACE,
  MANAGER_INTERFACE,
  ManagerMember,
  PROPERTIES_INTERFACE,
  ROOT_PATH,
} from '../bus/names.js';
import { openBus } from './daemon-client.js';

export interface MachineStatus {
  name: string;
  /** 'unknown' for a state this version does not know (a newer daemon). */
  state: MachineState | 'unknown';
  user: string;
  devices: string[];
  shmFiles: string[];
  units: string[];
  lastMessage: string;
  /** Of `devices`, those held at boot for this VM (`hold = "boot"`); [] from a daemon without boot holds. */
  heldAtBoot: string[];
  /** Units the caller's agent reports failed for this VM, with the reason ([] when none, or no agent to ask). */
  failedUnits: { unit: string; reason: string }[];
}

/** What the daemon says of itself: its version, configuration file (and where it really is) and any error loading it. */
export interface DaemonStatus {
  version: string;
  configFile: string;
  configRealPath: string | null;
  configError: string;
}

export async function readDaemonStatus(busAddress: string | undefined): Promise<DaemonStatus> {
  const bus = await openBus(busAddress);
  try {
    const manager = await bus.getProxyObject(BUS_NAME, ROOT_PATH).catch((error: Error) => {
      throw notRunning(error);
    });
    const props = manager.getInterface(PROPERTIES_INTERFACE);
    const all = await (props['GetAll'] as (i: string) => Promise<Record<string, { value: unknown }>>)(MANAGER_INTERFACE);
    const str = (k: string): string => (typeof all[k]?.value === 'string' ? (all[k].value as string) : '');
    const configFile = str(ManagerMember.ConfigFile);
    const real = configFile === '' ? null : await fs.realpath(configFile).catch(() => null);
    return { version: str(ManagerMember.Version), configFile, configRealPath: real, configError: str(ManagerMember.ConfigError) };
  } finally {
    bus.disconnect();
  }
}

export function formatDaemonStatus(d: DaemonStatus): string {
  const where = d.configRealPath !== null && d.configRealPath !== d.configFile ? ` (really '${d.configRealPath}')` : '';
  return (
    `vfio-hookd ${d.version}, configuration '${d.configFile}'${where}` +
    (d.configError ? `\n  configuration error: ${d.configError}; VMs with <hostdev> or <shmem> are refused until it loads` : '') +
    '\n'
  );
}

export async function readStatus(busAddress: string | undefined): Promise<MachineStatus[]> {
  const bus = await openBus(busAddress);
  try {
    let manager: dbus.ProxyObject;
    try {
      manager = await bus.getProxyObject(BUS_NAME, ROOT_PATH);
    } catch (error) {
      throw notRunning(error as Error);
    }
    const list = await (manager.getInterface(MANAGER_INTERFACE)[ManagerMember.ListMachines] as () => Promise<unknown[][]>)();
    const out: MachineStatus[] = [];
    for (const { name, state, path } of list.map(decodeMachineTuple)) {
      const props = (await bus.getProxyObject(BUS_NAME, path)).getInterface(PROPERTIES_INTERFACE);
      const all = await (props['GetAll'] as (i: string) => Promise<Record<string, { value: unknown }>>)(MACHINE_INTERFACE);
      const machine = decodeMachineProperties(Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.value])));
      out.push({
        name,
        state: state ?? 'unknown',
        user: machine.user ?? '',
        devices: [...(machine.devices ?? [])],
        shmFiles: [...(machine.shmFiles ?? [])],
        units: [...(machine.units ?? [])],
        lastMessage: machine.lastMessage ?? '',
        heldAtBoot: [...(machine.heldAtBoot ?? [])],
        failedUnits: [],
      });
    }
    return out;
  } finally {
    bus.disconnect();
  }
}

function notRunning(error: Error): DaemonNotRunning {
  return new DaemonNotRunning(
    `vfio-hookd is not running: nobody owns '${BUS_NAME}' on the system bus (${error.message}); start it with 'systemctl start vfio-hookd'`,
  );
}

/**
 * The caller's own agent (org.vfiohookd1.Agent on the session bus) knows which
 * of their units failed; root's status cannot see a user's session bus, so
 * this adds what it can: nothing when there is no session bus or no agent.
 */
export async function addAgentFailures(machines: MachineStatus[], sessionBusAddress: string | undefined): Promise<void> {
  const address =
    sessionBusAddress ??
    process.env['DBUS_SESSION_BUS_ADDRESS'] ??
    (process.env['XDG_RUNTIME_DIR'] ? `unix:path=${process.env['XDG_RUNTIME_DIR']}/bus` : undefined);
  if (address === undefined) return;
  let bus: dbus.MessageBus | null = null;
  try {
    bus = dbus.sessionBus({ busAddress: address });
    const agent = (await bus.getProxyObject(AGENT_BUS_NAME, AGENT_PATH)).getInterface(PROPERTIES_INTERFACE);
    const failures = (
      await (agent['Get'] as (i: string, p: string) => Promise<{ value: [string, string, string][] }>)(
        AGENT_INTERFACE,
        AgentMember.Failures,
      )
    ).value;
    for (const [vm, unit, reason] of failures) machines.find((m) => m.name === vm)?.failedUnits.push({ unit, reason });
  } catch {
    // No session bus or no agent running: status shows what the daemon knows.
  } finally {
    bus?.disconnect();
  }
}

export function formatStatus(machines: readonly MachineStatus[]): string {
  if (machines.length === 0) return 'No VM configured (see /etc/vfio-hookd/vfio-hookd.toml).\n';
  return (
    machines
      .map((m) =>
        [
          `${m.name}: ${m.state}${m.user ? ` (user ${m.user})` : ''}`,
          `  devices: ${m.devices.join(', ') || '-'}`,
          ...(m.heldAtBoot.length > 0
            ? [`  held at boot for VM '${m.name}': ${m.heldAtBoot.join(', ')} (on vfio-pci until the host shuts down)`]
            : []),
          `  shm files: ${m.shmFiles.join(', ') || '-'}`,
          ...(m.units.length > 0 ? [`  units: ${m.units.join(', ')}`] : []),
          ...m.failedUnits.map((f) => `  failed unit: ${f.unit}: ${f.reason}`),
          ...(m.lastMessage ? [`  last: ${m.lastMessage}`] : []),
        ].join('\n'),
      )
      .join('\n') + '\n'
  );
}
