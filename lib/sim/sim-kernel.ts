/**
 * The simulated kernel: the same KernelPort as the real adapter, over a
 * simulated host's folder. Reads are the shared file reads; writes to the
 * PCI attributes follow the kernel's real behaviour (checked against a real
 * 6.1 kernel in the kernel tier):
 *
 * - `driver_override`: a 0-byte write is ignored (never reaches the kernel);
 *   `"\n"` clears it (reads back `(null)`); otherwise the text up to the first
 *   newline is stored.
 * - `drivers/<d>/unbind`: ENODEV unless bound to `d`. From vfio-pci it blocks
 *   while a process holds a VFIO device fd of the device (the kernel logs
 *   "blocked until released by user") and finishes when that process exits.
 *   A driver marked `hangsOnUnbind` never returns.
 * - `drivers_probe`: binds the override's driver, or with none the device's
 *   host driver; vfio-pci only by override. For a host driver while the
 *   group is attached to a container (a process holds `/dev/vfio/vfio` and
 *   `/dev/vfio/<group>`, as QEMU does): EINVAL, device left driverless.
 *   A process that merely opened `/dev/vfio/<group>` changes nothing.
 * - `drivers/<d>/bind`: ENODEV when no such device or the driver does not
 *   match (override names another driver), EBUSY when already bound.
 *
 * Each write is one transition, as in the kernel: a process killed at any
 * instant inside a write leaves, for the next process that opens the folder,
 * the state before the write or the state after it, never a mix (a `driver`
 * link without its back link, a DRM node without its device). The write
 * decides its file operations under the host's write lock (sim-lock.ts),
 * records them, applies them, drops the record; an open rolls a left-over
 * record forward (sim-transition.ts). A write that blocks (unbind from
 * vfio-pci while a VFIO fd is open, a hanging driver) waits before it takes
 * the lock, so it does not hold up writes to other devices.
 *
 * Differences from the real kernel, on purpose: a write abandoned after a
 * timeout has no effect here (a real one may still finish later). A reader
 * in another process that reads while a write is being applied may see it
 * half done (so may a reader of real sysfs during a probe); a process that
 * opens the folder afterwards never does.
 *
 * Crash switches, for tests (honoured only by the simulator, never by the
 * real adapter):
 *
 * - `VFIO_HOOKD_SIM_KILL_AFTER_WRITES=N`: this process sends itself SIGKILL
 *   right after its Nth call of `write()` on a simulated kernel settles,
 *   before the caller sees the result. Every call counts, whatever its
 *   outcome (done, a kernel error such as ENODEV, a timeout, a refused path,
 *   a 0-byte write the kernel ignores), counted from 1 over the process's
 *   life and across SimKernel instances. The write's own effect is complete
 *   by then: the kill lands between two sysfs writes, where a daemon
 *   crash test wants it. A process that makes fewer than N writes is not
 *   killed.
 * - `VFIO_HOOKD_SIM_KILL_AT_FILE_OP=N`: SIGKILL right before the Nth file
 *   operation inside the simulated writes (sim-transition.ts), to test that
 *   a write is one transition.
 *
 * An invalid value (not a positive whole number) makes every write fail
 * with InvalidArgs.
 */
import { watch } from 'node:fs';
import path from 'node:path';
import { isWithin } from '../roots.js';
import { UnsafePath, q } from '../errors.js';
import { KernelWriteError, KernelWriteTimeout, type KernelPort } from '../pci/kernel-port.js';
import { existsPath, readDirOrEmpty, readFileOrNull, readLinkOrNull, realPathOrNull } from '../pci/fs-reads.js';
import { isPciAddress } from '../pci/address.js';
import { parseOverride } from '../pci/pci-device.js';
import { entryIn, isPidName, linkName, NODE_NAMES, pciWriteTarget, processEntry, processFd } from '../pci/sysfs-layout.js';
import { hostDriverOf, openSimHost, planBind, planUnbind, simDeviceDir, VFIO_DEVICE_LINK, type SimHost } from './sim-host.js';
import { withSimLock } from './sim-lock.js';
import { commitTransition, envCount, KILL_AT_FILE_OP_ENV, rollForward, type FileOp } from './sim-transition.js';

