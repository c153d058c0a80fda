/**
 * `vfio-hookctl status`: what the running daemon knows of each VM, read from
 * its Machine objects on the system bus (properties only: anyone may run it).
 */
import fs from 'node:fs/promises';
import dbus from 'dbus-next';
import { DaemonNotRunning } from '../errors.js';
import { decodeMachineProperties, decodeMachineTuple, type MachineState, type ShmDetail } from '../bus/dbus-types.js';
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

interface MachineStatus {
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
  /** Since when it is in its state (ISO 8601), or null when the daemon has not seen it change since it started. */
  since: string | null;
  /** While preparing or releasing: the step now running and since when (ISO 8601). */
  step: { text: string; since: string } | null;
  /** The shm files as its prepare left them. */
  shmDetails: ShmDetail[];
  /** The driver each held device goes back to (null: the kernel chooses). */
  returnDrivers: { address: string; driver: string | null }[];
  /** The host changes in effect for it (its record's), in the order made; [] from a daemon without them. */
  hostChanges: { kind: string; phase: string; describe: string }[];
}

const iso = (usec: bigint | undefined): string | null =>
  usec === undefined || usec === 0n ? null : new Date(Number(usec / 1000n)).toISOString();

/** What the daemon says of itself: its version, configuration file (and where it really is) and any error loading it. */
interface DaemonStatus {
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
        since: iso(machine.stateSinceUsec),
        step: machine.step ? { text: machine.step, since: iso(machine.stepSinceUsec) ?? new Date().toISOString() } : null,
        shmDetails: [...(machine.shmDetails ?? [])],
        returnDrivers: [...(machine.returnDrivers ?? [])],
        hostChanges: [...(machine.hostChanges ?? [])],
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

const MiB = 1024 * 1024;

function shmText(f: ShmDetail): string {
  const size = f.sizeBytes % MiB === 0 ? `${f.sizeBytes / MiB} MiB` : `${f.sizeBytes} bytes`;
  return `${f.name} (${size}, uid ${f.uid}, gid ${f.gid}, mode ${(f.mode & 0o7777).toString(8).padStart(4, '0')})`;
}

function sinceText(iso: string, now: Date): string {
  const at = new Date(iso);
  const seconds = Math.max(0, Math.round((now.getTime() - at.getTime()) / 1000));
  const ago = seconds < 120 ? `${seconds} s` : seconds < 7200 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds / 3600)} h`;
  return `since ${at.toTimeString().slice(0, 8)}, ${ago} ago`;
}

export function formatStatus(machines: readonly MachineStatus[], now: Date = new Date()): string {
  if (machines.length === 0) return 'No VM configured (see /etc/vfio-hookd/vfio-hookd.toml).\n';
  return (
    machines
      .map((m) =>
        [
          `${m.name}: ${m.state}${m.user ? ` (user ${m.user})` : ''}${m.since ? `, ${sinceText(m.since, now)}` : ''}`,
          ...(m.step
            ? [`  now: ${m.step.text}, ${Math.max(0, Math.floor((now.getTime() - new Date(m.step.since).getTime()) / 1000))} s`]
            : []),
          `  devices: ${
            m.devices
              .map((d) => {
                const back = m.returnDrivers.find((r) => r.address === d);
                return back === undefined ? d : `${d} (back to ${back.driver ?? 'what the kernel chooses'})`;
              })
              .join(', ') || '-'
          }`,
          ...(m.heldAtBoot.length > 0
            ? [`  held at boot for VM '${m.name}': ${m.heldAtBoot.join(', ')} (on vfio-pci until the host shuts down)`]
            : []),
          `  shm files: ${m.shmDetails.length > 0 ? m.shmDetails.map(shmText).join(', ') : m.shmFiles.join(', ') || '-'}`,
          ...(m.units.length > 0 ? [`  units: ${m.units.join(', ')}`] : []),
          ...m.hostChanges.map((c) => `  host change: ${c.describe} (${c.kind}, undone at release)`),
          ...m.failedUnits.map((f) => `  failed unit: ${f.unit}: ${f.reason}`),
          ...(m.lastMessage ? [`  last: ${m.lastMessage}`] : []),
        ].join('\n'),
      )
      .join('\n') + '\n'
  );
}
