/**
 * The one place an exception becomes a D-Bus error reply.
 *
 * dbus-next sends `e.stack` to the caller for any throw that is not a
 * `DBusError`, so every method of an exported interface goes through
 * `toDBusError`: a `VfioHookdError` keeps its own bus name and message;
 * anything else becomes `org.freedesktop.DBus.Error.Failed` with a short
 * text (the first line of its message, no stack). The caller of this module
 * logs the original error, with its stack, to the journal.
 */
import dbus from 'dbus-next';
import { VfioHookdError } from '../errors.js';

export const DBUS_ERROR_FAILED = 'org.freedesktop.DBus.Error.Failed';

/** Longest message we send for an unexpected error; the journal has the rest. */
const MAX_FAILED_TEXT = 200;

function shortText(error: unknown): string {
  const raw = error instanceof Error ? error.message : String(error);
  const first = (raw.split('\n', 1)[0] ?? '').trim();
  const text = first.length > MAX_FAILED_TEXT ? `${first.slice(0, MAX_FAILED_TEXT - 3)}...` : first;
  return text === '' ? 'Internal error; see the journal of vfio-hookd' : text;
}

/** Map any thrown value to the `DBusError` sent to the caller; never carries a stack. */
export function toDBusError(error: unknown): InstanceType<typeof dbus.DBusError> {
  if (error instanceof dbus.DBusError) return new dbus.DBusError(error.type, error.text);
  if (error instanceof VfioHookdError) return new dbus.DBusError(error.dbusName, error.message);
  return new dbus.DBusError(DBUS_ERROR_FAILED, shortText(error));
}

/** Run `work`, turning any rejection into a `DBusError` (via `toDBusError`) after handing the original to `onError`. */
export async function mapErrors<T>(work: () => Promise<T>, onError?: (error: unknown) => void): Promise<T> {
  try {
    return await work();
  } catch (error) {
    onError?.(error);
    throw toDBusError(error);
  }
}
