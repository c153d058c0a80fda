/**
 * Follow the configuration file: reload when it changes, keep the previous
 * configuration when the new text is broken.
 *
 * The watch is on the file's directory, not the file: editors and tools
 * (vim, `sed -i`, Ansible, `install`) replace a file by writing a new one and
 * renaming it over the old, and a watch on the old inode would go quiet
 * forever after. Events for other names in the directory are ignored. If the
 * directory does not exist (yet, or any more), the nearest existing ancestor
 * is watched for it to appear, then the watch moves down (no polling anywhere).
 *
 * A burst of events (write, then rename, then chmod) is folded into one
 * reload, `debounceMs` after the last event. Reloads run one at a time.
 * Event-driven reloads of unchanged text emit nothing, so an editor that
 * saves twice, or touches the file, causes no churn.
 *
 * A file that is not to be trusted (someone other than root could change it,
 * see load-config.ts) is refused like one that does not parse: an 'error',
 * and the previous configuration stays. A chmod or chown of the file or its
 * folder is an event too, so fixing them is picked up like fixing the text
 * (a fix further up, or at a symlink's target, waits for reload()).
 *
 * A file that disappears is an empty configuration, as at startup. The
 * debounce usually hides the moment between "old file renamed away" and "new
 * file renamed in"; if a tool leaves a real gap, listeners see the empty
 * configuration and then the new one.
 */

import { EventEmitter } from 'node:events';
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, parse as parsePath, resolve, sep } from 'node:path';

import { InvalidConfig, q } from '../errors.js';
import { DEFAULT_CONFIG_PATH, readConfigText } from './load-config.js';
import { emptyConfig, parseConfig } from './parse-config.js';
import type { Config } from './types.js';

export interface ConfigWatcherOptions {
  /** The configuration file. Default `/etc/vfio-hookd/vfio-hookd.toml`. */
  readonly path?: string;
  /** Quiet time after the last file event before reloading, in ms. Default `100`. */
  readonly debounceMs?: number;
}

export interface ConfigWatcherEvents {
  /** A new, valid configuration replaced `current`. */
  change: [config: Config];
  /** The file changed but is not valid; `current` is unchanged and stays in use. */
  error: [error: InvalidConfig];
}

/** Why the file is read: the first load, reload(), or a file event. */
type LoadReason = 'start' | 'explicit' | 'event';

