/**
 * The one side effect of lib/systemd: send one AF_UNIX datagram to a path.
 *
 * Node has no AF_UNIX SOCK_DGRAM of its own, so this wraps `unix-dgram`
 * (native). Two of its habits shape this module:
 *
 * - Every socket it creates is watched by a ref'd libuv poll handle that no
 *   API can unref, so a long-lived socket would keep the process alive. We
 *   open a socket per datagram and close it at once, as `sd_notify()` does.
 *   Sending is synchronous (the socket is non-blocking), so nothing is left
 *   open after `sendDatagram` returns.
 * - It copies the path with `strncpy` into `sun_path` and always passes the
 *   full `sizeof(sockaddr_un)` as the address length. A name starting with a
 *   NUL byte (a Linux abstract socket, `@name` in `$NOTIFY_SOCKET`) therefore
 *   becomes 108 NUL bytes, and a path of 108 bytes or more is cut silently.
 *   Both are refused here, before anything is sent.
 */
import { createRequire } from 'node:module';
import { getSystemErrorMap } from 'node:util';

import { DatagramError, type DatagramSender } from '../datagram.js';

interface UnixDgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (error?: Error & { code?: number }) => void): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

interface UnixDgramModule {
  createSocket(type: 'unix_dgram'): UnixDgramSocket;
}

/** `sun_path` is 108 bytes on Linux; `unix-dgram` keeps one for the terminating NUL. */
const SUN_PATH_MAX_BYTES = 107;

let loaded: UnixDgramModule | undefined;

function unixDgram(): UnixDgramModule {
  loaded ??= createRequire(import.meta.url)('unix-dgram') as UnixDgramModule;
  return loaded;
}

/** `unix-dgram` reports a negative errno number; turn it into its name and text. */
function errnoError(code: unknown): DatagramError {
  const errno = typeof code === 'number' ? -Math.abs(code) : NaN;
  const known = getSystemErrorMap().get(errno);
  if (known === undefined) return new DatagramError(`errno ${String(code)}`, 'EIO');
  const [name, text] = known;
  return new DatagramError(`${text} (${name})`, name);
}

/** Why `path` cannot be used as a datagram address by this module, or null. */
function addressProblem(path: string): string | null {
  if (path.startsWith('@') || path.startsWith('\0')) {
    return 'abstract socket names are not supported (unix-dgram cannot address them)';
  }
  if (!path.startsWith('/')) return 'not an absolute path';
  if (path.includes('\0')) return 'contains a NUL byte';
  if (Buffer.byteLength(path) > SUN_PATH_MAX_BYTES) return `longer than ${SUN_PATH_MAX_BYTES} bytes`;
  return null;
}

/** The real sender: a fresh socket per datagram, closed before returning. */
export const sendDatagram: DatagramSender = (path, data) => {
  const problem = addressProblem(path);
  if (problem !== null) throw new DatagramError(problem, 'EINVAL');

  const socket = unixDgram().createSocket('unix_dgram');
  // Errors come through the callback; a listener keeps a stray 'error' event from throwing.
  socket.on('error', () => {});
  let failure: DatagramError | undefined;
  try {
    socket.send(data, 0, data.length, path, (error) => {
      if (error === undefined) return;
      // code 1 is unix-dgram's "congestion", only reported for connected sockets.
      failure = error.code === 1 ? new DatagramError('resource temporarily unavailable (EAGAIN)', 'EAGAIN') : errnoError(error.code);
    });
  } finally {
    try {
      socket.close();
    } catch {
      // close(2) failing leaves nothing to undo; the datagram was sent or not.
    }
  }
  if (failure !== undefined) throw failure;
};
