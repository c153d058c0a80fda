/**
 * The datagram port of lib/systemd: how a notifier or journal sends, and the
 * error it reports (never throws) when a datagram cannot be sent.
 *
 * `DatagramError` is not in `lib/errors.ts` because it never crosses the bus:
 * it goes to the `onError` callback of a `Notifier` or `Journal`, whose
 * caller logs it once.
 */

/**
 * Send `data` as one datagram to the AF_UNIX socket at `path`, synchronously;
 * throw a `DatagramError` on failure. The real one lives in
 * `_internal/unix-datagram.ts`; tests may pass their own.
 */
export type DatagramSender = (path: string, data: Buffer) => void;

/**
 * A datagram could not be sent. From the sender the message is the reason
 * alone (`no such file or directory (ENOENT)`); `Notifier` and `Journal`
 * report a full sentence that names the socket, with the sender's error as
 * `cause`.
 */
export class DatagramError extends Error {
  override readonly name = 'DatagramError';
  /** The errno name (`ENOENT`, `ECONNREFUSED`, `EMSGSIZE`, `EAGAIN`, ...), or `EINVAL` for an address that cannot be used. */
  readonly code: string;
  constructor(message: string, code: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
