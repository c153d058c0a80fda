/**
 * `vfio-hookctl monitor`: what the daemon does, live, until Ctrl-C. Hooks as
 * they finish (HookHandled), each step of a prepare or release as it starts
 * (StepStarted), every Machine's state change (PropertiesChanged), and, when
 * the caller's session bus has an agent, its units starting and stopping.
 *
 * Nothing is polled: the match rules ask the bus for the daemon's signals,
 * and the bus resolves the well-known name in them to whoever owns it, so
 * a daemon that restarts is followed too (NameOwnerChanged says when).
 * `--json` prints one object a line, for scripts.
 */
import dbus from 'dbus-next';
import { decodeMachineProperties, strings } from '../bus/dbus-types.js';
import {
  AGENT_BUS_NAME,
  AGENT_INTERFACE,
  AgentMember,
  BUS_NAME,
  DBUS_DRIVER_INTERFACE,
  DBUS_DRIVER_NAME,
  DBUS_DRIVER_PATH,
  MACHINE_INTERFACE,
  MACHINE_PATH_PREFIX,
  MANAGER_INTERFACE,
  ManagerMember,
  PROPERTIES_INTERFACE,
} from '../bus/names.js';
import { machineNameOf } from '../bus/object-path.js';
import { daemonRunning, openBus } from './daemon-client.js';

/** One line of the feed. */
export type MonitorEvent =
  | { kind: 'hook'; vm: string; operation: string; subOperation: string; success: boolean; message: string; durationMs: number }
  | { kind: 'step'; vm: string; stage: string; step: string }
  | { kind: 'state'; vm: string; state: string; message: string }
  | { kind: 'units'; vm: string | null; active: string[]; failed: string[] }
  | { kind: 'daemon'; running: boolean };

export interface MonitorOptions {
  readonly busAddress: string | undefined;
  /** The caller's session bus (the agent); undefined: $DBUS_SESSION_BUS_ADDRESS, when set. */
  readonly sessionBusAddress: string | undefined;
  readonly json: boolean;
  readonly write: (line: string) => void;
  /** Resolves when the feed should end (SIGINT). */
  readonly until: Promise<void>;
  readonly now?: () => Date;
}

function time(d: Date): string {
  return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

export function formatEvent(event: MonitorEvent, at: Date): string {
  const t = time(at);
  switch (event.kind) {
    case 'hook':
      return `${t}  ${event.vm}  hook ${event.operation} ${event.subOperation}: ${event.success ? 'ok' : 'refused'} in ${event.durationMs} ms${event.message === '' ? '' : `: ${event.message}`}`;
    case 'step':
      return `${t}  ${event.vm}  ${event.stage}: ${event.step}`;
    case 'state':
      return `${t}  ${event.vm}  state ${event.state}${event.message === '' ? '' : `: ${event.message}`}`;
    case 'units':
      return `${t}  ${event.vm ?? 'agent'}  units: active ${event.active.join(', ') || 'none'}${event.failed.length > 0 ? `; failed ${event.failed.join(', ')}` : ''}`;
    case 'daemon':
      return `${t}  vfio-hookd ${event.running ? 'is running' : 'is not running (waiting for it)'}`;
  }
}

async function addMatch(bus: dbus.MessageBus, rule: string): Promise<void> {
  await bus.call(
    new dbus.Message({
      destination: DBUS_DRIVER_NAME,
      path: DBUS_DRIVER_PATH,
      interface: DBUS_DRIVER_INTERFACE,
      member: 'AddMatch',
      signature: 's',
      body: [rule],
    }),
  );
}

/** Follow the daemon until `options.until` resolves; resolves with the exit code. */
export async function runMonitor(options: MonitorOptions): Promise<number> {
  const now = options.now ?? (() => new Date());
  const emit = (event: MonitorEvent): void => {
    const at = now();
    options.write((options.json ? JSON.stringify({ time: at.toISOString(), ...event }) : formatEvent(event, at)) + '\n');
  };
  const bus = await openBus(options.busAddress);
  const buses: dbus.MessageBus[] = [bus];
  try {
    bus.on('message', (msg: dbus.Message) => {
      if (msg.type !== dbus.MessageType.SIGNAL) return;
      const event = daemonEvent(msg);
      if (event !== null) emit(event);
    });
    await addMatch(bus, `type='signal',sender='${BUS_NAME}',interface='${MANAGER_INTERFACE}'`);
    await addMatch(bus, `type='signal',sender='${BUS_NAME}',interface='${PROPERTIES_INTERFACE}',path_namespace='${MACHINE_PATH_PREFIX}'`);
    await addMatch(bus, `type='signal',sender='${DBUS_DRIVER_NAME}',member='NameOwnerChanged',arg0='${BUS_NAME}'`);
    emit({ kind: 'daemon', running: await daemonRunning(options.busAddress) });

    const session = options.sessionBusAddress ?? process.env['DBUS_SESSION_BUS_ADDRESS'];
    if (session !== undefined && session !== '') {
      // The agent is optional (root has none): a session bus we cannot reach only costs the unit lines.
      const agentBus = await openBus(session).catch(() => null);
      if (agentBus !== null) {
        buses.push(agentBus);
        agentBus.on('message', (msg: dbus.Message) => {
          if (msg.type !== dbus.MessageType.SIGNAL || msg.interface !== PROPERTIES_INTERFACE || msg.body[0] !== AGENT_INTERFACE) return;
          const changed = msg.body[1] as Record<string, dbus.Variant>;
          const active = strings(changed[AgentMember.ActiveUnits]?.value);
          const failed = strings(changed[AgentMember.FailedUnits]?.value);
          if (active !== null || failed !== null) emit({ kind: 'units', vm: null, active: active ?? [], failed: failed ?? [] });
        });
        await addMatch(agentBus, `type='signal',sender='${AGENT_BUS_NAME}',interface='${PROPERTIES_INTERFACE}'`).catch(() => undefined);
      }
    }
    await options.until;
    return 0;
  } finally {
    for (const b of buses) b.disconnect();
  }
}

function daemonEvent(msg: dbus.Message): MonitorEvent | null {
  if (msg.interface === MANAGER_INTERFACE && msg.member === ManagerMember.HookHandled) {
    const [vm, operation, subOperation, success, message, duration] = msg.body as [string, string, string, boolean, string, bigint];
    return { kind: 'hook', vm, operation, subOperation, success, message, durationMs: Math.round(Number(duration) / 1000) };
  }
  if (msg.interface === MANAGER_INTERFACE && msg.member === ManagerMember.StepStarted) {
    const [vm, stage, step] = msg.body as [string, string, string];
    return { kind: 'step', vm, stage, step };
  }
  if (msg.interface === PROPERTIES_INTERFACE && msg.member === 'PropertiesChanged' && msg.body[0] === MACHINE_INTERFACE) {
    const changed = msg.body[1] as Record<string, dbus.Variant>;
    const values = Object.fromEntries(Object.entries(changed).map(([k, v]) => [k, v.value]));
    const decoded = decodeMachineProperties(values);
    const vm = machineNameOf(msg.path ?? '');
    if (decoded.state === undefined || vm === null) return null;
    return { kind: 'state', vm, state: decoded.state, message: decoded.lastMessage ?? '' };
  }
  if (msg.interface === DBUS_DRIVER_INTERFACE && msg.member === 'NameOwnerChanged') {
    const [, , owner] = msg.body as [string, string, string];
    return { kind: 'daemon', running: owner !== '' };
  }
  return null;
}
