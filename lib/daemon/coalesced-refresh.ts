/**
 * One refresh at a time, bursts coalesced: `request()` while one runs queues
 * exactly one more (it reads everything afresh when it runs, so one waiting
 * is enough however many requests came). Used for the Machine and Device
 * objects, refreshed after every change.
 */
export class CoalescedRefresh {
  readonly #work: () => Promise<void>;
  #running: Promise<void> = Promise.resolve();
  #queued = false;

  /** `work` must not reject (it reports its own errors). */
  constructor(work: () => Promise<void>) {
    this.#work = work;
  }

  request(): void {
    if (this.#queued) return;
    this.#queued = true;
    this.#running = this.#running.then(() => {
      this.#queued = false;
      return this.#work();
    });
  }

  /** Resolves when the refreshes requested so far have run. */
  settled(): Promise<void> {
    return this.#running;
  }
}
