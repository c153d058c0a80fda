/**
 * Put the agent together on two bus connections: the system bus (the
 * daemon's Machine objects) and the user's session bus (the user's systemd
 * manager, and our own `org.vfiohookd1.Agent` object).
 *
 * Order: export the Agent object and own its name, subscribe to the user
 * manager (Subscribe + JobRemoved match), then subscribe to the daemon's
 * signals and read its machines. When `start()` resolves, the units of VMs
 * already running have been started (or 10 s have passed) and READY=1 may be sent.
 */
import os from 'node:os';
import dbus from 'dbus-next';
import { Agent, type AgentIdentity, type AgentLog } from './agent.js';
import { EMPTY_AGENT_CONFIG, loadAgentConfig, type AgentConfig } from './agent-config.js';
import { AGENT_BUS_NAME, AGENT_PATH } from '../bus/names.js';
import { AgentObject } from './agent-object.js';
import { MachineFollower } from './machine-follower.js';
import { OrderedBus } from './ordered-bus.js';
import { UserSystemd } from './user-systemd.js';

interface RunAgentOptions {
  /** System bus address; default the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or /run/dbus/system_bus_socket). */
  readonly systemBusAddress?: string;
  /** Session bus address; default `DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus` (see defaultSessionBusAddress). */
  readonly sessionBusAddress?: string;
  /** agent.toml path; its absence is an empty configuration. */
  readonly configPath: string;
  readonly log: AgentLog;
  /** Default: this process's user. */
  readonly identity?: AgentIdentity;
  /** How long start() waits for the jobs of the first read. Default 10 s. */
  readonly initialJobsTimeoutMs?: number;
  /** A bus connection broke: the caller exits (systemd restarts the agent). */
  readonly onFatal: (error: Error) => void;
}

interface RunningAgent {
  readonly agent: Agent;
  readonly follower: MachineFollower;
  stop(): void;
}

/**
 * `DBUS_SESSION_BUS_ADDRESS`, else the user bus at `$XDG_RUNTIME_DIR/bus`
 * (what sd_bus_open_user() does: a user manager does not always export the
 * variable to its units), else undefined (dbus-next's own lookup).
 */
function defaultSessionBusAddress(env: NodeJS.ProcessEnv): string | undefined {
  if (env['DBUS_SESSION_BUS_ADDRESS']) return env['DBUS_SESSION_BUS_ADDRESS'];
  if (env['XDG_RUNTIME_DIR']) return `unix:path=${env['XDG_RUNTIME_DIR']}/bus`;
  return undefined;
}

export async function startAgent(options: RunAgentOptions): Promise<RunningAgent> {
  const { log } = options;
  const identity = options.identity ?? { name: os.userInfo().username, uid: os.userInfo().uid };
  let config: AgentConfig = EMPTY_AGENT_CONFIG;
  try {
    config = await loadAgentConfig(options.configPath);
  } catch (error) {
    log.error(`${(error as Error).message}; going on without it`);
  }

  const systemBus = options.systemBusAddress !== undefined ? dbus.sessionBus({ busAddress: options.systemBusAddress }) : dbus.systemBus();
  const sessionAddress = options.sessionBusAddress ?? defaultSessionBusAddress(process.env);
  const sessionBus = sessionAddress !== undefined ? dbus.sessionBus({ busAddress: sessionAddress }) : dbus.sessionBus();
  let stopping = false;
  const fatal = (which: string) => (error: Error) => {
    if (!stopping) options.onFatal(new Error(`${which} bus connection failed: ${error.message}`));
  };
  systemBus.on('error', fatal('System'));
  sessionBus.on('error', fatal('Session'));

  const systemd = new UserSystemd(new OrderedBus(sessionBus));
  let object: AgentObject | undefined; // made after the agent, which it reads
  const agent = new Agent({ identity, manager: systemd, config: () => config, log, onChange: () => object?.refresh() });
  object = new AgentObject(() => ({ activeUnits: agent.activeUnits, failures: agent.failures }));
  sessionBus.export(AGENT_PATH, object);
  const reply = await sessionBus.requestName(AGENT_BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
    throw new Error(`'${AGENT_BUS_NAME}' is already owned on the session bus: another vfio-hookd-agent runs for this user`);
  }
  await systemd.start();

  const follower = new MachineFollower(new OrderedBus(systemBus), {
    onMachine: (view) => agent.machine(view),
    onMachineGone: (path) => agent.machineGone(path),
    onDaemonGone: () => log.warning('vfio-hookd left the system bus; units stay as they are until it is back'),
    onError: (error) => log.warning(`Reading vfio-hookd's machines: ${error.message}`),
  });
  await follower.start();
  // READY=1 after the units of VMs already running were started (bounded: a slow unit does not hold the agent's start).
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([agent.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, options.initialJobsTimeoutMs ?? 10_000)))]);
  clearTimeout(timer);
  const mine = [...follower.machines.values()].filter((m) => agent.isMine(m)).map((m) => `${m.name} (${m.state})`);
  log.info(`Following vfio-hookd as ${identity.name}: ${mine.length > 0 ? mine.join(', ') : 'no VM of this user yet'}`);

  return {
    agent,
    follower,
    stop() {
      stopping = true;
      systemBus.disconnect();
      sessionBus.disconnect();
    },
  };
}
