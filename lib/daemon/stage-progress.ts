/**
 * What the daemon is doing right now, while a prepare or a release runs:
 * the VM, the stage, the current step and since when. Stages run one at a
 * time (the device ledger serialises them), so one record is enough.
 *
 * Listeners hear each step as it starts, so a hung unbind is visible while
 * it hangs: the Machine's `Step` property, the Manager's `StepStarted`
 * signal (what `vfio-hookctl monitor` prints) and `STATUS=` for
 * `systemctl status`.
 */

export type ProgressStage = 'prepare' | 'release';

export interface Progress {
  readonly vm: string;
  readonly stage: ProgressStage;
  /** The step now running, in words ("unbinding 0000:0b:00.0 from amdgpu"). */
  readonly step: string;
  /** When the step started (ms since the epoch). */
  readonly stepSinceMs: number;
  /** When the stage started (ms since the epoch). */
  readonly stageSinceMs: number;
}

export type ProgressListener = (progress: Progress | null) => void;

export class StageProgress {
  #current: Progress | null = null;
  readonly #listeners = new Set<ProgressListener>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  get current(): Progress | null {
    return this.#current;
  }

  /** `listener` hears every step start and the end of each stage (null); returns how to stop listening. */
  listen(listener: ProgressListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Run `work` as `vm`'s `stage`, its progress visible meanwhile. */
  async run<T>(vm: string, stage: ProgressStage, work: () => Promise<T>): Promise<T> {
    const now = this.#now();
    this.#set({ vm, stage, step: stage === 'prepare' ? 'planning' : 'reading its record', stepSinceMs: now, stageSinceMs: now });
    try {
      return await work();
    } finally {
      this.#set(null);
    }
  }

  /** The step now running, for the stage in progress; ignored outside one (a manual detach has the CLI's -v instead). */
  step(step: string): void {
    const current = this.#current;
    if (current === null) return;
    this.#set({ ...current, step, stepSinceMs: this.#now() });
  }

  #set(next: Progress | null): void {
    this.#current = next;
    for (const listener of [...this.#listeners]) listener(next);
  }
}

/** `unbinding 0000:0b:00.0 from amdgpu, 8 s`: the step and how long it has run. */
export function progressText(progress: Progress, nowMs: number): string {
  const seconds = Math.max(0, Math.floor((nowMs - progress.stepSinceMs) / 1000));
  return `${progress.step}, ${seconds} s`;
}
