/**
 * `org.vfiohookd1.Manager` at `/org/vfiohookd1`: a thin adapter. Behaviour
 * comes from an injected `ManagerBackend` (the daemon wires the PCI engine
 * and, later, the hook lifecycle into it); this class only converts values
 * (via `dbus-types.ts`) and maps errors (via `bus-errors.ts`).
 *
 * Every method replies once, when its work is done: dbus-next waits for the
 * returned Promise. A failure is an error reply, never a stack trace.
 */
import dbus from 'dbus-next';
import { mapErrors } from './bus-errors.js';
import {
  deviceTuple,
  hookEvent,
  hookHandledTuple,
  machineTuple,
  type DeviceRow,
  type DeviceTuple,
  type HookEvent,
  type HookHandledTuple,
  type MachineRow,
  type MachineTuple,
} from './dbus-types.js';

export const MANAGER_INTERFACE = 'org.vfiohookd1.Manager';

const CONST_PROPERTIES: ReadonlySet<string> = new Set(['Version', 'ConfigFile']);

/** The part of dbus-next's introspection object we touch. */
interface IntrospectXml {
  property?: { $: { name: string }; annotation?: { $: { name: string; value: string } }[] }[];
}

/** What `HandleHook` did, for the `HookHandled` signal. */
export interface HookOutcome {
  /** One short line: what was done, or why nothing was ('not managed'). */
  readonly message: string;
}

/** Who called a method: uid, and the user name when it resolves (else `uid N`). */
export interface BusCaller {
  readonly uid: number;
  readonly name: string;
}

export interface ManagerBackend {
  listMachines(): Promise<readonly MachineRow[]>;
  listDevices(): Promise<readonly DeviceRow[]>;
  /** `forVm` '' is a detach by hand, recorded for the caller. */
  detachDevice(address: string, forVm: string, caller: BusCaller, force: boolean): Promise<void>;
  reattachDevice(address: string, caller: BusCaller): Promise<void>;
  handleHook(event: HookEvent): Promise<HookOutcome>;
  reload(): Promise<void>;
}

export interface ManagerInfo {
  readonly version: string;
  /** Path of the configuration file, or '' when none is used. */
  readonly configFile: string;
  /** The `ConfigError` property: why the configuration is not in force, or ''. Default ''. */
  readonly configError?: () => string;
  /** Object paths of the Machine objects now exported (the `Machines` property). Default none. */
  readonly machines?: () => string[];
  /** Told about every error before it is mapped for the caller (to log it with its stack). */
  readonly onError?: (member: string, error: unknown) => void;
  /**
   * Who sent the method call being dispatched right now. Must be called
   * synchronously at the start of the method (it reads the message dbus-next
   * is dispatching); resolves the uid afterwards. Default: root.
   */
  readonly currentCaller?: () => Promise<BusCaller>;
  /** Monotonic clock in microseconds, for `duration_usec`. Default process.hrtime. */
  readonly monotonicUsec?: () => bigint;
}

export class ManagerInterface extends dbus.interface.Interface {
  readonly #backend: ManagerBackend;
  readonly #info: ManagerInfo;

  constructor(backend: ManagerBackend, info: ManagerInfo) {
    super(MANAGER_INTERFACE);
    this.#backend = backend;
    this.#info = info;
  }

  get Version(): string {
    return this.#info.version;
  }

  get ConfigFile(): string {
    return this.#info.configFile;
  }

  /** Why the configuration could not be loaded at start ('' when it loaded), and where the file really is. */
  get ConfigError(): string {
    return this.#info.configError?.() ?? '';
  }

  get Machines(): string[] {
    return this.#info.machines?.() ?? [];
  }

  ListMachines(): Promise<MachineTuple[]> {
    return this.#run('ListMachines', async () => (await this.#backend.listMachines()).map(machineTuple));
  }

  #run<T>(member: string, work: () => Promise<T>): Promise<T> {
    return mapErrors(work, (error) => this.#info.onError?.(member, error));
  }

  ListDevices(): Promise<DeviceTuple[]> {
    return this.#run('ListDevices', async () => (await this.#backend.listDevices()).map(deviceTuple));
  }

  DetachDevice(address: string, forVm: string, force: boolean): Promise<void> {
    const caller = this.#caller();
    return this.#run('DetachDevice', async () => this.#backend.detachDevice(address, forVm, await caller, force));
  }

  ReattachDevice(address: string): Promise<void> {
    const caller = this.#caller();
    return this.#run('ReattachDevice', async () => this.#backend.reattachDevice(address, await caller));
  }

  #caller(): Promise<BusCaller> {
    return this.#info.currentCaller?.() ?? Promise.resolve({ uid: 0, name: 'root' });
  }

  HandleHook(domainName: string, operation: string, subOperation: string, extra: string, domainXml: string): Promise<void> {
    const event = hookEvent(domainName, operation, subOperation, extra, domainXml);
    const clock = this.#info.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n);
    const start = clock();
    return this.#run('HandleHook', async () => {
      try {
        const outcome = await this.#backend.handleHook(event);
        this.HookHandled(hookHandledTuple(event, true, outcome.message, clock() - start));
      } catch (error) {
        const message = error instanceof Error ? (error.message.split('\n', 1)[0] ?? '') : String(error);
        this.HookHandled(hookHandledTuple(event, false, message, clock() - start));
        throw error;
      }
    });
  }

  Reload(): Promise<void> {
    return this.#run('Reload', () => this.#backend.reload());
  }

  /** Signal; configureMembers wraps it so that calling it emits the returned tuple. */
  HookHandled(tuple: HookHandledTuple): HookHandledTuple {
    return tuple;
  }
}

ManagerInterface.configureMembers({
  properties: {
    Version: { signature: 's', access: 'read' },
    ConfigFile: { signature: 's', access: 'read' },
    ConfigError: { signature: 's', access: 'read' },
    Machines: { signature: 'ao', access: 'read' },
  },
  methods: {
    ListMachines: { inSignature: '', outSignature: 'a(sso)' },
    ListDevices: { inSignature: '', outSignature: 'a(ssssuso)' },
    DetachDevice: { inSignature: 'ssb', outSignature: '' },
    ReattachDevice: { inSignature: 's', outSignature: '' },
    HandleHook: { inSignature: 'sssss', outSignature: '' },
    Reload: { inSignature: '', outSignature: '' },
  },
  signals: {
    HookHandled: { signature: 'sssbst' },
  },
});

/**
 * Introspection with `EmitsChangedSignal=const` on the properties that never
 * change while the daemon runs. dbus-next has no option for this annotation
 * and does not declare `$introspect` in its types, so the XML it builds is
 * amended here, on the prototype.
 */
type Introspectable = { $introspect(): IntrospectXml };
const baseIntrospect = (dbus.interface.Interface.prototype as unknown as Introspectable).$introspect;
(ManagerInterface.prototype as unknown as Introspectable).$introspect = function (this: Introspectable): IntrospectXml {
  const xml = baseIntrospect.call(this);
  for (const property of xml.property ?? []) {
    if (CONST_PROPERTIES.has(property.$.name)) {
      property.annotation = [{ $: { name: 'org.freedesktop.DBus.Property.EmitsChangedSignal', value: 'const' } }];
    }
  }
  return xml;
};
