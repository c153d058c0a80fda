/**
 * The bus tier's ground: a private system-like `dbus-daemon` per test, with
 * the shipped policy `units/org.vfiohookd1.conf`, and the real daemon process
 * on it. Never the machine's own system bus, never its `/sys`: the daemon runs
 * on a simulated host in the test's temp folder. Everything started here is
 * stopped in the test's teardown, and tracked by the settled check (settled.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { DatagramReceiver } from './datagram.js';
import { trackChild } from './settled.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const POLICY_FILE = path.join(REPO, 'units', 'org.vfiohookd1.conf');

/** How long a process may take to start (tsx compiles on the fly; 20 s was exceeded on a loaded 2-core machine) or stop. */
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;

export { tempDir } from './temp-dir.js';
import { tempDir } from './temp-dir.js';

/**
 * The shipped private-bus configuration (units/private-bus.conf.in) with our
 * socket and policy, and more policy files included after ours (logind's).
 */
export async function busConfig(
  socketPath: string,
  policyFile: string = POLICY_FILE,
  extraPolicies: readonly string[] = [],
): Promise<string> {
  const template = await fs.readFile(path.join(REPO, 'units', 'private-bus.conf.in'), 'utf8');
  return template
    .replaceAll('@SOCKET@', socketPath)
    .replace('<include>@POLICY@</include>', [policyFile, ...extraPolicies].map((f) => `<include>${f}</include>`).join('\n  '));
}

export interface PrivateBus {
  /** The address to hand to `busctl --address=` and `--bus-address`. */
  readonly address: string;
  readonly dir: string;
  stop(): Promise<void>;
}

/** Wait for `child` to exit, SIGKILL it after `ms`; resolves with its exit code or signal. */
async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', ms = STOP_TIMEOUT_MS): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/** The first line `child` prints on stdout; rejects if it exits or times out first. */
function firstLine(child: ChildProcess, what: string, stderr: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => finish(new Error(`${what} printed nothing in ${START_TIMEOUT_MS} ms; stderr: ${stderr()}`)),
      START_TIMEOUT_MS,
    );
    const onData = (chunk: Buffer): void => {
      out += chunk.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl >= 0) finish(null, out.slice(0, nl).trim());
    };
    const onExit = (code: number | null, signal: string | null): void =>
      finish(new Error(`${what} exited (${code ?? signal}) before it was ready; stderr: ${stderr()}`));
    function finish(error: Error | null, line?: string): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve(line!);
    }
    child.stdout?.on('data', onData);
    child.on('exit', onExit);
  });
}

