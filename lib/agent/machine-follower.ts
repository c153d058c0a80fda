/**
 * The daemon's Machine objects as seen from the system bus, followed through
 * signals only: `PropertiesChanged` of the Manager (the `Machines` set) and of
 * every Machine, and `NameOwnerChanged` of `org.vfiohookd1` (a restarted
 * daemon is read afresh). Match rules are added before anything is read, and
 * replies and signals are applied in wire order (OrderedBus), so no change
 * falls between the read and the subscription.
 *
 * `User` and `Units` are `null` when the daemon does not export them (older
 * daemons); the agent then falls back on its own configuration.
 */
import { decodeMachineProperties, strings, type MachineState } from '../bus/dbus-types.js';
import {
  BUS_NAME,
  DBUS_DRIVER_INTERFACE,
  DBUS_DRIVER_NAME,
  MACHINE_INTERFACE,
  MANAGER_INTERFACE,
  ManagerMember,
  PROPERTIES_INTERFACE,
  ROOT_PATH,
} from '../bus/names.js';
import { OrderedBus, unwrap, unwrapDict } from './ordered-bus.js';

export interface MachineView {
  readonly path: string;
  readonly name: string;
  /** '' until read; a state this version does not know leaves the last one. */
  readonly state: MachineState | '';
  /** The `User` property, or null when the daemon has none. */
  readonly user: string | null;
  /** The `Units` property, or null when the daemon has none. */
  readonly units: readonly string[] | null;
}

interface MachineFollowerEvents {
  /** A machine was read or changed (called for every change, in order). */
  onMachine(view: MachineView): void;
  /** A machine left the daemon's set (its configuration was removed). */
  onMachineGone(path: string): void;
  /** The daemon left the bus (it may come back: everything is then read again). */
  onDaemonGone?(): void;
  /** A read failed; the follower keeps running. */
  onError?(error: Error): void;
}

export class MachineFollower {
  readonly #bus: OrderedBus;
  readonly #events: MachineFollowerEvents;
  readonly #machines = new Map<string, MachineView>();

  constructor(bus: OrderedBus, events: MachineFollowerEvents) {
    this.#bus = bus;
    this.#events = events;
  }

  get machines(): ReadonlyMap<string, MachineView> {
    return this.#machines;
  }

  /** Subscribe, then read everything; resolves when the first read is done (also when no daemon is on the bus). */
  async start(): Promise<void> {
    this.#bus.onSignal((m) => {
      if (m.interface === PROPERTIES_INTERFACE && m.member === 'PropertiesChanged' && m.path?.startsWith(ROOT_PATH)) {
        this.#propertiesChanged(m.path, m.body[0] as string, unwrapDict(m.body[1]), (m.body[2] as string[] | undefined) ?? []);
      } else if (m.interface === DBUS_DRIVER_INTERFACE && m.member === 'NameOwnerChanged' && m.body[0] === BUS_NAME) {
        const newOwner = m.body[2] as string;
        if (newOwner === '') this.#events.onDaemonGone?.();
        else void this.#readAll(true); // a restarted daemon: every machine's state may differ
      }
    });
    // sender= a well-known name matches whoever owns it when the signal is sent.
    await this.#bus.addMatch(
      `type='signal',sender='${BUS_NAME}',interface='${PROPERTIES_INTERFACE}',member='PropertiesChanged',path_namespace='${ROOT_PATH}'`,
    );
    await this.#bus.addMatch(
      `type='signal',sender='${DBUS_DRIVER_NAME}',interface='${DBUS_DRIVER_INTERFACE}',member='NameOwnerChanged',arg0='${BUS_NAME}'`,
    );
    await this.#readAll();
  }

  /** Read the Machines set, and each machine not known yet (every machine with `all`). */
  async #readAll(all = false): Promise<void> {
    let paths: string[];
    try {
      paths = await this.#bus.call(
        {
          destination: BUS_NAME,
          path: ROOT_PATH,
          interface: PROPERTIES_INTERFACE,
          member: 'Get',
          signature: 'ss',
          body: [MANAGER_INTERFACE, ManagerMember.Machines],
        },
        (body) => strings(unwrap(body[0])) ?? [],
      );
    } catch (error) {
      // No daemon yet (ServiceUnknown) is normal: NameOwnerChanged brings us back here when it comes.
      if (!/ServiceUnknown|NameHasNoOwner/.test((error as { errorName?: string }).errorName ?? '')) this.#events.onError?.(error as Error);
      return;
    }
    await this.#setPaths(paths, all);
  }

  async #setPaths(paths: readonly string[], all = false): Promise<void> {
    const wanted = new Set(paths);
    for (const path of [...this.#machines.keys()]) {
      if (!wanted.has(path)) {
        this.#machines.delete(path);
        this.#events.onMachineGone(path);
      }
    }
    await Promise.all(paths.filter((p) => all || !this.#machines.has(p)).map((p) => this.#readMachine(p)));
  }

  async #readMachine(path: string): Promise<void> {
    try {
      await this.#bus.call(
        { destination: BUS_NAME, path, interface: PROPERTIES_INTERFACE, member: 'GetAll', signature: 's', body: [MACHINE_INTERFACE] },
        (body) => {
          // Applied in wire order: this reply is newer than every signal before it and older than every one after.
          const values = unwrapDict(body[0]);
          this.#apply(path, values, true);
        },
      );
    } catch (error) {
      // Removed between the Machines read and this one: its PropertiesChanged on the Manager follows.
      if (!/UnknownObject|UnknownInterface|UnknownMethod/.test((error as { errorName?: string }).errorName ?? ''))
        this.#events.onError?.(error as Error);
    }
  }

  #propertiesChanged(path: string, iface: string, values: Record<string, unknown>, invalidated: string[]): void {
    if (iface === MANAGER_INTERFACE && path === ROOT_PATH) {
      const paths = strings(values[ManagerMember.Machines]);
      if (paths) void this.#setPaths(paths);
      else if (invalidated.includes(ManagerMember.Machines)) void this.#readAll();
      return;
    }
    if (iface === MACHINE_INTERFACE && this.#machines.has(path)) this.#apply(path, values, false);
  }

  #apply(path: string, values: Record<string, unknown>, whole: boolean): void {
    const before = this.#machines.get(path);
    const read = decodeMachineProperties(values);
    const view: MachineView = {
      path,
      name: read.name ?? before?.name ?? '',
      state: read.state ?? before?.state ?? '',
      // A whole read without the property means the daemon does not have it.
      user: read.user ?? (whole ? null : (before?.user ?? null)),
      units: read.units ?? (whole ? null : (before?.units ?? null)),
    };
    this.#machines.set(path, view);
    this.#events.onMachine(view);
  }
}
