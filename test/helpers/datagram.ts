/**
 * The tests' one AF_UNIX datagram receiver: a socket of the test's own
 * (a `$NOTIFY_SOCKET`, a stand-in for journald's socket), every datagram
 * kept, waits that resolve on the datagram itself (no polling), closed in
 * the test's teardown.
 */
import { createRequire } from 'node:module';
import type { ExecutionContext } from 'ava';
import { track } from './settled.js';

interface DgramSocket {
  bind(path: string): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): unknown;
  once(event: 'listening' | 'error', listener: (arg?: unknown) => void): unknown;
}
const unixDgram = createRequire(import.meta.url)('unix-dgram') as {
  createSocket(type: 'unix_dgram', listener?: (buf: Buffer) => void): DgramSocket;
};

export class DatagramReceiver {
  readonly path: string;
  /** Every datagram so far, as received. */
  readonly datagrams: Buffer[] = [];
  readonly #socket: DgramSocket;
  /** Pending waits: each is checked on every datagram, and settled (its timer cleared) on close. */
  readonly #waiters = new Set<{ check: () => void; cancel: () => void }>();
  #open = true;

  private constructor(path: string, socket: DgramSocket) {
    this.path = path;
    this.#socket = socket;
  }

  /** Bind a receiver at `path`; it is closed in `t`'s teardown. */
  static async open(t: Pick<ExecutionContext, 'teardown'>, path: string): Promise<DatagramReceiver> {
    let receiver: DatagramReceiver | undefined;
    const socket = unixDgram.createSocket('unix_dgram', (buf) => {
      if (receiver !== undefined) receiver.#received(buf);
    });
    receiver = new DatagramReceiver(path, socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('listening', () => resolve());
      socket.once('error', reject);
      socket.bind(path);
    });
    socket.on('error', () => {});
    track(t, () => (receiver.#open ? `the datagram socket '${path}'` : null));
    t.teardown(() => receiver.close());
    return receiver;
  }

  #received(buf: Buffer): void {
    this.datagrams.push(buf);
    for (const waiter of [...this.#waiters]) waiter.check();
  }

  /** Every datagram so far, as UTF-8 text. */
  get texts(): string[] {
    return this.datagrams.map((d) => d.toString('utf8'));
  }

  /** Resolves with the first datagram (past or future) for which `test` holds; rejects after `timeoutMs`. */
  waitUntil(test: (all: readonly Buffer[]) => boolean, what: string, timeoutMs = 5000): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      // A wait that loses a race (the daemon exited before READY=1) must not keep
      // the test worker alive until its timer fires: close() cancels it.
      const settle = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      const waiter = {
        check: (): void => {
          if (!test(this.datagrams)) return;
          settle();
          resolve(this.datagrams.slice());
        },
        cancel: (): void => {
          settle();
          reject(new Error(`${what}: the receiver was closed first (got ${this.datagrams.length} datagrams)`));
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`${what}: not in ${timeoutMs} ms (got ${this.datagrams.length} datagrams)`));
      }, timeoutMs);
      if (!this.#open) return waiter.cancel();
      this.#waiters.add(waiter);
      waiter.check();
    });
  }

  /** Resolves once `count` datagrams have arrived. */
  waitForCount(count: number, timeoutMs = 5000): Promise<Buffer[]> {
    return this.waitUntil((all) => all.length >= count, `${count} datagrams`, timeoutMs);
  }

  /** Close the socket and cancel every pending wait (each rejects, its timer cleared). */
  close(): void {
    if (this.#open) this.#socket.close();
    this.#open = false;
    for (const waiter of [...this.#waiters]) waiter.cancel();
  }
}