export class ConfigWatcher extends EventEmitter<ConfigWatcherEvents> {
  /** The file being followed, absolute. */
  readonly path: string;
  readonly #dir: string;
  readonly #file: string;
  readonly #debounceMs: number;
  #current: Config | null = null;
  /** The text behind `#current` (`null`: no file), to skip reloads that change nothing. */
  #currentText: string | null | undefined;
  /** The last text that failed, so the same broken save is reported once. */
  #failedText: string | undefined;
  #watcher: FSWatcher | null = null;
  /** The directory `#watcher` is on: the file's own, or an ancestor waiting for it. */
  #watchedDir: string | null = null;
  #timer: NodeJS.Timeout | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #arming: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: ConfigWatcherOptions = {}) {
    super();
    this.path = resolve(options.path ?? DEFAULT_CONFIG_PATH);
    this.#dir = dirname(this.path);
    this.#file = basename(this.path);
    this.#debounceMs = options.debounceMs ?? 100;
  }

  /** The last valid configuration, or `null` before the first successful load. */
  get current(): Config | null {
    return this.#current;
  }

  /**
   * Start watching, then load the file once. This first load emits nothing:
   * its result is the return value (or the rejection).
   *
   * @returns the configuration.
   * @throws InvalidConfig when the file is not valid; the watcher keeps
   *   running (a later fix is picked up and emitted as 'change'), so call
   *   `close()` if you give up on it.
   */
  async start(): Promise<Config> {
    if (this.#closed) throw new Error('ConfigWatcher is closed');
    await this.#arm();
    return this.#enqueue('start');
  }

  /**
   * Read the file again now (SIGHUP, the bus's `Reload()`). Emits 'change' if
   * the configuration changed and 'error' if the file is invalid, like a file
   * event does, even when the text is the same as before.
   *
   * @returns the configuration in use afterwards.
   * @throws InvalidConfig when the file is not valid (`current` is kept).
   */
  reload(): Promise<Config> {
    return this.#enqueue('explicit');
  }

  /** Stop watching. Pending timers are cleared; a reload already running finishes without emitting. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#watcher?.close();
    this.#watcher = null;
    this.#watchedDir = null;
  }

  #enqueue(why: LoadReason): Promise<Config> {
    const run = this.#queue.then(() => this.#load(why));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #load(why: LoadReason): Promise<Config> {
    let text: string | null;
    try {
      text = await readConfigText(this.path);
    } catch (error) {
      return this.#fail(error, undefined, why);
    }
    if (why === 'event') {
      if (this.#current !== null && text === this.#currentText) return this.#current;
      // The same broken save again (an editor writing twice): reported already.
      if (text !== null && text === this.#failedText) return this.#current ?? emptyConfig();
    }
    let config: Config;
    try {
      config = text === null ? emptyConfig() : parseConfig(text, this.path);
    } catch (error) {
      return this.#fail(error, text ?? undefined, why);
    }
    this.#failedText = undefined;
    const changed = this.#current === null || text !== this.#currentText;
    this.#current = config;
    this.#currentText = text;
    if (changed && why !== 'start' && !this.#closed) this.emit('change', config);
    return config;
  }

  /** Report a failed load: 'error' (when anyone listens, and not for start()), and a rejection unless event-driven. */
  #fail(error: unknown, text: string | undefined, why: LoadReason): Config {
    if (!(error instanceof InvalidConfig)) throw error;
    this.#failedText = text;
    // An 'error' event without a listener would throw; the caller of reload() still gets the rejection.
    if (why !== 'start' && !this.#closed && this.listenerCount('error') > 0) this.emit('error', error);
    if (why !== 'event') throw error;
    return this.#current ?? emptyConfig();
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      // Errors already went to 'error'; anything else is a bug worth surfacing as one too.
      this.#enqueue('event').catch((error: unknown) => {
        if (!this.#closed && !(error instanceof InvalidConfig) && this.listenerCount('error') > 0) {
          this.emit('error', new InvalidConfig(`Cannot reload ${q(this.path)}: ${String(error)}`));
        }
      });
    }, this.#debounceMs);
  }

  /** Watch the file's directory, or the nearest existing ancestor until the directory appears; one at a time. */
  #arm(): Promise<void> {
    const run = this.#arming.then(() => this.#armOnce());
    this.#arming = run.catch(() => {});
    return run;
  }

  async #armOnce(): Promise<void> {
    let dir = this.#dir;
    while (!(await isDirectory(dir))) {
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
    if (this.#closed || dir === this.#watchedDir) return;
    const waitingFor = dir === this.#dir ? this.#file : nextComponent(dir, this.#dir);
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, { persistent: true }, (_event, name) => {
        // `name` can be null on some platforms: then every event counts.
        // An event named after the directory itself is Linux telling us it was removed.
        const self = name === basename(dir) && name !== waitingFor;
        if (name !== null && name !== waitingFor && !self) return;
        if (self || dir !== this.#dir) this.#arm().catch(() => {});
        this.#schedule();
      });
    } catch (error) {
      throw new InvalidConfig(`Cannot watch ${q(dir)} for changes to ${q(this.path)}: ${(error as Error).message}`);
    }
    this.#watcher?.close();
    watcher.on('error', (error) => {
      // The watched directory went away (or inotify failed): look again from the top.
      if (this.#closed) return;
      if (this.#watcher === watcher) {
        this.#watcher.close();
        this.#watcher = null;
        this.#watchedDir = null;
      }
      this.#arm().then(
        () => this.#schedule(),
        (armError: unknown) => {
          if (!this.#closed && this.listenerCount('error') > 0) {
            this.emit(
              'error',
              armError instanceof InvalidConfig ? armError : new InvalidConfig(`Cannot watch ${q(dir)}: ${error.message}`),
            );
          }
        },
      );
    });
    this.#watcher = watcher;
    this.#watchedDir = dir;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The first path component of `target` below `ancestor`: `('/etc', '/etc/a/b')` -> `'a'`. */
function nextComponent(ancestor: string, target: string): string {
  const rest = target
    .slice(ancestor.length)
    .split(sep)
    .filter((part) => part !== '');
  return rest[0] ?? parsePath(target).base;
}