/** Start a private bus for this test; it is stopped in teardown. */
export async function startPrivateBus(t: ExecutionContext, extraPolicies: readonly string[] = []): Promise<PrivateBus> {
  // 0755 so that the unprivileged test user can reach the socket.
  const dir = await tempDir(t, 'vfio-hookd-bus-', 0o755);
  const socketPath = path.join(dir, 'bus_socket');
  const configPath = path.join(dir, 'bus.conf');
  await fs.writeFile(configPath, await busConfig(socketPath, POLICY_FILE, extraPolicies));
  const child = trackChild(
    t,
    spawn('dbus-daemon', [`--config-file=${configPath}`, '--print-address', '--nofork', '--nopidfile'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    'dbus-daemon',
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const stop = (): Promise<void> => stopChild(child);
  t.teardown(stop);
  const address = await firstLine(child, 'dbus-daemon', () => stderr);
  return { address, dir, stop };
}

/** A `$NOTIFY_SOCKET` of our own (the one datagram receiver, test/helpers/datagram.ts): every datagram, as text. */
export class NotifyListener {
  readonly #rx: DatagramReceiver;

  private constructor(rx: DatagramReceiver) {
    this.#rx = rx;
  }

  static async open(t: ExecutionContext, socketPath: string): Promise<NotifyListener> {
    return new NotifyListener(await DatagramReceiver.open(t, socketPath));
  }

  get path(): string {
    return this.#rx.path;
  }

  get messages(): string[] {
    return this.#rx.texts;
  }

  close(): void {
    this.#rx.close();
  }

  /** Lines `KEY=value` of every message so far. */
  get lines(): string[] {
    return this.messages.flatMap((m) => m.split('\n'));
  }

  /** The first line (past or future) matching `pattern`, bounded like waitFor. */
  async waitForMatch(pattern: RegExp): Promise<string> {
    const line = (b: Buffer): string | undefined =>
      b
        .toString('utf8')
        .split('\n')
        .find((l) => pattern.test(l));
    const all = await this.#rx.waitUntil((d) => d.some((b) => line(b) !== undefined), `a datagram line matching ${pattern}`, 600_000);
    return line(all.find((b) => line(b) !== undefined)!)!;
  }

  /** The first message (past or future) with the line `line`; the callers bound the wait themselves, this only after 10 minutes. */
  async waitFor(line: string): Promise<string> {
    const has = (b: Buffer): boolean => b.toString('utf8').split('\n').includes(line);
    const all = await this.#rx.waitUntil((d) => d.some(has), `a datagram with ${line}`, 600_000);
    return all.find(has)!.toString('utf8');
  }
}

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly notify: NotifyListener;
  /** The folder holding the simulated host, the state and the configuration (pass it as `dir` to restart). */
  readonly dir: string;
  /** The simulated host's folder. */
  readonly simDir: string;
  readonly configPath: string;
  readonly runRoot: string;
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
}

/**
 * Start `service/vfio-hookd.ts` on a fresh simulated host, connected to `bus`,
 * and wait for READY=1 on its NOTIFY_SOCKET (rejects if it exits first).
 * It is stopped (SIGTERM, then SIGKILL) in teardown.
 */
export interface DaemonOptions {
  /** More environment for the daemon (the crash tests' VFIO_HOOKD_CRASH_AFTER). */
  readonly env?: NodeJS.ProcessEnv;
  /** Built-in host name or JSON fixture path. Default 'reference-host'. */
  readonly fixture?: string;
  /** Text of the configuration file (written to `<dir>/vfio-hookd.toml`). Default: an empty file. */
  readonly config?: string;
  /** Reuse the folder (simulated host, state, config) of an earlier daemon: a restart. */
  readonly dir?: string;
  /** Run the bundle `dist/bin/vfio-hookd.js` (what is installed; `npm run build`) instead of the source through tsx (benchmarks). Default false. */
  readonly bundled?: boolean;
  /** Extra node options before the script (the unit's V8 limits, in the benchmarks). Default none. */
  readonly nodeOptions?: readonly string[];
  /**
   * Log as under systemd: stderr is a file whose device:inode is in
   * JOURNAL_STREAM, and the native journal protocol goes to this socket.
   */
  readonly journalSocket?: string;
  /** Set WATCHDOG_USEC (as systemd does with WatchdogSec=). Default: no watchdog. */
  readonly watchdogUsec?: number;
}

export async function startDaemon(t: ExecutionContext, bus: PrivateBus, options: DaemonOptions | string = {}): Promise<DaemonProcess> {
  const opts: DaemonOptions = typeof options === 'string' ? { fixture: options } : options;
  const fixture = opts.fixture ?? 'reference-host';
  const dir = opts.dir ?? (await tempDir(t, 'vfio-hookd-daemon-'));
  const simDir = path.join(dir, 'sim');
  const runRoot = path.join(dir, 'run');
  const configPath = path.join(dir, 'vfio-hookd.toml');
  if (opts.config !== undefined || opts.dir === undefined) await fs.writeFile(configPath, opts.config ?? '');
  const notifyPath = path.join(dir, `notify-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  const notify = await NotifyListener.open(t, notifyPath);
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env, NOTIFY_SOCKET: notify.path };
  delete env['WATCHDOG_USEC'];
  delete env['WATCHDOG_PID'];
  if (opts.watchdogUsec !== undefined) env['WATCHDOG_USEC'] = String(opts.watchdogUsec);
  delete env['JOURNAL_STREAM'];
  let stderrFile: string | null = null;
  let stderrFd: number | null = null;
  if (opts.journalSocket !== undefined) {
    stderrFile = path.join(dir, `stderr-${Date.now()}`);
    const handle = await fs.open(stderrFile, 'w');
    const st = await handle.stat({ bigint: true });
    stderrFd = handle.fd;
    t.teardown(() => handle.close());
    env['JOURNAL_STREAM'] = `${st.dev}:${st.ino}`;
  }
  delete env['DBUS_SYSTEM_BUS_ADDRESS'];
  const child = trackChild(
    t,
    spawn(
      process.execPath,
      [
        ...(opts.nodeOptions ?? []),
        ...(opts.bundled
          ? [path.join(REPO, 'dist', 'bin', 'vfio-hookd.js')]
          : ['--import', 'tsx', path.join(REPO, 'service', 'vfio-hookd.ts')]),
        '--simulate',
        fixture,
        '--sim-dir',
        simDir,
        '--bus-address',
        bus.address,
        '--run-root',
        runRoot,
        '--config',
        configPath,
        ...(opts.journalSocket !== undefined ? ['--journal-socket', opts.journalSocket] : []),
      ],
      { cwd: REPO, env, stdio: ['ignore', 'pipe', stderrFd ?? 'pipe'] },
    ),
    'vfio-hookd',
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdout!.resume();
  const exited = once(child, 'exit').then(([code, signal]) => (code as number | null) ?? (signal as string));
  t.teardown(() => stopChild(child));

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      notify.waitFor('READY=1'),
      exited.then((code) => {
        throw new Error(`vfio-hookd exited (${code}) before READY=1; stderr: ${stderr}`);
      }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`vfio-hookd sent no READY=1 in ${START_TIMEOUT_MS} ms; stderr: ${stderr}`)),
          START_TIMEOUT_MS,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  return { child, notify, dir, simDir, runRoot, configPath, stderr: () => stderr, exited };
}
