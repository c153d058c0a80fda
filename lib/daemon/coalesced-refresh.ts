/**
 * One refresh at a time, bursts coalesced: `request()` while one runs queues
 * exactly one more (it reads everything afresh when it runs, so one waiting
 * is enough however many requests came). Used for the Machine and Device
 * objects, refreshed after every change. The same p-queue as the per-VM
 * and ledger queues (lib/lifecycle), so "one at a time" has one mechanism.
 */
import PQueue from 'p-queue';

export class CoalescedRefresh {
  readonly #work: () => Promise<void>;
  readonly #queue = new PQueue({ concurrency: 1 });

  /** `work` must not reject (it reports its own errors). */
  constructor(work: () => Promise<void>) {
    this.#work = work;
  }

  request(): void {
    // `size` counts the waiting, not the running: one waiting is enough.
    if (this.#queue.size > 0) return;
    void this.#queue.add(() => this.#work());
  }

  /** Resolves when the refreshes requested so far have run. */
  settled(): Promise<void> {
    return this.#queue.onIdle();
  }
}
