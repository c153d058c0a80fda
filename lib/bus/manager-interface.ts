/**
 * `org.vfiohookd1.Manager` at `/org/vfiohookd1`: a thin adapter. Behaviour
 * comes from an injected `ManagerBackend` (the daemon wires the PCI engine
 * and the hook lifecycle into it); this class only converts values
 * (via `dbus-types.ts`) and maps errors (via `bus-errors.ts`).
 *
 * Every method replies once, when its work is done: dbus-next waits for the
 * returned Promise. A failure is an error reply, never a stack trace.
 *
 * Methods:
 * - `HandleHookFile(s domain_name, s operation, s sub_operation, s extra,
 *   s domain_xml_file) -> s note`: the hook's call. The domain XML is in
 *   `domain_xml_file`, a file the hook made in `<run>/vfio-hookd`
 *   (hook-xml-file.ts says which files are read, and why not an argument:
 *   one argv element holds at most 128 KiB, and busctl cannot pass a file
 *   descriptor). `note` is one line for the hook to show on success ('' for
 *   none). Every error message starts with `vfio-hookd: ` and is one line:
 *   the hook tells the daemon's refusals from bus failures by that start
 *   (bus-errors.ts).
 * - `HandleHook(s domain_name, s operation, s sub_operation, s extra,
 *   s domain_xml)`: the same with the XML inline (up to what one argument
 *   carries), kept for hooks of earlier versions and scripts; its errors are
 *   not marked, as those hooks add `vfio-hookd: ` themselves.
 * - `ListMachines() -> a(sso)`, `ListDevices() -> a(ssssuso)`,
 *   `DetachDevice(s)`, `ReattachDevice(s)`, `Reload()`; properties
 *   `Version`, `ConfigFile`, `Machines`; signal `HookHandled(sssbst)` after
 *   every hook call of either kind.
 */
import dbus from 'dbus-next';
import { DEFAULT_ROOTS } from '../roots.js';
import { InvalidArgs, q } from '../errors.js';
import { hookXmlDir, readHookXmlFile } from '../domain/hook-xml-file.js';
import { mapErrors, oneLine, toHookDBusError } from './bus-errors.js';
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
import { MANAGER_INTERFACE, ManagerMember } from './names.js';

const CONST_PROPERTIES: ReadonlySet<string> = new Set([ManagerMember.Version, ManagerMember.ConfigFile]);

/** The part of dbus-next's introspection object we touch. */
interface IntrospectXml {
  property?: { $: { name: string }; annotation?: { $: { name: string; value: string } }[] }[];
}

/** What `HandleHook` did, for the `HookHandled` signal. */
export interface HookOutcome {
  /** One short line: what was done, or why nothing was ('not managed'). */
  readonly message: string;
  /**
   * A sentence for the hook to show on stderr although the hook succeeded
   * (`HandleHookFile` returns it; the hook prints it after `vfio-hookd: `),
   * e.g. a did-you-mean for a VM that is not managed. Made one line. Default
   * none.
   */
  readonly note?: string;
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

interface ManagerInfo {
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
  /** Runtime root: `HandleHookFile` reads the hook's files in `<runRoot>/vfio-hookd` only. Default `/run`. */
  readonly runRoot?: string;
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
    return this.#run(ManagerMember.ListMachines, async () => (await this.#backend.listMachines()).map(machineTuple));
  }

  #run<T>(member: string, work: () => Promise<T>): Promise<T> {
    return mapErrors(work, (error) => this.#info.onError?.(member, error));
  }

  ListDevices(): Promise<DeviceTuple[]> {
    return this.#run(ManagerMember.ListDevices, async () => (await this.#backend.listDevices()).map(deviceTuple));
  }

  DetachDevice(address: string, forVm: string, force: boolean): Promise<void> {
    const caller = this.#caller();
    return this.#run(ManagerMember.DetachDevice, async () => this.#backend.detachDevice(address, forVm, await caller, force));
  }

  ReattachDevice(address: string): Promise<void> {
    const caller = this.#caller();
    return this.#run(ManagerMember.ReattachDevice, async () => this.#backend.reattachDevice(address, await caller));
  }

  #caller(): Promise<BusCaller> {
    return this.#info.currentCaller?.() ?? Promise.resolve({ uid: 0, name: 'root' });
  }

  HandleHook(domainName: string, operation: string, subOperation: string, extra: string, domainXml: string): Promise<void> {
    const start = this.#clock();
    return this.#run(ManagerMember.HandleHook, async () => {
      await this.#hook(hookEvent(domainName, operation, subOperation, extra, domainXml), start);
    });
  }

  /**
   * The hook's call, the XML in a file. Errors in reading the file reach
   * `onError` as `HandleHookFile`, those of the hook itself as `HandleHook`
   * (the daemon journals those once, as a refused hook).
   */
  async HandleHookFile(domainName: string, operation: string, subOperation: string, extra: string, domainXmlFile: string): Promise<string> {
    const start = this.#clock();
    try {
      let domainXml = '';
      try {
        // Only prepare reads the XML (every later stage acts on the record), so the hook sends no file for the others.
        if (domainXmlFile === '' && operation === 'prepare') {
          throw new InvalidArgs(
            `Operation 'prepare' of ${q(domainName)} came without the domain XML file; the hook passes one for prepare, refusing`,
          );
        }
        if (domainXmlFile !== '') domainXml = await readHookXmlFile(hookXmlDir(this.#info.runRoot ?? DEFAULT_ROOTS.run), domainXmlFile);
      } catch (error) {
        this.#info.onError?.(ManagerMember.HandleHookFile, error);
        this.HookHandled(
          hookHandledTuple(hookEvent(domainName, operation, subOperation, extra, ''), false, firstLine(error), this.#clock() - start),
        );
        throw error;
      }
      let outcome: HookOutcome;
      try {
        outcome = await this.#hook(hookEvent(domainName, operation, subOperation, extra, domainXml), start);
      } catch (error) {
        this.#info.onError?.(ManagerMember.HandleHook, error);
        throw error;
      }
      return oneLine(outcome.note ?? '');
    } catch (error) {
      throw toHookDBusError(error);
    }
  }

  #clock(): bigint {
    return (this.#info.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n))();
  }

  /** Hand the event to the backend and signal `HookHandled` either way. */
  async #hook(event: HookEvent, start: bigint): Promise<HookOutcome> {
    try {
      const outcome = await this.#backend.handleHook(event);
      this.HookHandled(hookHandledTuple(event, true, outcome.message, this.#clock() - start));
      return outcome;
    } catch (error) {
      this.HookHandled(hookHandledTuple(event, false, firstLine(error), this.#clock() - start));
      throw error;
    }
  }

  Reload(): Promise<void> {
    return this.#run(ManagerMember.Reload, () => this.#backend.reload());
  }

  /** Signal; configureMembers wraps it so that calling it emits the returned tuple. */
  HookHandled(tuple: HookHandledTuple): HookHandledTuple {
    return tuple;
  }

  /** Signal `StepStarted(sss)`: VM, stage (prepare, release), the step now running; sent as each step starts. */
  StepStarted(tuple: [string, string, string]): [string, string, string] {
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
    HandleHookFile: { inSignature: 'sssss', outSignature: 's' },
    Reload: { inSignature: '', outSignature: '' },
  },
  signals: {
    HookHandled: { signature: 'sssbst' },
    StepStarted: { signature: 'sss' },
  },
});

function firstLine(error: unknown): string {
  return error instanceof Error ? (error.message.split('\n', 1)[0] ?? '') : String(error);
}

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
