/**
 * Who sent the method call being handled. dbus-next does not hand the
 * message to interface methods, but it runs every handler added with
 * `addMethodHandler` synchronously just before it calls the method, in the
 * same tick: remembering the last message's sender there and reading it at
 * the very start of the method gives the caller of that method. The uid
 * comes from the bus itself (`GetConnectionUnixUser`), which a caller
 * cannot forge.
 */
import { execFile } from 'node:child_process';
import dbus from 'dbus-next';
import type { BusCaller } from './manager-interface.js';
import { connectionUnixUser } from './bus-driver.js';

export class CallerTracker {
  readonly #bus: dbus.MessageBus;
  #last: string | undefined;
  readonly #names = new Map<number, string>();

  constructor(bus: dbus.MessageBus) {
    this.#bus = bus;
    bus.addMethodHandler((message: dbus.Message) => {
      this.#last = message.sender;
      return false; // not handled: dbus-next goes on to the interface method
    });
  }

  /** Call synchronously at the start of a method; resolves the sender's uid and name. */
  current(): Promise<BusCaller> {
    const sender = this.#last;
    return this.#resolve(sender);
  }

  async #resolve(sender: string | undefined): Promise<BusCaller> {
    if (sender === undefined) return { uid: -1, name: 'unknown caller' };
    const uid = await connectionUnixUser(this.#bus, sender);
    return { uid, name: await this.#nameOf(uid) };
  }

  async #nameOf(uid: number): Promise<string> {
    const known = this.#names.get(uid);
    if (known !== undefined) return known;
    const name = await new Promise<string>((resolve) => {
      execFile('getent', ['passwd', String(uid)], { timeout: 2000 }, (error, stdout) => {
        const found = error ? '' : (stdout.split(':', 1)[0] ?? '');
        resolve(found !== '' ? found : uid === 0 ? 'root' : `uid ${uid}`);
      });
    });
    this.#names.set(uid, name);
    return name;
  }
}
