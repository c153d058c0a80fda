/**
 * A systemd job's result, from the manager's `JobRemoved(id, job, unit,
 * result)` signal, for the system manager (lib/host/systemd-manager.ts) and
 * the user's (lib/agent/user-systemd.ts) alike.
 *
 * Why a table and not a plain wait: systemd may finish a job before the
 * caller has read the `StartUnit`/`StopUnit` reply naming it, and dbus-next
 * hands over signals read together with a reply before that reply's promise
 * settles. So a JobRemoved nobody waits for yet is kept (for a minute, then
 * dropped as nobody's), and `wait` takes it from there first.
 */
import { SYSTEMD_MANAGER_INTERFACE, SYSTEMD_PATH } from '../bus/names.js';
import { SYSTEMD_BUS_NAME } from '../bus/names.js';

/** How long a JobRemoved nobody waits for yet is kept (the reply naming its job may lag behind it). */
const ORPHAN_RESULT_MS = 60_000;

/** The match rule for the manager's JobRemoved signals (with `Subscribe()`, they reach the caller). */
export const JOB_REMOVED_RULE = `type='signal',sender='${SYSTEMD_BUS_NAME}',interface='${SYSTEMD_MANAGER_INTERFACE}',member='JobRemoved',path='${SYSTEMD_PATH}'`;

/** Is this signal the manager's JobRemoved? */
export function isJobRemoved(signal: {
  readonly interface?: string | undefined;
  readonly member?: string | undefined;
  readonly path?: string | undefined;
}): boolean {
  return signal.interface === SYSTEMD_MANAGER_INTERFACE && signal.member === 'JobRemoved' && signal.path === SYSTEMD_PATH;
}

export class JobResults {
  readonly #early = new Map<string, { result: string; at: number }>();
  readonly #waiters = new Map<string, (result: string) => void>();

  /** Feed a JobRemoved signal's body, `[id, job, unit, result]`. */
  removed(body: readonly unknown[]): void {
    const job = String(body[1]);
    const result = String(body[3]);
    const waiter = this.#waiters.get(job);
    if (waiter) {
      this.#waiters.delete(job);
      waiter(result);
      return;
    }
    const now = Date.now();
    for (const [path, entry] of this.#early) if (now - entry.at > ORPHAN_RESULT_MS) this.#early.delete(path);
    this.#early.set(job, { result, at: now });
  }

  /**
   * The result of `job` (`done`, `canceled`, `timeout`, `failed`,
   * `dependency`, `skipped`), or null when `timeoutMs` passed first.
   * Without a timeout it waits as long as systemd takes.
   */
  async wait(job: string, timeoutMs?: number): Promise<string | null> {
    const early = this.#early.get(job);
    if (early) {
      this.#early.delete(job);
      return early.result;
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<string | null>((resolve) => {
        this.#waiters.set(job, resolve);
        if (timeoutMs !== undefined) timer = setTimeout(() => resolve(null), timeoutMs);
      });
    } finally {
      clearTimeout(timer);
      this.#waiters.delete(job);
    }
  }
}
