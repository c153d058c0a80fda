/**
 * Method calls and signals handled in the order they came off the wire.
 *
 * dbus-next resolves a call's promise in a microtask, while signals that came
 * in the same socket read are emitted synchronously before it: a
 * `PropertiesChanged` sent after a `GetAll` reply could be applied before
 * that reply, and the older reply would then overwrite the newer value.
 * Everything here is dispatched from the bus's raw `message` event instead,
 * one message at a time in wire order: a reply's callback runs exactly
 * where the reply sits among the signals.
 */
import dbus from 'dbus-next';

const { Message, MessageType } = dbus;

interface CallSpec {
  readonly destination: string;
  readonly path: string;
  readonly interface: string;
  readonly member: string;
  readonly signature?: string;
  readonly body?: unknown[];
}

type SignalHandler = (message: dbus.Message) => void;

/** A D-Bus error reply as an Error: `name` is the D-Bus error name. */
class BusCallError extends Error {
  readonly errorName: string;
  constructor(errorName: string, text: string) {
    super(text);
    this.errorName = errorName;
  }
}

export class OrderedBus {
  readonly bus: dbus.MessageBus;
  readonly #replies = new Map<number, { resolve: (body: unknown[]) => void; reject: (error: Error) => void }>();
  readonly #signals = new Set<SignalHandler>();

  constructor(bus: dbus.MessageBus) {
    this.bus = bus;
    bus.on('message', (message: dbus.Message) => this.#dispatch(message));
  }

  #dispatch(message: dbus.Message): void {
    if (message.type === MessageType.SIGNAL) {
      for (const handler of this.#signals) handler(message);
      return;
    }
    if (message.type !== MessageType.METHOD_RETURN && message.type !== MessageType.ERROR) return;
    const serial = Number(message.replySerial);
    const waiter = this.#replies.get(serial);
    if (!waiter) return;
    this.#replies.delete(serial);
    if (message.type === MessageType.ERROR) {
      waiter.reject(new BusCallError(message.errorName, String(message.body[0] ?? message.errorName)));
    } else {
      waiter.resolve(message.body);
    }
  }

  /** Follow every signal this connection receives (add match rules with `addMatch`). */
  onSignal(handler: SignalHandler): void {
    this.#signals.add(handler);
  }

  /**
   * Call a method. `onReply` runs synchronously in wire order (see the module
   * comment); the promise settles with its result afterwards.
   */
  call<T = unknown[]>(spec: CallSpec, onReply?: (body: unknown[]) => T): Promise<T> {
    const message = new Message({
      destination: spec.destination,
      path: spec.path,
      interface: spec.interface,
      member: spec.member,
      ...(spec.signature !== undefined ? { signature: spec.signature } : {}),
      ...(spec.body !== undefined ? { body: spec.body } : {}),
    });
    return new Promise<T>((resolve, reject) => {
      // bus.call assigns the serial synchronously; its own promise is only a fallback for send errors.
      this.bus.call(message).catch((error: Error) => {
        if (this.#replies.delete(message.serial ?? -1)) reject(error);
      });
      this.#replies.set(message.serial ?? -1, {
        resolve: (body) => {
          try {
            resolve(onReply ? onReply(body) : (body as T));
          } catch (error) {
            reject(error as Error);
          }
        },
        reject,
      });
    });
  }

  /** `org.freedesktop.DBus.AddMatch`. */
  async addMatch(rule: string): Promise<void> {
    await this.call({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'AddMatch',
      signature: 's',
      body: [rule],
    });
  }
}

/** A value out of a variant (`v`), or the value itself. */
export function unwrap(value: unknown): unknown {
  return value instanceof dbus.Variant ? value.value : value;
}

/** `a{sv}` as a plain record. */
export function unwrapDict(dict: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (dict && typeof dict === 'object') {
    for (const [key, value] of Object.entries(dict as Record<string, unknown>)) out[key] = unwrap(value);
  }
  return out;
}
