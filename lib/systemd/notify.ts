/**
 * sd_notify(3) for a `Type=notify` service: tell the service manager through
 * `$NOTIFY_SOCKET` that we are ready, what we are doing, that we are alive
 * (watchdog), reloading, or stopping.
 *
 * Order, as systemd's own daemons do it (see STYLE.md): export the D-Bus
 * objects, own the bus name, then `ready()`; `stopping()` on SIGTERM;
 * `reloading()` at the start of a reload and `ready()` again when it is done.
 *
 * Sending never throws and never crashes the daemon. A failure goes to the
 * `onError` callback once, when sending starts to fail (and once more if it
 * fails again after a success), so the caller can log it a single time.
 *
 * Without `$NOTIFY_SOCKET` (`Type=simple`, or run by hand) every method is a
 * no-op that returns false.
 *
 * Abstract sockets: `$NOTIFY_SOCKET` may name a Linux abstract socket
 * (`@name`, a leading NUL byte on the wire). `unix-dgram` cannot address
 * those, so such a notifier sends nothing and reports one `DatagramError`
 * (code `EINVAL`) through `onError`. systemd itself (PID 1 and the user
 * manager) always uses a path (`/run/systemd/notify`,
 * `$XDG_RUNTIME_DIR/systemd/notify`); abstract names come from some
 * container managers only.
 */
import { InvalidArgs, q } from '../errors.js';
import { DatagramError, type DatagramSender } from './datagram.js';
import { sendDatagram } from './_internal/unix-datagram.js';

/** The environment variables sd_notify reads, and removes with `unsetEnvironment`. */
const NOTIFY_ENVIRONMENT = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID'] as const;

/** setInterval's largest delay (2^31 - 1 ms, about 24.8 days); a longer watchdog period is pinged at this pace. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface NotifierOptions {
  /**
   * Called with a `DatagramError` when sending starts to fail, once, and again
   * only after a send has succeeded in between. Default: none (failures are
   * silent, as `sd_notify()`'s return value usually is).
   */
  onError?: (error: DatagramError) => void;
  /**
   * Remove `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `env`
   * after reading them, so that child processes (spawned with the default
   * `process.env`) do not talk to our service manager in our name
   * (`sd_notify()`'s `unset_environment`). Default false.
   */
  unsetEnvironment?: boolean;
  /** This process's pid, compared with `WATCHDOG_PID`. Default `process.pid`. */
  pid?: number;
  /** `CLOCK_MONOTONIC` in microseconds, for `MONOTONIC_USEC=`. Default `process.hrtime.bigint() / 1000n` (libuv reads `CLOCK_MONOTONIC`). */
  monotonicUsec?: () => bigint;
  /** How a datagram is sent. Default: a fresh AF_UNIX datagram socket per message (`unix-dgram`). */
  send?: DatagramSender;
  /** The watchdog's interval timer. Default Node's `setInterval`/`clearInterval` (tests inject a clock of their own). */
  timers?: IntervalTimers;
}

/** The two timer functions the watchdog uses; a handle must be unref-able. */
interface IntervalTimers {
  setInterval(callback: () => void, ms: number): { unref(): unknown };
  clearInterval(handle: { unref(): unknown }): void;
}

const NODE_TIMERS: IntervalTimers = {
  setInterval: (callback, ms) => setInterval(callback, ms),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
};

/** `STATUS=` is one line: control characters (newlines above all) become spaces, and the ends are trimmed. */
export function statusLine(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
}