/** The simulated uevents, a line `ACTION NODE` each, in the host folder (see #hostWrite). */
export const SIM_UEVENT_LOG = 'uevents.log';

type HostWriteTarget =
  | { readonly kind: 'uevent'; readonly name: string }
  | { readonly kind: 'vtconsole'; readonly name: string }
  | { readonly kind: 'platform'; readonly driver: string; readonly file: 'bind' | 'unbind' };

/** Which host-change attribute a write is for (the path as written, through class links), or null. */
function hostWriteTarget(sysfs: string, file: string): HostWriteTarget | null {
  const parts = path.relative(sysfs, file).split(path.sep);
  const [a, b, c, d, e] = parts;
  if (a === 'class' && b === 'drm' && parts.length === 4 && d === 'uevent' && c !== undefined) return { kind: 'uevent', name: c };
  if (a === 'class' && b === 'vtconsole' && parts.length === 4 && d === 'bind' && c !== undefined) return { kind: 'vtconsole', name: c };
  if (a === 'bus' && b === 'platform' && c === 'drivers' && parts.length === 5 && d !== undefined && (e === 'bind' || e === 'unbind')) {
    return { kind: 'platform', driver: d, file: e };
  }
  return null;
}

const KILL_AFTER_WRITES_ENV = 'VFIO_HOOKD_SIM_KILL_AFTER_WRITES';

/** Writes settled in this process, for the kill switch. */
let settledWrites = 0;

export class SimKernel implements KernelPort {
  readonly #host: SimHost;

  private constructor(host: SimHost) {
    this.#host = host;
  }

  static async open(dir: string): Promise<SimKernel> {
    return new SimKernel(await openSimHost(dir));
  }

  get roots(): SimHost['roots'] {
    return this.#host.roots;
  }

  get host(): SimHost {
    return this.#host;
  }

  /** The simulated kernel has no device lock: its driver_override is a plain file. */
  readLockedFile = readFileOrNull;
  readFile = readFileOrNull;
  readLink = readLinkOrNull;
  realPath = realPathOrNull;
  readDir = readDirOrEmpty;
  exists = existsPath;

  async close(): Promise<void> {}

  async write(file: string, data: string, signal: AbortSignal): Promise<void> {
    const killAfter = envCount(KILL_AFTER_WRITES_ENV);
    envCount(KILL_AT_FILE_OP_ENV); // refuse a bad value before the write, not halfway through it
    try {
      await this.#write(file, data, signal);
    } finally {
      settledWrites += 1;
      if (settledWrites === killAfter) process.kill(process.pid, 'SIGKILL');
    }
  }

  async #write(file: string, data: string, signal: AbortSignal): Promise<void> {
    const sys = this.#host.roots.sysfs;
    if (!isWithin(sys, file)) {
      throw new UnsafePath(`Write to ${q(file)} is outside the sysfs root ${q(sys)}, refusing`);
    }
    if (data.length === 0) return; // sysfs never sees a 0-byte write
    const target = pciWriteTarget(this.#host.roots, file);
    switch (target?.attribute) {
      case 'drivers_probe':
        return this.#transition(file, data, () => this.#probe(file, data));
      case 'driver_override': {
        const address = target.address;
        return this.#transition(file, data, () => this.#setOverride(file, address, data));
      }
      case 'unbind':
        return this.#unbind(file, target.driver, data, signal);
      case 'bind': {
        const driver = target.driver;
        return this.#transition(file, data, () => this.#bind(file, driver, data));
      }
    }
    const host = hostWriteTarget(sys, file);
    if (host !== null && (await existsPath(file))) return this.#hostWrite(file, host, data);
    if (!(await existsPath(file))) throw new KernelWriteError(file, 'ENOENT', `${file}: no such attribute`);
    throw new KernelWriteError(file, 'EPERM', `${file}: writing this attribute is not simulated`);
  }

