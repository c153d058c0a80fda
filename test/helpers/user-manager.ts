/**
 * A real systemd user manager for the e2e tier, without systemd as PID 1:
 *
 * - the test user `vfiohookd-test` (created with `useradd -r -M` when missing,
 *   as the bus tier does, and left in place); its HOME and XDG_RUNTIME_DIR are
 *   folders of the test's own, owned by it;
 * - a delegated cgroup of our own in both hierarchies of this machine's hybrid
 *   layout (`/sys/fs/cgroup/systemd/<dir>` and `/sys/fs/cgroup/unified/<dir>`),
 *   owned by the user, removed in teardown after every process in it is gone;
 * - a private mount namespace (`unshare -m`) with a tmpfs on `/run/systemd`
 *   holding `/run/systemd/system` (the "booted with systemd" marker), so the
 *   machine's own `/run/systemd` is never touched;
 * - `/lib/systemd/systemd --user` as the user, moved into the cgroup before it
 *   starts, ready when it sends READY=1 on a NOTIFY_SOCKET of ours;
 * - its session bus from its own `dbus.socket`/`dbus.service` (written into the
 *   unit folder, so the test does not depend on the dbus-user-session package):
 *   a `dbus-daemon` with a config of ours (no activatable services; root may
 *   connect too, so the test can follow signals), at `$XDG_RUNTIME_DIR/bus`.
 *   The manager joins its API bus only when these two units run, as it does on
 *   a real login.
 *
 * Unit files go to `$HOME/.config/systemd/user`. Teardown: SIGTERM (the
 * manager stops every unit and exits), SIGKILL of whatever is left in the
 * cgroup after a grace period, then the cgroup folders.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import { NotifyListener, tempDir } from './private-bus.js';
import { trackChild } from './settled.js';

const exec = promisify(execFile);

export const TEST_USER = 'vfiohookd-test';
const SYSTEMD = '/lib/systemd/systemd';
const CGROUP_ROOTS = ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified'];
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

export interface TestUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** The test user, created (system user, no home) when missing. */
export async function ensureTestUser(): Promise<TestUser> {
  const lookup = async (): Promise<TestUser | null> => {
    try {
      const uid = Number((await exec('id', ['-u', TEST_USER])).stdout.trim());
      const gid = Number((await exec('id', ['-g', TEST_USER])).stdout.trim());
      return { name: TEST_USER, uid, gid };
    } catch {
      return null;
    }
  };
  let found = await lookup();
  if (found === null) {
    // Another tier may create it at the same moment: "already exists" is fine.
    await exec('useradd', ['-r', '-M', '-s', '/usr/sbin/nologin', TEST_USER]).catch(() => undefined);
    found = await lookup();
  }
  if (found === null) throw new Error(`cannot create the test user ${TEST_USER}`);
  return found;
}