/** A positive decimal integer from the environment, or null. */
function positiveInteger(value: string | undefined): number | null {
  if (value === undefined || !/^[0-9]+$/.test(value)) return null;
  const n = Number(value);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export class Notifier {
  readonly #socket: string | null;
  readonly #watchdogUsec: number | null;
  readonly #onError: ((error: DatagramError) => void) | undefined;
  readonly #monotonicUsec: () => bigint;
  readonly #send: DatagramSender;
  #failing = false;
  #closed = false;
  readonly #timers: IntervalTimers;
  #watchdogTimer: { unref(): unknown } | undefined;

  /**
   * Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `env`
   * (default `process.env`). An unset or empty `NOTIFY_SOCKET` gives a
   * notifier that does nothing. The watchdog is on when `WATCHDOG_USEC` is a
   * positive integer and `WATCHDOG_PID` is unset or this process's pid.
   * Never throws: a socket address that cannot be used is reported through
   * `onError` at the first send.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, options: NotifierOptions = {}): Notifier {
    const socket = env['NOTIFY_SOCKET'] || null;
    let watchdogUsec = positiveInteger(env['WATCHDOG_USEC']);
    const watchdogPid = env['WATCHDOG_PID'];
    if (watchdogPid !== undefined && positiveInteger(watchdogPid) !== (options.pid ?? process.pid)) {
      watchdogUsec = null;
    }
    if (options.unsetEnvironment === true) {
      for (const name of NOTIFY_ENVIRONMENT) delete env[name];
    }
    return new Notifier(socket, socket === null ? null : watchdogUsec, options);
  }

  /** A notifier that never sends: for `Type=simple`, tests, and tools run by hand. */
  static disabled(): Notifier {
    return new Notifier(null, null, {});
  }

  private constructor(socket: string | null, watchdogUsec: number | null, options: NotifierOptions) {
    this.#socket = socket;
    this.#watchdogUsec = watchdogUsec;
    this.#onError = options.onError;
    this.#monotonicUsec = options.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n);
    this.#send = options.send ?? sendDatagram;
    this.#timers = options.timers ?? NODE_TIMERS;
  }

  /** True when there is a `NOTIFY_SOCKET` to send to (and `close()` was not called). */
  get enabled(): boolean {
    return this.#socket !== null && !this.#closed;
  }

  /** The `NOTIFY_SOCKET` value, or null without one. */
  get socket(): string | null {
    return this.#socket;
  }

  /** The service manager's watchdog period for this process in microseconds, or null when it has none. */
  get watchdogUsec(): number | null {
    return this.#watchdogUsec;
  }

  /** `READY=1` (with `STATUS=` when given): startup is finished, the bus name is owned. */
  ready(status?: string): boolean {
    return this.#notify(['READY=1'], status);
  }

  /** `STATUS=`: one short line saying what the daemon is doing. */
  status(text: string): boolean {
    return this.#notify([], text);
  }

  /** `STOPPING=1` (with `STATUS=` when given): shutdown has begun. */
  stopping(status?: string): boolean {
    return this.#notify(['STOPPING=1'], status);
  }

  /**
   * `RELOADING=1` with `MONOTONIC_USEC=` (systemd 253 and later require it for
   * `Type=notify-reload`; older managers ignore it). Send `ready()` when the
   * reload is done.
   */
  reloading(status?: string): boolean {
    return this.#notify(['RELOADING=1', `MONOTONIC_USEC=${this.#monotonicUsec()}`], status);
  }

  /** `WATCHDOG=1`: one keep-alive ping. */
  watchdog(): boolean {
    return this.#notify(['WATCHDOG=1']);
  }

  /** `MAINPID=`: the main process is another one (rarely needed: we are the main process). Throws `InvalidArgs` for a pid that is not a positive integer. */
  mainPid(pid: number): boolean {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new InvalidArgs(`Invalid pid ${q(pid)}, refusing`);
    return this.#notify([`MAINPID=${pid}`]);
  }

  /** Send raw `KEY=value` lines (for states not wrapped here, e.g. `EXTEND_TIMEOUT_USEC=`). */
  notify(state: string): boolean {
    return this.#sendState(state);
  }

  /**
   * Ping `WATCHDOG=1` now and then every half `WATCHDOG_USEC`, on an unref'd
   * timer (it never keeps the process alive). Does nothing when the manager
   * set no watchdog for this process. Starting again replaces the previous
   * timer. Returns a function that stops the pings.
   */
  startWatchdog(): () => void {
    this.#stopWatchdog();
    if (this.#watchdogUsec === null || !this.enabled) return () => {};
    const periodMs = Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(this.#watchdogUsec / 2 / 1000)));
    this.watchdog();
    const timer = this.#timers.setInterval(() => this.watchdog(), periodMs);
    timer.unref();
    this.#watchdogTimer = timer;
    return () => {
      if (this.#watchdogTimer === timer) this.#stopWatchdog();
    };
  }

  /** Stop the watchdog pings; later calls send nothing. Holds no socket, so there is nothing else to release. */
  close(): void {
    this.#stopWatchdog();
    this.#closed = true;
  }

  #stopWatchdog(): void {
    if (this.#watchdogTimer !== undefined) this.#timers.clearInterval(this.#watchdogTimer);
    this.#watchdogTimer = undefined;
  }

  #notify(lines: string[], status?: string): boolean {
    if (status !== undefined) lines.push(`STATUS=${statusLine(status)}`);
    return this.#sendState(lines.join('\n'));
  }

  #sendState(state: string): boolean {
    if (this.#socket === null || this.#closed) return false;
    try {
      this.#send(this.#socket, Buffer.from(state, 'utf8'));
      this.#failing = false;
      return true;
    } catch (error) {
      this.#report(state, error);
      return false;
    }
  }

  #report(state: string, error: unknown): void {
    if (this.#failing) return;
    this.#failing = true;
    const first = state.split('\n', 1)[0] ?? '';
    const code = error instanceof DatagramError ? error.code : 'EIO';
    const reason = error instanceof Error ? error.message : String(error);
    const wrapped = new DatagramError(`Cannot send ${q(first)} to NOTIFY_SOCKET ${q(this.#socket)}: ${reason}, ignoring`, code, {
      cause: error,
    });
    try {
      this.#onError?.(wrapped);
    } catch {
      // The caller's logger failing must not turn a notify failure into a crash.
    }
  }
}
