/**
 * The user's own service manager, `org.freedesktop.systemd1` on the session
 * bus: start and stop units as systemctl does.
 *
 * `Subscribe()` and the `JobRemoved` match come first, once; a job's result
 * is taken from `JobRemoved`, whichever of it and the `StartUnit` reply comes
 * first (systemd may finish a job before the caller sees the reply), and a
 * start succeeds only on result `done`. After a start, the unit's
 * `ActiveState` is followed through `PropertiesChanged` (systemd sends them to
 * subscribed clients), so a service that starts and then dies (`Type=simple`
 * whose program exits with an error) is reported too.
 */
import { systemdUnitPath as unitPath } from '../bus/object-path.js';
import {
  SYSTEMD_BUS_NAME as SYSTEMD,
  SYSTEMD_MANAGER_INTERFACE as SYSTEMD_MANAGER,
  SYSTEMD_PATH,
  SYSTEMD_UNIT_INTERFACE as SYSTEMD_UNIT,
} from '../bus/names.js';
import { OrderedBus, unwrap, unwrapDict } from './ordered-bus.js';
import { JOB_REMOVED_RULE, JobResults, isJobRemoved } from '../systemd/job-results.js';

const PROPERTIES = 'org.freedesktop.DBus.Properties';

export interface JobOutcome {
  /** JobRemoved's result: done, canceled, timeout, failed, dependency, skipped; or 'error' when the call itself failed. */
  readonly result: string;
  /** The D-Bus error text when the call failed (e.g. the unit does not exist). */
  readonly message?: string;
}

export class UserSystemd {
  readonly #bus: OrderedBus;
  readonly #jobs = new JobResults();
  readonly #activeStateListeners = new Set<(unit: string, activeState: string) => void>();
  readonly #followed = new Map<string, string>(); // unit path -> unit name

  constructor(bus: OrderedBus) {
    this.#bus = bus;
  }

  /** Match rules, then Subscribe(): from here on JobRemoved and unit PropertiesChanged reach us. */
  async start(): Promise<void> {
    this.#bus.onSignal((m) => {
      if (isJobRemoved(m)) {
        this.#jobs.removed(m.body);
      } else if (m.interface === PROPERTIES && m.member === 'PropertiesChanged' && m.body[0] === SYSTEMD_UNIT) {
        const unit = this.#followed.get(m.path);
        const state = unwrapDict(m.body[1])['ActiveState'];
        if (unit !== undefined && typeof state === 'string') for (const l of this.#activeStateListeners) l(unit, state);
      }
    });
    await this.#bus.addMatch(JOB_REMOVED_RULE);
    await this.#bus.addMatch(
      `type='signal',sender='${SYSTEMD}',interface='${PROPERTIES}',member='PropertiesChanged',path_namespace='${SYSTEMD_PATH}/unit'`,
    );
    await this.#bus.call({ destination: SYSTEMD, path: SYSTEMD_PATH, interface: SYSTEMD_MANAGER, member: 'Subscribe' });
  }

  /** Called with every ActiveState change of a unit started through `startUnit`. */
  onActiveState(listener: (unit: string, activeState: string) => void): void {
    this.#activeStateListeners.add(listener);
  }

  startUnit(unit: string): Promise<JobOutcome> {
    this.#followed.set(unitPath(unit), unit);
    return this.#job('StartUnit', unit);
  }

  stopUnit(unit: string): Promise<JobOutcome> {
    return this.#job('StopUnit', unit);
  }

  /** The unit's ActiveState now ('' when it cannot be read). */
  async activeState(unit: string): Promise<string> {
    try {
      return await this.#bus.call(
        {
          destination: SYSTEMD,
          path: unitPath(unit),
          interface: PROPERTIES,
          member: 'Get',
          signature: 'ss',
          body: [SYSTEMD_UNIT, 'ActiveState'],
        },
        (body) => String(unwrap(body[0])),
      );
    } catch {
      return '';
    }
  }

  async #job(method: 'StartUnit' | 'StopUnit', unit: string): Promise<JobOutcome> {
    let job: string;
    try {
      job = await this.#bus.call(
        { destination: SYSTEMD, path: SYSTEMD_PATH, interface: SYSTEMD_MANAGER, member: method, signature: 'ss', body: [unit, 'replace'] },
        (body) => String(body[0]),
      );
    } catch (error) {
      return { result: 'error', message: (error as Error).message };
    }
    // Unbounded, as before: a user unit's start is not on a hook's path (the agent follows the VM's state on its own),
    // and systemd's own TimeoutStartSec ends the job.
    return { result: (await this.#jobs.wait(job)) ?? 'timeout' };
  }
}
