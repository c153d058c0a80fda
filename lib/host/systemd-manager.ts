/**
 * The system's service manager, `org.freedesktop.systemd1` on the system
 * bus, through dbus-next: the few calls the host changes make (host-change.ts
 * SystemdManager).
 *
 * A job is waited for as systemctl and cockpit's service.js do: the
 * `JobRemoved` match and `Subscribe()` come first (once, in `start`), then
 * `StartUnit`/`StopUnit(name, "replace")`; the job's result is taken from
 * `JobRemoved` whichever of it and the call's reply comes first (systemd may
 * finish a job before the caller has read the reply naming it, and dbus-next
 * emits signals read with a reply before that reply's promise settles), and
 * only `done` is success. The wait is bounded (`jobTimeoutMs`): a stop that
 * hangs (a unit whose `TimeoutStopSec=infinity` process never exits) is a
 * refusal naming the unit, never a hook call that never returns.
 */
import dbus from 'dbus-next';
import { Timeout, UnitFailed, q } from '../errors.js';
import { systemdUnitPath as unitPath } from '../bus/object-path.js';
import {
  SYSTEMD_BUS_NAME as SYSTEMD,
  SYSTEMD_MANAGER_INTERFACE as MANAGER,
  SYSTEMD_PATH,
  SYSTEMD_UNIT_INTERFACE as UNIT,
} from '../bus/names.js';
import type { SystemdManager } from './host-change.js';
import { JOB_REMOVED_RULE, JobResults, isJobRemoved } from '../systemd/job-results.js';

const PROPERTIES = 'org.freedesktop.DBus.Properties';

/** Default bound on one job: systemd's own default stop timeout (90 s) and some margin. */
export const DEFAULT_JOB_TIMEOUT_MS = 120_000;

export interface SystemdManagerOptions {
  /** Longest wait for one job's JobRemoved. Default DEFAULT_JOB_TIMEOUT_MS. */
  readonly jobTimeoutMs?: number;
}

function unwrap(value: unknown): unknown {
  return value instanceof dbus.Variant ? value.value : value;
}

export class DbusSystemdManager implements SystemdManager {
  readonly #bus: dbus.MessageBus;
  readonly #timeoutMs: number;
  readonly #jobs = new JobResults();
  #started: Promise<void> | null = null;
  readonly #onMessage = (message: dbus.Message): void => {
    if (message.type === dbus.MessageType.SIGNAL && isJobRemoved(message)) this.#jobs.removed(message.body as unknown[]);
  };

  constructor(bus: dbus.MessageBus, options: SystemdManagerOptions = {}) {
    this.#bus = bus;
    this.#timeoutMs = options.jobTimeoutMs ?? DEFAULT_JOB_TIMEOUT_MS;
  }

  /** The match rule and Subscribe(), once, before the first job (idempotent; a failure is retried next time). */
  start(): Promise<void> {
    this.#started ??= (async () => {
      this.#bus.on('message', this.#onMessage);
      await this.#call('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'AddMatch', 's', [JOB_REMOVED_RULE]);
      await this.#call(SYSTEMD, SYSTEMD_PATH, MANAGER, 'Subscribe');
    })().catch((error: unknown) => {
      this.#bus.off('message', this.#onMessage);
      this.#started = null;
      throw error;
    });
    return this.#started;
  }

  /** Stop listening (the daemon's stop); jobs still waited for end as timeouts. */
  close(): void {
    this.#bus.off('message', this.#onMessage);
    this.#started = null;
  }

  startUnit(name: string): Promise<void> {
    return this.#job('StartUnit', name);
  }

  stopUnit(name: string): Promise<void> {
    return this.#job('StopUnit', name);
  }

  async activeState(name: string): Promise<string> {
    const state = await this.unitProperty(name, UNIT, 'ActiveState');
    return typeof state === 'string' ? state : 'inactive';
  }

  async setRuntimeProperty(name: string, property: string, signature: string, value: unknown): Promise<void> {
    await this.#call(SYSTEMD, SYSTEMD_PATH, MANAGER, 'SetUnitProperties', 'sba(sv)', [
      name,
      true,
      [[property, new dbus.Variant(signature, value)]],
    ]);
  }

  async unitProperty(name: string, iface: string, property: string): Promise<unknown> {
    // Reading a unit's path loads it (systemd's bus_unit_find): a unit with no file answers LoadState 'not-found', ActiveState 'inactive'.
    const body = await this.#call(SYSTEMD, unitPath(name), PROPERTIES, 'Get', 'ss', [iface, property]);
    return unwrap(body[0]);
  }

  async #job(method: 'StartUnit' | 'StopUnit', unit: string): Promise<void> {
    const verb = method === 'StartUnit' ? 'start' : 'stop';
    await this.start();
    let job: string;
    try {
      job = String((await this.#call(SYSTEMD, SYSTEMD_PATH, MANAGER, method, 'ss', [unit, 'replace']))[0]);
    } catch (error) {
      throw new UnitFailed(`Cannot ${verb} ${q(unit)}: systemd refused the job (${(error as Error).message}), refusing`);
    }
    const result = await this.#jobs.wait(job, this.#timeoutMs);
    if (result === null) {
      throw new Timeout(
        `Cannot ${verb} ${q(unit)}: its job did not finish within ${Math.round(this.#timeoutMs / 1000)} s; ` +
          `see 'systemctl status ${unit}', refusing`,
      );
    }
    if (result !== 'done') {
      throw new UnitFailed(`Cannot ${verb} ${q(unit)}: its job ended ${q(result)}; see 'journalctl -u ${unit}', refusing`);
    }
  }

  async #call(destination: string, path: string, iface: string, member: string, signature?: string, body?: unknown[]): Promise<unknown[]> {
    const reply = await this.#bus.call(
      new dbus.Message({
        destination,
        path,
        interface: iface,
        member,
        ...(signature !== undefined ? { signature } : {}),
        ...(body !== undefined ? { body } : {}),
      }),
    );
    return reply?.body ?? [];
  }
}
