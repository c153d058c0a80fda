/**
 * One writer of the state at a time, across processes: the daemon takes this
 * lock around every device operation, and `vfio-hookctl` takes it when it
 * writes sysfs and the state file itself (the daemon not running). Without
 * it a CLI detach racing a daemon's release loses one of the two claims.
 *
 * The lock is `<run>/vfio-hookd/state.lock`, created with O_EXCL and holding
 * the holder's pid. Node has no flock(2); an O_EXCL file is the portable
 * equivalent, with one cost: a holder killed with SIGKILL leaves the file.
 * So a waiter checks whether the recorded pid is alive (kill(pid, 0)) and
 * takes over a lock whose holder is dead. Taking over is itself made atomic:
 * the stale file is renamed to a name unique to the taker, and only the
 * taker that wins the rename removes it, so two takers cannot both win.
 *
 * Waiting re-checks on the folder's fs events (the holder unlinking the
 * file) and, because a dead holder sends no event, at a short interval too:
 * the one place where this module polls, bounded by `timeoutMs`.
 */
import { randomUUID } from 'node:crypto';
import { watch } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StateLocked, q } from '../errors.js';

/** How often a waiter re-checks a holder that may have died without an event. */
const RECHECK_MS = 50;

interface StateLockOptions {
  /** Longest to wait for another holder. Default 30 000 ms. */
  readonly timeoutMs?: number;
}

export class StateLock {
  readonly path: string;
  readonly #dir: string;
  readonly #timeoutMs: number;

  constructor(stateDir: string, options: StateLockOptions = {}) {
    this.#dir = stateDir;
    this.path = path.join(stateDir, 'state.lock');
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /** Run `work` holding the lock. */
  async with<T>(work: () => Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await work();
    } finally {
      await fs.rm(this.path, { force: true });
    }
  }

  async #tryOnce(): Promise<number | null> {
    await fs.mkdir(this.#dir, { recursive: true, mode: 0o755 });
    try {
      const handle = await fs.open(this.path, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return null;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const text = await fs.readFile(this.path, 'utf8').catch(() => '');
    const holder = Number.parseInt(text, 10);
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) return holder;
    // An empty file is a holder between its create and its write: wait,
    // unless it has been empty for seconds (killed in between).
    if (text === '') {
      const age = await fs.stat(this.path).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age < 2_000) return -1;
    }
    const aside = path.join(this.#dir, `.state.lock.stale.${randomUUID()}`);
    try {
      await fs.rename(this.path, aside);
    } catch {
      return -1; // somebody else took it over first
    }
    const moved = await fs.readFile(aside, 'utf8').catch(() => '');
    if (moved !== text) {
      // Between our read and our rename the stale lock was taken over and a
      // fresh one made: we moved a live holder's file. Put it back with
      // link(2), which fails rather than replace a lock made since (then two
      // holders would exist; it needs three processes racing over a dead
      // holder within microseconds, which we accept and say here).
      await fs.link(aside, this.path).catch(() => undefined);
    }
    await fs.rm(aside, { force: true });
    return -1;
  }

  async #acquire(): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    let holder: number | null = await this.#tryOnce();
    if (holder === null) return;
    await fs.mkdir(this.#dir, { recursive: true });
    const watcher = watch(this.#dir);
    try {
      while (holder !== null) {
        if (Date.now() >= deadline) {
          throw new StateLocked(
            `The state ${q(this.path)} has been locked by ${holder > 0 ? `pid ${holder}` : 'another process'} for more than ${this.#timeoutMs / 1000} s; ` +
              `is another vfio-hookctl or vfio-hookd stuck? Try again, refusing`,
          );
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, RECHECK_MS);
          function done(): void {
            clearTimeout(timer);
            watcher.off('change', done);
            resolve();
          }
          watcher.on('change', done);
        });
        holder = await this.#tryOnce();
      }
    } finally {
      watcher.close();
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
