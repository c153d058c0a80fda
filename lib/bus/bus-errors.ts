/**
 * The one place an exception becomes a D-Bus error reply.
 *
 * dbus-next sends `e.stack` to the caller for any throw that is not a
 * `DBusError`, so every method of an exported interface goes through
 * `toDBusError`: a `VfioHookdError` keeps its own bus name and message;
 * anything else becomes `org.freedesktop.DBus.Error.Failed` with a short
 * text (the first line of its message, no stack). The caller of this module
 * logs the original error, with its stack, to the journal.
 *
 * The hook's method (`HandleHookFile`) marks its errors: every message
 * starts with `HOOK_REFUSAL_MARKER` and is one line (`toHookDBusError`).
 * hooks/qemu reads busctl's `Call failed: <message>` and takes only a
 * message that starts with the marker as the daemon's judgement; anything
 * else (no bus, no owner of the name, activation failed, a timeout, the
 * daemon gone mid-call) reaches it from the bus or from systemd, never
 * starts that way, and is "no answer". The marker is the start of text only
 * the daemon writes, so no VM name or refusal text can forge it: a name sits
 * inside the message, never at its start.
 */
import dbus from 'dbus-next';
import { VfioHookdError } from '../errors.js';
import { busSafe } from './dbus-types.js';

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
  if (error instanceof dbus.DBusError) return new dbus.DBusError(error.type, busSafe(error.text ?? ''));
  if (error instanceof VfioHookdError) return new dbus.DBusError(error.dbusName, busSafe(error.message));
  return new dbus.DBusError(DBUS_ERROR_FAILED, busSafe(shortText(error)));
}

/** Start of every error message `HandleHookFile` sends (hooks/qemu matches it at the start of the text only). */
export const HOOK_REFUSAL_MARKER = 'vfio-hookd: ';

// Runs of control characters (newlines above all) become one space: the hook shows one line.
const CONTROL_RUN_RE = /\s*[\u0000-\u001f\u007f]+\s*/g;

/** Text made one line (every run of control characters becomes one space) and `busSafe`. */
export function oneLine(text: string): string {
  return busSafe(text.replace(CONTROL_RUN_RE, ' ').trim());
}

/** `toDBusError`, with the message made one line and marked as the daemon's own refusal. */
export function toHookDBusError(error: unknown): InstanceType<typeof dbus.DBusError> {
  const mapped = toDBusError(error);
  const text = oneLine(mapped.text ?? '');
  return new dbus.DBusError(
    mapped.type,
    HOOK_REFUSAL_MARKER + (text === '' ? 'Refused without a reason; see the journal of vfio-hookd' : text),
  );
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
