/**
 * Calls to the bus itself (org.freedesktop.DBus) as plain method calls.
 *
 * dbus-next's getProxyObject() introspects the object first: one more round
 * trip and an XML parse (xml2js) for every proxy made. The driver's methods
 * are fixed by the specification, so the daemon calls them directly: the
 * start (NameHasOwner) and every method call's caller lookup
 * (GetConnectionUnixUser) skip the introspection.
 */
import dbus from 'dbus-next';
import { DBUS_DRIVER_INTERFACE, DBUS_DRIVER_NAME, DBUS_DRIVER_PATH } from './names.js';

async function callDriver(bus: dbus.MessageBus, member: string, signature: string, body: unknown[]): Promise<unknown> {
  const reply = await bus.call(
    new dbus.Message({ destination: DBUS_DRIVER_NAME, path: DBUS_DRIVER_PATH, interface: DBUS_DRIVER_INTERFACE, member, signature, body }),
  );
  return reply?.body[0];
}

/** Has `name` an owner on the bus now? */
export async function nameHasOwner(bus: dbus.MessageBus, name: string): Promise<boolean> {
  return (await callDriver(bus, 'NameHasOwner', 's', [name])) === true;
}

/** The uid of the process behind a unique bus name. */
export async function connectionUnixUser(bus: dbus.MessageBus, sender: string): Promise<number> {
  return Number(await callDriver(bus, 'GetConnectionUnixUser', 's', [sender]));
}
