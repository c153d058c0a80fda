/**
 * `vfio-hookctl status`: what the running daemon knows of each VM, read from
 * its Machine objects on the system bus (properties only: anyone may run it).
 */
import fs from 'node:fs/promises';
import dbus from 'dbus-next';
import { DaemonNotRunning } from '../errors.js';
import { openBus } from './daemon-client.js';

export interface MachineStatus {
  name: string;
  state: string;
  user: string;
  devices: string[];
  shmFiles: string[];
  units: string[];
  lastMessage: string;
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
    const manager = await bus.getProxyObject('org.vfiohookd1', '/org/vfiohookd1').catch((error: Error) => {
      throw new DaemonNotRunning(`vfio-hookd is not running: nobody owns 'org.vfiohookd1' on the system bus (${error.message}); start it with 'systemctl start vfio-hookd'`);
    });
    const props = manager.getInterface('org.freedesktop.DBus.Properties');
    const all = await (props['GetAll'] as (i: string) => Promise<Record<string, { value: unknown }>>)('org.vfiohookd1.Manager');
    const str = (k: string): string => (typeof all[k]?.value === 'string' ? (all[k].value as string) : '');
    const configFile = str('ConfigFile');
    const real = configFile === '' ? null : await fs.realpath(configFile).catch(() => null);
    return { version: str('Version'), configFile, configRealPath: real, configError: str('ConfigError') };
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
      manager = await bus.getProxyObject('org.vfiohookd1', '/org/vfiohookd1');
    } catch (error) {
      throw new DaemonNotRunning(
        `vfio-hookd is not running: nobody owns 'org.vfiohookd1' on the system bus (${(error as Error).message}); start it with 'systemctl start vfio-hookd'`,
      );
    }
    const list = (await (manager.getInterface('org.vfiohookd1.Manager')['ListMachines'] as () => Promise<[string, string, string][]>)());
    const out: MachineStatus[] = [];
    for (const [name, state, path] of list) {
      const props = (await bus.getProxyObject('org.vfiohookd1', path)).getInterface('org.freedesktop.DBus.Properties');
      const all = (await (props['GetAll'] as (i: string) => Promise<Record<string, { value: unknown }>>)('org.vfiohookd1.Machine'));
      const str = (k: string): string => (typeof all[k]?.value === 'string' ? (all[k].value as string) : '');
      const arr = (k: string): string[] => (Array.isArray(all[k]?.value) ? (all[k].value as string[]) : []);
      out.push({
        name,
        state,
        user: str('User'),
        devices: arr('Devices'),
        shmFiles: arr('ShmFiles'),
        units: arr('Units'),
        lastMessage: str('LastMessage'),
        failedUnits: [],
      });
    }
    return out;
  } finally {
    bus.disconnect();
  }
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
    const agent = (await bus.getProxyObject('org.vfiohookd1.Agent', '/org/vfiohookd1/agent')).getInterface('org.freedesktop.DBus.Properties');
    const failures = (await (agent['Get'] as (i: string, p: string) => Promise<{ value: [string, string, string][] }>)('org.vfiohookd1.Agent', 'Failures')).value;
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
          `  shm files: ${m.shmFiles.join(', ') || '-'}`,
          ...(m.units.length > 0 ? [`  units: ${m.units.join(', ')}`] : []),
          ...m.failedUnits.map((f) => `  failed unit: ${f.unit}: ${f.reason}`),
          ...(m.lastMessage ? [`  last: ${m.lastMessage}`] : []),
        ].join('\n'),
      )
      .join('\n') + '\n'
  );
}
