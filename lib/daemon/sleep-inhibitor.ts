/**
 * logind's sleep inhibitor, one per VM that holds a passed-through device:
 * suspending the host with a GPU inside a running guest loses the guest's
 * display (and often the card until reboot). The lock is the file descriptor
 * `Inhibit()` returns: held while the fd is open, released by closing it.
 * Needs unix fd passing on the bus connection (`negotiateUnixFd: true`).
 *
 * Without logind (a container, a machine without systemd) taking a lock fails
 * and is reported once per VM; the VM starts all the same.
 */
import fs from 'node:fs';
import type dbus from 'dbus-next';

const LOGIND_BUS_NAME = 'org.freedesktop.login1';

export class SleepInhibitor {
  readonly #bus: dbus.MessageBus;
  readonly #fds = new Map<string, number>();

  constructor(bus: dbus.MessageBus) {
    this.#bus = bus;
  }

  /** VMs that hold a lock now. */
  get held(): string[] {
    return [...this.#fds.keys()].sort();
  }

  /**
   * Take the lock for `vm` unless it has one. `why` is shown by
   * `systemd-inhibit --list`. Rejects when logind cannot be asked.
   */
  async take(vm: string, why: string): Promise<void> {
    if (this.#fds.has(vm)) return;
    const object = await this.#bus.getProxyObject(LOGIND_BUS_NAME, '/org/freedesktop/login1');
    const inhibit = object.getInterface('org.freedesktop.login1.Manager')['Inhibit'] as (
      what: string,
      who: string,
      why: string,
      mode: string,
    ) => Promise<number>;
    const fd = await inhibit('sleep', 'vfio-hookd', why, 'block');
    if (typeof fd !== 'number') throw new Error('logind returned no file descriptor; is unix fd passing enabled on the bus?');
    if (this.#fds.has(vm))
      fs.closeSync(fd); // taken meanwhile
    else this.#fds.set(vm, fd);
  }

  release(vm: string): void {
    const fd = this.#fds.get(vm);
    if (fd === undefined) return;
    this.#fds.delete(vm);
    fs.closeSync(fd);
  }

  releaseAll(): void {
    for (const vm of [...this.#fds.keys()]) this.release(vm);
  }
}