export interface UserManager {
  readonly user: TestUser;
  readonly pid: number;
  readonly dir: string;
  readonly home: string;
  readonly runtimeDir: string;
  readonly unitDir: string;
  /** The session bus address (`unix:path=$XDG_RUNTIME_DIR/bus`). */
  readonly sessionBusAddress: string;
  /** The environment a program of this user's session has. */
  readonly env: NodeJS.ProcessEnv;
  /** Run a program as the user in its session environment; resolves with its output (rejects on a non-zero exit). */
  run(file: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** `systemctl --user ARGS` as the user; resolves with stdout and the exit code, never rejects. */
  systemctl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Write a unit file (or a drop-in: `name.service.d/x.conf`) and `daemon-reload`. */
  writeUnits(files: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

function sessionBusConfig(user: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- The test user's session bus: session.conf's policy, no service directories. -->
<busconfig>
  <type>session</type>
  <!-- Overridden by the address option in dbus.service (the socket from dbus.socket); one is required here. -->
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="${user}"/>
    <allow user="root"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`;
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fs.chown(dir, uid, gid);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await chownTree(p, uid, gid);
    else await fs.chown(p, uid, gid);
  }
}

/** Remove a cgroup folder and its children, deepest first (cgroup folders are removed with rmdir only). */
async function removeCgroup(dir: string): Promise<void> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) if (entry.isDirectory()) await removeCgroup(path.join(dir, entry.name));
  await fs.rmdir(dir).catch(() => undefined);
}

/** Every pid in a cgroup tree. */
async function cgroupPids(dir: string): Promise<number[]> {
  const pids: number[] = [];
  try {
    const text = await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8');
    pids.push(...text.split('\n').filter(Boolean).map(Number));
    for (const entry of await fs.readdir(dir, { withFileTypes: true }))
      if (entry.isDirectory()) pids.push(...(await cgroupPids(path.join(dir, entry.name))));
  } catch {
    // gone already
  }
  return pids;
}

export async function startUserManager(t: ExecutionContext, units: Record<string, string> = {}): Promise<UserManager> {
  const user = await ensureTestUser();
  const dir = await tempDir(t, 'vfio-hookd-user-', 0o755);
  const home = path.join(dir, 'home');
  const runtimeDir = path.join(dir, 'runtime');
  const unitDir = path.join(home, '.config', 'systemd', 'user');
  await fs.mkdir(unitDir, { recursive: true });
  await fs.mkdir(runtimeDir, { mode: 0o700 });
  await fs.chmod(home, 0o700);
  const busConfPath = path.join(dir, 'session-bus.conf');
  await fs.writeFile(busConfPath, sessionBusConfig(user.name));
  const files: Record<string, string> = {
    'dbus.socket': `[Unit]\nDescription=Test session bus socket\n\n[Socket]\nListenStream=%t/bus\n`,
    'dbus.service': `[Unit]\nDescription=Test session bus\nRequires=dbus.socket\n\n[Service]\nType=notify\nNotifyAccess=main\nExecStart=/usr/bin/dbus-daemon --config-file=${busConfPath} --address=systemd: --nofork --nopidfile --systemd-activation\nStandardOutput=append:%h/session-bus.log\nStandardError=append:%h/session-bus.log\n`,
    ...units,
  };
  for (const [name, text] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(unitDir, name)), { recursive: true });
    await fs.writeFile(path.join(unitDir, name), text);
  }
  await chownTree(home, user.uid, user.gid);
  await fs.chown(runtimeDir, user.uid, user.gid);

  // The delegated cgroup, in both hierarchies; removed last-first in teardown, after the processes.
  const cgroupName = `vfio-hookd-test-${process.pid}-${Math.random().toString(16).slice(2, 10)}`;
  const cgroups = CGROUP_ROOTS.map((root) => path.join(root, cgroupName));
  t.teardown(async () => {
    for (const cg of cgroups) await removeCgroup(cg);
  });
  for (const cg of cgroups) {
    await fs.mkdir(cg);
    await chownTree(cg, user.uid, user.gid);
  }

  const notify = await NotifyListener.open(t, path.join(dir, 'notify'));
  await fs.chmod(notify.path, 0o666);

  const sessionBusAddress = `unix:path=${runtimeDir}/bus`;
  const env: NodeJS.ProcessEnv = {
    HOME: home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: '/bin/sh',
    PATH: '/usr/local/bin:/usr/bin:/bin',
    XDG_RUNTIME_DIR: runtimeDir,
    XDG_CONFIG_HOME: path.join(home, '.config'),
    DBUS_SESSION_BUS_ADDRESS: sessionBusAddress,
  };
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = [
    'set -e',
    'mount -t tmpfs -o mode=0755 tmpfs /run/systemd',
    'mkdir /run/systemd/system',
    ...cgroups.map((cg) => `echo $$ > ${q(path.join(cg, 'cgroup.procs'))}`),
    `exec setpriv --reuid=${user.uid} --regid=${user.gid} --init-groups ${SYSTEMD} --user`,
  ].join('\n');
  const child = trackChild(
    t,
    spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      env: { ...env, NOTIFY_SOCKET: notify.path, SYSTEMD_LOG_TARGET: 'console', SYSTEMD_LOG_LEVEL: 'notice' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    'systemd --user',
  );
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = once(child, 'exit');

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    // Anything the manager left behind (it should leave nothing).
    for (const cg of cgroups)
      for (const pid of await cgroupPids(cg)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    // Polled, bounded: SIGKILLed processes leave the cgroup a moment later.
    for (let i = 0; i < 50 && (await Promise.all(cgroups.map(cgroupPids))).flat().length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
  };
  t.teardown(stop);

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      notify.waitFor('READY=1'),
      exited.then(([code, signal]) => {
        throw new Error(`systemd --user exited (${code ?? signal}) before READY=1: ${output}`);
      }),
      new Promise(
        (_, reject) =>
          (timer = setTimeout(
            () => reject(new Error(`systemd --user sent no READY=1 in ${START_TIMEOUT_MS} ms: ${output}`)),
            START_TIMEOUT_MS,
          )),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }

  const asUser = ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups'];
  const run = async (file: string, args: string[]): Promise<{ stdout: string; stderr: string }> =>
    exec('setpriv', [...asUser, file, ...args], { env, cwd: home });
  const systemctl = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const r = await run('systemctl', ['--user', '--no-pager', ...args]);
      return { code: 0, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: (e.stdout ?? '').trim(), stderr: (e.stderr ?? '').trim() };
    }
  };

  // Bring the session bus up, then wait until the manager is on it (it joins once dbus.service runs).
  const started = await systemctl('start', 'dbus.service');
  if (started.code !== 0)
    throw new Error(
      `cannot start the session bus: ${started.stderr} ${output} ${await fs.readFile(path.join(home, 'session-bus.log'), 'utf8').catch(() => '')}`,
    );
  // Polled, bounded: nothing outside the user's session bus tells when the manager has joined it.
  for (let i = 0; ; i++) {
    try {
      await run('busctl', ['--user', 'status', 'org.freedesktop.systemd1']);
      break;
    } catch (error) {
      if (i >= 100) throw new Error(`systemd --user did not join its session bus: ${(error as Error).message} ${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const writeUnits = async (more: Record<string, string>): Promise<void> => {
    for (const [name, text] of Object.entries(more)) {
      const file = path.join(unitDir, name);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await fs.writeFile(file, text);
      await chownTree(home, user.uid, user.gid);
    }
    await systemctl('daemon-reload');
  };

  return { user, pid: child.pid!, dir, home, runtimeDir, unitDir, sessionBusAddress, env, run, systemctl, writeUnits, stop };
}