  /**
   * The host-change attributes (lib/host), as the kernel handles them:
   * - `class/drm/NODE/uevent`: `add`, `remove` or `change` (optionally
   *   followed by a UUID and variables) sends that uevent and changes
   *   nothing else (kobject_synth_uevent); anything else is EINVAL. The
   *   uevents go, a line `ACTION NODE` each, to SIM_UEVENT_LOG in the host
   *   folder: the simulator's netlink socket, read by a simulated
   *   compositor (lib/sim/sim-compositor.ts).
   * - `class/vtconsole/vtconN/bind`: 0 hands the VTs to the dummy console,
   *   1 takes them back; a system driver (`(S)` in its name) cannot be
   *   unbound and the write changes nothing, without an error (vt.c's
   *   bind_store returns the count whatever vt_unbind did).
   * - `bus/platform/drivers/D/unbind` (`bind`): the named platform device
   *   must be bound to D (unbound), else ENODEV (EBUSY for a bind of a
   *   bound device); the driver and device links go (come).
   */
  async #hostWrite(file: string, target: HostWriteTarget, data: string): Promise<void> {
    const sys = this.#host.roots.sysfs;
    const value = data.trim();
    switch (target.kind) {
      case 'uevent': {
        const action = value.split(/\s+/)[0] ?? '';
        if (!['add', 'remove', 'change'].includes(action)) throw new KernelWriteError(file, 'EINVAL', `${file}: invalid uevent action`);
        const log = path.join(this.#host.dir, SIM_UEVENT_LOG);
        return this.#transition(file, data, async () => [
          { op: 'write', path: log, content: `${(await readFileOrNull(log)) ?? ''}${action} ${target.name}\n` },
        ]);
      }
      case 'vtconsole': {
        if (value !== '0' && value !== '1') throw new KernelWriteError(file, 'EINVAL', `${file}: expected 0 or 1`);
        return this.#transition(file, data, async () => {
          const name = (await readFileOrNull(path.join(path.dirname(file), 'name'))) ?? '';
          if (value === '0' && name.includes('(S)')) return [];
          return [{ op: 'write', path: file, content: `${value}\n` }];
        });
      }
      case 'platform': {
        const deviceDir = path.join(sys, 'devices', 'platform', value);
        const driverDir = path.join(sys, 'bus', 'platform', 'drivers', target.driver);
        return this.#transition(file, data, async () => {
          if (!(await existsPath(deviceDir))) throw new KernelWriteError(file, 'ENODEV', `${file}: no platform device ${value}`);
          const link = await readLinkOrNull(path.join(deviceDir, 'driver'));
          const driver = link === null ? null : linkName(link);
          if (target.file === 'unbind') {
            if (driver !== target.driver) throw new KernelWriteError(file, 'ENODEV', `${file}: ${value} is not bound to ${target.driver}`);
            return [
              { op: 'remove', path: path.join(driverDir, value) },
              { op: 'remove', path: path.join(deviceDir, 'driver') },
            ];
          }
          if (driver !== null) throw new KernelWriteError(file, 'EBUSY', `${file}: ${value} is bound to ${driver}`);
          const rel = (from: string, to: string): FileOp => ({ op: 'link', path: from, target: path.relative(path.dirname(from), to) });
          return [rel(path.join(deviceDir, 'driver'), driverDir), rel(path.join(driverDir, value), deviceDir)];
        });
      }
    }
  }

  /**
   * Decide a write's file operations and make them as one transition. The
   * decision reads the folder under the write lock, after finishing a write
   * another process died in, so it sees a state a kernel can be in.
   */
  async #transition(file: string, data: string, decide: () => Promise<FileOp[]>): Promise<void> {
    const dir = this.#host.dir;
    await withSimLock(dir, async () => {
      await rollForward(dir);
      const ops = await decide();
      await commitTransition(dir, { file: path.relative(dir, file), data }, ops);
    });
  }

  #fixtureDevice(address: string) {
    return this.#host.fixture.devices.find((x) => x.address === address);
  }

  #deviceDir(address: string): string {
    return simDeviceDir(this.#host, address);
  }

  async #driverOf(address: string): Promise<string | null> {
    const link = await readLinkOrNull(entryIn(this.#deviceDir(address), 'driver'));
    return link === null ? null : linkName(link);
  }

  async #overrideOf(address: string): Promise<string | null> {
    return parseOverride(await readFileOrNull(entryIn(this.#deviceDir(address), 'driver_override')));
  }

  /** The address the kernel parses out of a bind/unbind/probe write. */
  #address(file: string, data: string): string {
    const address = data.trim();
    if (!isPciAddress(address) || !this.#fixtureDevice(address)) {
      throw new KernelWriteError(file, 'ENODEV', `${file}: no such device ${q(address)}`);
    }
    return address;
  }

  async #setOverride(file: string, address: string, data: string): Promise<FileOp[]> {
    if (!this.#fixtureDevice(address)) throw new KernelWriteError(file, 'ENOENT', `${file}: no such device`);
    const cut = data.indexOf('\n');
    const value = cut === -1 ? data : data.slice(0, cut);
    if (value.includes('\0') || value.length >= 4095) throw new KernelWriteError(file, 'EINVAL', `${file}: invalid value`);
    return [{ op: 'write', path: entryIn(this.#deviceDir(address), 'driver_override'), content: `${value === '' ? '(null)' : value}\n` }];
  }

  /** Would `driver` bind this device (pci_match_device with driver_override)? */
  async #matches(address: string, driver: string): Promise<boolean> {
    const override = await this.#overrideOf(address);
    if (override !== null) return override === driver;
    const d = this.#fixtureDevice(address);
    return d !== undefined && hostDriverOf(d) === driver;
  }

  /** Each simulated process's fd link texts (and, for VFIO device fds, the device they are for). */
  async #processFds(): Promise<{ links: string[]; vfioDevices: string[] }[]> {
    const roots = this.#host.roots;
    const out: { links: string[]; vfioDevices: string[] }[] = [];
    for (const pid of (await readDirOrEmpty(roots.proc)).filter(isPidName)) {
      const links: string[] = [];
      const vfioDevices: string[] = [];
      for (const fd of await readDirOrEmpty(processEntry(roots, pid, 'fd'))) {
        const link = await readLinkOrNull(processFd(roots, pid, 'fd', fd));
        if (link === null) continue;
        links.push(link);
        if (link === VFIO_DEVICE_LINK) {
          const info = await readFileOrNull(processFd(roots, pid, 'fdinfo', fd));
          const m = info === null ? null : /^vfio-device-syspath:\s*(\S+)$/m.exec(info);
          if (m) vfioDevices.push(path.basename(m[1]!));
        }
      }
      out.push({ links, vfioDevices });
    }
    return out;
  }

  /**
   * Is the group attached to a container? As QEMU does it: one process holds
   * the container (`/dev/vfio/vfio`) and the group. Merely opening the group
   * changes nothing (checked on 6.12: unbind and probe then work as usual).
   */
  async #groupInContainer(group: number | null): Promise<boolean> {
    if (group === null) return false;
    const node = NODE_NAMES.vfioGroup(group);
    return (await this.#processFds()).some((p) => p.links.includes(NODE_NAMES.vfioContainer) && p.links.includes(node));
  }

  /** Does a process hold a VFIO device fd of this device? Unbind from vfio-pci blocks while one does. */
  async #deviceFdOpen(address: string): Promise<boolean> {
    return (await this.#processFds()).some((p) => p.vfioDevices.includes(address));
  }

  async #attach(file: string, address: string, driver: string): Promise<FileOp[]> {
    const d = this.#fixtureDevice(address)!;
    const spec = this.#host.fixture.drivers[driver];
    if (!spec) throw new KernelWriteError(file, 'ENODEV', `${file}: driver ${q(driver)} is not loaded`);
    if (driver !== 'vfio-pci' && (await this.#groupInContainer(d.group))) {
      // Observed on 6.1: the host driver's probe cannot claim DMA ownership
      // while the group is attached to a container.
      throw new KernelWriteError(file, 'EINVAL', `${file}: IOMMU group ${d.group} is in use`);
    }
    if (spec.failsProbe) throw new KernelWriteError(file, 'ENODEV', `${file}: ${driver} probe failed`);
    return planBind(this.#host, address, driver);
  }

  async #probe(file: string, data: string): Promise<FileOp[]> {
    const address = this.#address(file, data);
    if ((await this.#driverOf(address)) !== null) return [];
    const override = await this.#overrideOf(address);
    const d = this.#fixtureDevice(address)!;
    const target = override ?? hostDriverOf(d);
    if (target === null || !(target in this.#host.fixture.drivers)) return []; // nothing matches: stays driverless, no error
    try {
      return await this.#attach(file, address, target);
    } catch (error) {
      // A driver whose probe fails leaves the device driverless; drivers_probe still succeeds.
      if (error instanceof KernelWriteError && error.code === 'ENODEV') return [];
      throw error;
    }
  }

  async #bind(file: string, driver: string, data: string): Promise<FileOp[]> {
    const address = this.#address(file, data);
    if (!(driver in this.#host.fixture.drivers)) throw new KernelWriteError(file, 'ENOENT', `${file}: no such driver`);
    if (!(await this.#matches(address, driver))) throw new KernelWriteError(file, 'ENODEV', `${file}: ${driver} does not match ${address}`);
    if ((await this.#driverOf(address)) !== null) throw new KernelWriteError(file, 'EBUSY', `${file}: ${address} already has a driver`);
    return this.#attach(file, address, driver);
  }

  async #unbind(file: string, driver: string, data: string, signal: AbortSignal): Promise<void> {
    const address = this.#address(file, data);
    const bound = async (): Promise<void> => {
      if ((await this.#driverOf(address)) !== driver) {
        throw new KernelWriteError(file, 'ENODEV', `${file}: ${address} is not bound to ${driver}`);
      }
    };
    await bound();
    const spec = this.#host.fixture.drivers[driver];
    if (spec?.hangsOnUnbind) {
      await this.#blockUntil(async () => false, file, signal);
    }
    if (driver === 'vfio-pci') {
      // 6.12: "No device request channel registered, blocked until released by user".
      await this.#blockUntil(async () => !(await this.#deviceFdOpen(address)), file, signal);
    }
    // Checked again under the lock: the device may have moved while this write waited.
    await this.#transition(file, data, async () => {
      await bound();
      return planUnbind(this.#host, address, driver);
    });
  }

  /**
   * Block like a kernel write that waits for a user to let go: re-check when
   * a process comes or goes under `proc/`, give up when the caller aborts.
   */
  async #blockUntil(ready: () => Promise<boolean>, file: string, signal: AbortSignal): Promise<void> {
    if (await ready()) return;
    await new Promise<void>((resolve, reject) => {
      let done = false;
      const recheck = (): void => {
        void ready().then(
          (ok) => ok && finish(null),
          (error: Error) => finish(error),
        );
      };
      const watcher = watch(this.#host.roots.proc, recheck);
      const finish = (error: Error | null): void => {
        if (done) return;
        done = true;
        watcher.close();
        signal.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve();
      };
      const onAbort = (): void => finish(new KernelWriteTimeout(file));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      recheck(); // the holder may have gone between the first check and the watch
    });
  }
}
