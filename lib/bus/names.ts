/**
 * Every D-Bus name vfio-hookd uses, spelled once: the daemon's bus name,
 * object paths, interfaces and members on the system bus, the agent's on the
 * session bus, and the bus driver's own. The daemon, the agent and the CLI
 * all take them from here (the API is described in docs/architecture.md).
 */

/** The daemon's well-known name on the system bus. */
export const BUS_NAME = 'org.vfiohookd1';
/** The Manager object; nothing is exported at `/`. */
export const ROOT_PATH = '/org/vfiohookd1';
/** Machine objects live at `<MACHINE_PATH_PREFIX>/<encoded VM name>` (object-path.ts). */
export const MACHINE_PATH_PREFIX = `${ROOT_PATH}/machine`;
/** Device objects live at `<DEVICE_PATH_PREFIX>/<encoded PCI address>` (object-path.ts). */
export const DEVICE_PATH_PREFIX = `${ROOT_PATH}/device`;

export const MANAGER_INTERFACE = 'org.vfiohookd1.Manager';
export const MACHINE_INTERFACE = 'org.vfiohookd1.Machine';
export const DEVICE_INTERFACE = 'org.vfiohookd1.Device';

/** Members of `org.vfiohookd1.Manager`. */
export const ManagerMember = {
  HandleHookFile: 'HandleHookFile',
  HandleHook: 'HandleHook',
  ListMachines: 'ListMachines',
  ListDevices: 'ListDevices',
  DetachDevice: 'DetachDevice',
  ReattachDevice: 'ReattachDevice',
  Reload: 'Reload',
  HookHandled: 'HookHandled',
  StepStarted: 'StepStarted',
  Version: 'Version',
  ConfigFile: 'ConfigFile',
  ConfigError: 'ConfigError',
  Machines: 'Machines',
} as const;

/** The user agent's well-known name, path and interface on the user's session bus. */
export const AGENT_BUS_NAME = 'org.vfiohookd1.Agent';
export const AGENT_PATH = '/org/vfiohookd1/agent';
export const AGENT_INTERFACE = 'org.vfiohookd1.Agent';

/** Members of `org.vfiohookd1.Agent`. */
export const AgentMember = {
  ActiveUnits: 'ActiveUnits',
  FailedUnits: 'FailedUnits',
  Failures: 'Failures',
} as const;

/** The bus driver and the standard interfaces. */
export const DBUS_DRIVER_NAME = 'org.freedesktop.DBus';
export const DBUS_DRIVER_PATH = '/org/freedesktop/DBus';
export const DBUS_DRIVER_INTERFACE = 'org.freedesktop.DBus';
export const PROPERTIES_INTERFACE = 'org.freedesktop.DBus.Properties';

/** systemd's manager on either bus (the system's, or a user's own): names both the daemon's host changes and the agent use. */
export const SYSTEMD_BUS_NAME = 'org.freedesktop.systemd1';
export const SYSTEMD_PATH = '/org/freedesktop/systemd1';
export const SYSTEMD_MANAGER_INTERFACE = 'org.freedesktop.systemd1.Manager';
export const SYSTEMD_UNIT_INTERFACE = 'org.freedesktop.systemd1.Unit';
export const SYSTEMD_UNIT_PATH_PREFIX = '/org/freedesktop/systemd1/unit/';
