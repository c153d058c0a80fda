/**
 * The CLI's side of the bus: is vfio-hookd there, and ask it. Every failure
 * becomes one sentence (a VfioHookdError), never a stack trace: a missing bus
 * socket, a bus that refuses us, the daemon's own refusal.
 */
import dbus from 'dbus-next';
import { DaemonNotRunning, VfioHookdError } from '../errors.js';
import { BUS_NAME, DBUS_DRIVER_INTERFACE, DBUS_DRIVER_NAME, DBUS_DRIVER_PATH, MANAGER_INTERFACE, ROOT_PATH } from '../bus/names.js';

/** The daemon said no (its error name and sentence, as sent). */
class DaemonRefused extends VfioHookdError {
  override readonly name = 'DaemonRefused';
  constructor(
    readonly dbusName: string,
    message: string,
  ) {
    super(message);
  }
}

/** A connection whose 'error' event (no socket, refused) rejects instead of crashing the process. */
export async function openBus(busAddress: string | undefined): Promise<dbus.MessageBus> {
  const bus = busAddress !== undefined ? dbus.sessionBus({ busAddress }) : dbus.systemBus();
  const where = busAddress !== undefined ? `the bus ${busAddress}` : 'the system bus';
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      bus.disconnect();
      reject(new DaemonNotRunning(`Cannot connect to ${where} (${error.message}); is dbus running?`));
    };
    bus.once('error', onError);
    bus.once('connect', () => {
      bus.off('error', onError);
      bus.on('error', () => undefined); // later errors end calls with their own rejection
      resolve(bus);
    });
  });
}

/** Does anybody own `org.vfiohookd1`? False too when there is no bus at all. */
export async function daemonRunning(busAddress: string | undefined): Promise<boolean> {
  let bus: dbus.MessageBus;
  try {
    bus = await openBus(busAddress);
  } catch {
    return false;
  }
  try {
    const driver = (await bus.getProxyObject(DBUS_DRIVER_NAME, DBUS_DRIVER_PATH)).getInterface(DBUS_DRIVER_INTERFACE);
    return (await (driver['NameHasOwner'] as (n: string) => Promise<boolean>)(BUS_NAME)) === true;
  } catch {
    return false;
  } finally {
    bus.disconnect();
  }
}

/** Call a Manager method; the daemon's refusal becomes DaemonRefused with its sentence. */
export async function callDaemon(busAddress: string | undefined, member: string, signature: string, body: unknown[]): Promise<unknown> {
  const bus = await openBus(busAddress);
  try {
    const reply = await bus.call(
      new dbus.Message({ destination: BUS_NAME, path: ROOT_PATH, interface: MANAGER_INTERFACE, member, signature, body }),
    );
    return reply?.body;
  } catch (error) {
    if (error instanceof dbus.DBusError) throw new DaemonRefused(error.type, error.text.replace(/^vfio-hookd: /, ''));
    throw new DaemonNotRunning(`Cannot call vfio-hookd's ${member} (${(error as Error).message})`);
  } finally {
    bus.disconnect();
  }
}
