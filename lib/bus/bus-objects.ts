/**
 * The per-VM and per-device objects: `org.vfiohookd1.Machine` at
 * `/org/vfiohookd1/machine/<name>` and `org.vfiohookd1.Device` at
 * `/org/vfiohookd1/device/<address>`, read-only properties, kept in step with
 * the daemon by `sync()`: new ones exported, gone ones unexported, changed
 * properties announced with `PropertiesChanged` (so `busctl monitor` and the
 * user agent follow changes without polling).
 */
import dbus from 'dbus-next';
import { deviceProperties, machineProperties, type DeviceRow, type MachineRow } from './dbus-types.js';
import { DEVICE_INTERFACE, MACHINE_INTERFACE } from './names.js';
import { devicePath, machinePath } from './object-path.js';

type Values = Record<string, unknown>;

/** A read-only object whose properties come from a record; `update` announces what changed. */
class PropertyObject extends dbus.interface.Interface {
  #values: Values;

  constructor(name: string, values: Values) {
    super(name);
    this.#values = values;
  }

  get(name: string): unknown {
    return this.#values[name];
  }

  update(next: Values): void {
    const changed: Values = {};
    for (const [key, value] of Object.entries(next)) {
      if (!same(this.#values[key], value)) changed[key] = value;
    }
    this.#values = next;
    if (Object.keys(changed).length > 0) dbus.interface.Interface.emitPropertiesChanged(this, changed, []);
  }
}

/** Equal property values, bigints included (JSON.stringify cannot take them as they are). */
function same(a: unknown, b: unknown): boolean {
  const plain = (_: string, v: unknown): unknown => (typeof v === 'bigint' ? `${v}n` : v);
  return JSON.stringify(a, plain) === JSON.stringify(b, plain);
}

/** Getters for configureMembers: dbus-next reads properties as class accessors. */
function accessors(cls: { prototype: object }, names: readonly string[]): void {
  for (const name of names) {
    Object.defineProperty(cls.prototype, name, {
      get(this: PropertyObject) {
        return this.get(name);
      },
    });
  }
}

class MachineObject extends PropertyObject {
  constructor(row: MachineRow) {
    super(MACHINE_INTERFACE, machineProperties(row));
  }
}
accessors(MachineObject, [
  'Name',
  'State',
  'Devices',
  'ShmFiles',
  'LastMessage',
  'User',
  'Units',
  'Step',
  'StepSinceUsec',
  'StateSinceUsec',
  'ShmFileInfo',
  'ReturnDrivers',
  'HeldAtBoot',
  'HostChanges',
]);
MachineObject.configureMembers({
  properties: {
    Name: { signature: 's', access: 'read' },
    State: { signature: 's', access: 'read' },
    Devices: { signature: 'as', access: 'read' },
    ShmFiles: { signature: 'as', access: 'read' },
    LastMessage: { signature: 's', access: 'read' },
    User: { signature: 's', access: 'read' },
    Units: { signature: 'as', access: 'read' },
    Step: { signature: 's', access: 'read' },
    StepSinceUsec: { signature: 't', access: 'read' },
    StateSinceUsec: { signature: 't', access: 'read' },
    ShmFileInfo: { signature: 'a(stuuu)', access: 'read' },
    ReturnDrivers: { signature: 'a(ss)', access: 'read' },
    HeldAtBoot: { signature: 'as', access: 'read' },
    HostChanges: { signature: 'a(sss)', access: 'read' },
  },
});

class DeviceObject extends PropertyObject {
  constructor(row: DeviceRow) {
    super(DEVICE_INTERFACE, deviceProperties(row));
  }
}
accessors(DeviceObject, ['Address', 'Ids', 'Class', 'Driver', 'IommuGroup', 'Owner']);
DeviceObject.configureMembers({
  properties: {
    Address: { signature: 's', access: 'read' },
    Ids: { signature: 's', access: 'read' },
    Class: { signature: 's', access: 'read' },
    Driver: { signature: 's', access: 'read' },
    IommuGroup: { signature: 'u', access: 'read' },
    Owner: { signature: 's', access: 'read' },
  },
});

/** The bus's export/unexport, as much as this module needs. */
interface ObjectExporter {
  export(path: string, iface: dbus.interface.Interface): void;
  unexport(path: string, iface: dbus.interface.Interface): void;
}

export class BusObjects {
  readonly #bus: ObjectExporter;
  readonly #machines = new Map<string, MachineObject>();
  readonly #devices = new Map<string, DeviceObject>();

  constructor(bus: ObjectExporter) {
    this.#bus = bus;
  }

  /** Object paths of the machines now exported, sorted (the Manager's `Machines` property). */
  get machinePaths(): string[] {
    return [...this.#machines.keys()].map(machinePath).sort();
  }

  sync(machines: readonly MachineRow[], devices: readonly DeviceRow[]): void {
    this.#syncKind(
      this.#machines,
      machines,
      (r) => r.name,
      machinePath,
      (r) => new MachineObject(r),
      machineProperties,
    );
    this.#syncKind(
      this.#devices,
      devices,
      (r) => r.address,
      devicePath,
      (r) => new DeviceObject(r),
      deviceProperties,
    );
  }

  #syncKind<R, O extends PropertyObject>(
    current: Map<string, O>,
    rows: readonly R[],
    key: (row: R) => string,
    pathOf: (key: string) => string,
    make: (row: R) => O,
    values: (row: R) => Values,
  ): void {
    const seen = new Set<string>();
    for (const row of rows) {
      const k = key(row);
      seen.add(k);
      const existing = current.get(k);
      if (existing) {
        existing.update(values(row));
      } else {
        const object = make(row);
        current.set(k, object);
        this.#bus.export(pathOf(k), object);
      }
    }
    for (const [k, object] of current) {
      if (!seen.has(k)) {
        this.#bus.unexport(pathOf(k), object);
        current.delete(k);
      }
    }
  }
}
