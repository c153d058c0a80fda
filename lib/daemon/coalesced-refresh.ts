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
  /** The refresh waiting to run (it covers every request made until it starts), or null. */
  #waiting: { done: Promise<void> | null } | null = null;

  /** `work` must not reject (it reports its own errors). */
  constructor(work: () => Promise<void>) {
    this.#work = work;
  }

  /**
   * Ask for a refresh. Resolves when a refresh that began after this request
   * has run: at most the one running now and the next, however busy the
   * queue stays (settled() waits for the queue to be idle, which a long
   * stage asking for a refresh at every step can put off for its whole run).
   */
  request(): Promise<void> {
    // One waiting is enough: it reads everything afresh when it starts.
    if (this.#waiting?.done) return this.#waiting.done;
    const waiting: { done: Promise<void> | null } = { done: null };
    this.#waiting = waiting;
    const done = this.#queue.add(async () => {
      // Started (p-queue may start it within add()): later requests need a refresh of their own.
      if (this.#waiting === waiting) this.#waiting = null;
      await this.#work();
    });
    if (this.#waiting === waiting) waiting.done = done;
    return done;
  }

  /** Resolves when the refreshes requested so far have run. */
  settled(): Promise<void> {
    return this.#queue.onIdle();
  }
}
