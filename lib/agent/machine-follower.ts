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
import { OrderedBus, unwrap, unwrapDict } from './ordered-bus.js';

export const DAEMON_NAME = 'org.vfiohookd1';
export const DAEMON_ROOT = '/org/vfiohookd1';
export const MANAGER_INTERFACE = 'org.vfiohookd1.Manager';
export const MACHINE_INTERFACE = 'org.vfiohookd1.Machine';
const PROPERTIES = 'org.freedesktop.DBus.Properties';

export interface MachineView {
  readonly path: string;
  readonly name: string;
  /** defined | prepared | running | stopped | released | failed ('' until read). */
  readonly state: string;
  /** The `User` property, or null when the daemon has none. */
  readonly user: string | null;
  /** The `Units` property, or null when the daemon has none. */
  readonly units: readonly string[] | null;
}

export interface MachineFollowerEvents {
  /** A machine was read or changed (called for every change, in order). */
  onMachine(view: MachineView): void;
  /** A machine left the daemon's set (its configuration was removed). */
  onMachineGone(path: string): void;
  /** The daemon left the bus (it may come back: everything is then read again). */
  onDaemonGone?(): void;
  /** A read failed; the follower keeps running. */
  onError?(error: Error): void;
}

function strings(value: unknown): string[] | null {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? (value as string[]) : null;
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
      if (m.interface === PROPERTIES && m.member === 'PropertiesChanged' && m.path?.startsWith(DAEMON_ROOT)) {
        this.#propertiesChanged(m.path, m.body[0] as string, unwrapDict(m.body[1]), (m.body[2] as string[] | undefined) ?? []);
      } else if (m.interface === 'org.freedesktop.DBus' && m.member === 'NameOwnerChanged' && m.body[0] === DAEMON_NAME) {
        const newOwner = m.body[2] as string;
        if (newOwner === '') this.#events.onDaemonGone?.();
        else void this.#readAll(true); // a restarted daemon: every machine's state may differ
      }
    });
    // sender= a well-known name matches whoever owns it when the signal is sent.
    await this.#bus.addMatch(`type='signal',sender='${DAEMON_NAME}',interface='${PROPERTIES}',member='PropertiesChanged',path_namespace='${DAEMON_ROOT}'`);
    await this.#bus.addMatch(`type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${DAEMON_NAME}'`);
    await this.#readAll();
  }

  /** Read the Machines set, and each machine not known yet (every machine with `all`). */
  async #readAll(all = false): Promise<void> {
    let paths: string[];
    try {
      paths = await this.#bus.call(
        { destination: DAEMON_NAME, path: DAEMON_ROOT, interface: PROPERTIES, member: 'Get', signature: 'ss', body: [MANAGER_INTERFACE, 'Machines'] },
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
        { destination: DAEMON_NAME, path, interface: PROPERTIES, member: 'GetAll', signature: 's', body: [MACHINE_INTERFACE] },
        (body) => {
          // Applied in wire order: this reply is newer than every signal before it and older than every one after.
          const values = unwrapDict(body[0]);
          this.#apply(path, values, true);
        },
      );
    } catch (error) {
      // Removed between the Machines read and this one: its PropertiesChanged on the Manager follows.
      if (!/UnknownObject|UnknownInterface|UnknownMethod/.test((error as { errorName?: string }).errorName ?? '')) this.#events.onError?.(error as Error);
    }
  }

  #propertiesChanged(path: string, iface: string, values: Record<string, unknown>, invalidated: string[]): void {
    if (iface === MANAGER_INTERFACE && path === DAEMON_ROOT) {
      const paths = strings(values['Machines']);
      if (paths) void this.#setPaths(paths);
      else if (invalidated.includes('Machines')) void this.#readAll();
      return;
    }
    if (iface === MACHINE_INTERFACE && this.#machines.has(path)) this.#apply(path, values, false);
  }

  #apply(path: string, values: Record<string, unknown>, whole: boolean): void {
    const before = this.#machines.get(path);
    const pick = <T>(key: string, convert: (v: unknown) => T | null, fallback: T): T => {
      if (key in values) return convert(values[key]) ?? fallback;
      return fallback;
    };
    const view: MachineView = {
      path,
      name: pick('Name', (v) => (typeof v === 'string' ? v : null), before?.name ?? ''),
      state: pick('State', (v) => (typeof v === 'string' ? v : null), before?.state ?? ''),
      // A whole read without the property means the daemon does not have it.
      user: pick('User', (v) => (typeof v === 'string' ? v : null), whole ? null : (before?.user ?? null)),
      units: pick('Units', strings, whole ? null : (before?.units ?? null)),
    };
    this.#machines.set(path, view);
    this.#events.onMachine(view);
  }
}
