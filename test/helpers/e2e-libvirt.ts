/**
 * The e2e tier's ground: a real libvirtd, virtlogd, QEMU (KVM) and
 * libvirt-dbus, driven by `virsh`, calling the real hook, which calls the
 * real vfio-hookd on a simulated host. Nothing of this machine changes:
 *
 * - A private system-like `dbus-daemon` with a configuration of our own: no
 *   service directory at all (with the standard ones libvirtd sees
 *   org.freedesktop.machine1 as activatable and `virsh start` fails), policy
 *   for org.vfiohookd1 (the shipped file) and for org.libvirt.
 * - One "holder" process in new mount and network namespaces
 *   (`unshare -m -n --propagation private`) keeps them alive; every libvirt
 *   process and every `virsh` enters them with `nsenter`. Inside:
 *   /etc/libvirt holds a copy of the machine's *.conf files and nothing else
 *   (the hook in hooks/qemu.d, no cgroup controllers; no domains, networks or
 *   autostart links of the machine), /var/lib/libvirt,
 *   /var/log/libvirt and /var/cache/libvirt are temp folders, /run is a
 *   tmpfs, /dev/kvm is a node of our own made root:kvm 0660 (libvirt re-probes
 *   QEMU for ~12 s at every start otherwise; the machine's node is not
 *   touched), and /dev/shm is the simulated host's shm folder, so the files
 *   vfio-hookd makes are the very files QEMU opens.
 * - The network namespace keeps libvirt's network driver off the machine's
 *   interfaces; the domain has no <interface>, no disk and no <hostdev>.
 *
 * `stop()` undoes it all, whatever state it is in: domains destroyed, every
 * process ended (a QEMU left by a dead libvirtd too), temp folders removed.
 * All of it goes when the holder ends: the mounts exist only in its namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import dbus from 'dbus-next';
import { POLICY_FILE, REPO, startDaemon, type DaemonProcess, type PrivateBus } from './private-bus.js';

const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 5_000;

export const E2E_DOMAIN = 'vfiohookd-e2e';
export const E2E_UUID = '6a1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d';
export const LG_NAME = 'vfiohookd-e2e-lg';
export const SCREAM_NAME = 'vfiohookd-e2e-scream';
export const MiB = 2 ** 20;

/** A diskless KVM domain with Looking Glass (32M) and Scream (2M) ivshmem devices, no <hostdev>, no <interface>. */
export const E2E_DOMAIN_XML = `<domain type='kvm'>
  <name>${E2E_DOMAIN}</name>
  <uuid>${E2E_UUID}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
    <shmem name='${LG_NAME}'>
      <model type='ivshmem-plain'/>
      <size unit='M'>32</size>
    </shmem>
    <shmem name='${SCREAM_NAME}'>
      <model type='ivshmem-plain'/>
      <size unit='M'>2</size>
    </shmem>
  </devices>
</domain>
`;

/** The shm files' owner: nobody, so that neither root nor QEMU's user could have made them by accident. */
export const SHM_UID = 65534;

/** vfio-hookd's table for the domain: the simulated RX 590 by address, both shm files for QEMU's group. */
export const E2E_CONFIG = `
[vm.${E2E_DOMAIN}]
devices = ["0000:0b:00.0"]
user = "${SHM_UID}"

[vm.${E2E_DOMAIN}.looking-glass]
size = "32M"
group = "kvm"
name = "${LG_NAME}"

[vm.${E2E_DOMAIN}.scream]
size = "2M"
name = "${SCREAM_NAME}"
`;

export interface HookHandled {
  domain: string;
  operation: string;
  subOperation: string;
  success: boolean;
  message: string;
}

export interface DomainEvent {
  domain: string;
  event: number;
  detail: number;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Last-in first-out cleanups; each runs even if an earlier one failed. */
class Cleanup {
  readonly #steps: Array<() => unknown> = [];
  teardown(step: () => unknown): void {
    this.#steps.push(step);
  }
  async run(): Promise<string[]> {
    const errors: string[] = [];
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        await step();
      } catch (error) {
        errors.push((error as Error).message);
      }
    }
    return errors;
  }
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stdout?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return () => text;
}

async function waitUntil(what: string, ms: number, check: () => Promise<boolean>, detail: () => string = () => ''): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms. ${detail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function busConfigText(socketPath: string, policyDir: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- vfio-hookd e2e tier: system-like, no service activation at all (libvirtd must not
     see machine1 as activatable), org.libvirt owned by root (libvirt-dbus runs as root
     here so that it needs no polkit to reach libvirtd), vfio-hookd's shipped policy. -->
<busconfig>
  <type>system</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
  <policy user="root">
    <allow own="org.libvirt"/>
    <allow send_destination="org.libvirt"/>
  </policy>
  <includedir>${policyDir}</includedir>
</busconfig>
`;
}

/**
 * Shell run by the holder, inside its new namespaces: the mounts, then "ready",
 * then it watches the test process. Normally the harness ends it (SIGKILL) after
 * everything else. If the test process dies first (a killed or timed-out worker
 * whose teardown never ran), it ends every process in its network namespace
 * (libvirtd, virtlogd, libvirt-dbus, QEMU: they all share it, nothing else does),
 * then `others` (the bus and vfio-hookd), and removes the temp folder.
 */
function holderScript(top: string, shmDir: string, parent: number, others: number[]): string {
  return `set -eu
mount --make-rprivate /
mount --bind '${top}/etc' /etc/libvirt
mount --bind '${top}/lib' /var/lib/libvirt
mount --bind '${top}/log' /var/log/libvirt
mount --bind '${top}/cache' /var/cache/libvirt
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs '${top}/kvm'
mknod '${top}/kvm/kvm' c 10 232
chown root:kvm '${top}/kvm/kvm'
chmod 0660 '${top}/kvm/kvm'
mount --bind '${top}/kvm/kvm' /dev/kvm
mount --bind '${shmDir}' /dev/shm
echo ready
exec </dev/null >/dev/null 2>&1
while kill -0 ${parent}; do sleep 1; done
set +e
ours=$(readlink /proc/$$/ns/net)
for sig in TERM KILL; do
  for d in /proc/[0-9]*; do
    pid=\${d#/proc/}
    [ "$pid" = $$ ] && continue
    [ "$(readlink $d/ns/net 2>/dev/null)" = "$ours" ] && kill -$sig "$pid"
  done
  kill -$sig ${others.join(' ')}
  sleep 2
done
umount -l '${top}/kvm'
rm -rf '${top}'
`;
}

/** The probe hook: prints nothing, always succeeds, records `stat` of both shm files per hook. */
function probeScript(dir: string): string {
  return `#!/bin/sh
cat >/dev/null
for f in /dev/shm/${LG_NAME} /dev/shm/${SCREAM_NAME}; do
  stat -c '%n %u %g %a %s %i' "$f" 2>/dev/null || echo "$f missing"
done >'${dir}/'"$2-$3"
exit 0
`;
}

/** What the probe saw at a hook: per file, null when it was missing. */
export interface ShmProbe {
  path: string;
  uid: number;
  gid: number;
  mode: number;
  size: number;
  ino: number;
}

export class E2eLibvirt {
  readonly hooks: HookHandled[];
  readonly domainEvents: DomainEvent[] = [];
  readonly #cleanup: Cleanup;
  readonly top: string;
  readonly bus: PrivateBus;
  readonly daemon: DaemonProcess;
  readonly #holder: ChildProcess;
  readonly #logs: Map<string, () => string>;
  readonly client: dbus.MessageBus;
  #libvirtd: ChildProcess | null = null;
  readonly #env: NodeJS.ProcessEnv;

  private constructor(init: {
    cleanup: Cleanup;
    top: string;
    bus: PrivateBus;
    daemon: DaemonProcess;
    holder: ChildProcess;
    logs: Map<string, () => string>;
    client: dbus.MessageBus;
    hooks: HookHandled[];
  }) {
    this.hooks = init.hooks;
    this.#cleanup = init.cleanup;
    this.top = init.top;
    this.bus = init.bus;
    this.daemon = init.daemon;
    this.#holder = init.holder;
    this.#logs = init.logs;
    this.client = init.client;
    this.#env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', DBUS_SYSTEM_BUS_ADDRESS: init.bus.address };
  }

  /** Bring everything up; on any failure, what was started is stopped before the error is thrown. */
  static async start(): Promise<E2eLibvirt> {
    const cleanup = new Cleanup();
    try {
      return await E2eLibvirt.#start(cleanup);
    } catch (error) {
      const errors = await cleanup.run();
      if (errors.length > 0) (error as Error).message += ` (cleanup: ${errors.join('; ')})`;
      throw error;
    }
  }

  static async #start(cleanup: Cleanup): Promise<E2eLibvirt> {
    const logs = new Map<string, () => string>();
    const top = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-e2e-'));
    cleanup.teardown(() => fs.rm(top, { recursive: true, force: true }));
    await fs.chmod(top, 0o755);
    for (const d of ['bus', 'policy', 'lib', 'log', 'cache', 'kvm', 'daemon']) await fs.mkdir(path.join(top, d), { mode: 0o755 });

    // The bus.
    const socketPath = path.join(top, 'bus', 'socket');
    await fs.copyFile(POLICY_FILE, path.join(top, 'policy', path.basename(POLICY_FILE)));
    await fs.writeFile(path.join(top, 'bus', 'bus.conf'), busConfigText(socketPath, path.join(top, 'policy')));
    const busChild = spawn(
      'dbus-daemon',
      [`--config-file=${path.join(top, 'bus', 'bus.conf')}`, '--print-address', '--nofork', '--nopidfile'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    cleanup.teardown(() => stopChild(busChild));
    logs.set('dbus-daemon', collect(busChild));
    await waitUntil(
      'dbus-daemon prints its address',
      START_TIMEOUT_MS,
      async () => logs.get('dbus-daemon')!().includes('\n'),
      () => logs.get('dbus-daemon')!(),
    );
    const address = logs.get('dbus-daemon')!()
      .split('\n')
      .find((l) => l.startsWith('unix:'))!
      .trim();
    const bus: PrivateBus = { address, dir: path.join(top, 'bus'), stop: () => stopChild(busChild) };

    // vfio-hookd on the simulated reference host (outside the namespaces: it needs none).
    const daemon = await startDaemon(cleanup as unknown as ExecutionContext, bus, { config: E2E_CONFIG, dir: path.join(top, 'daemon') });
    const shmDir = path.join(daemon.simDir, 'dev', 'shm');

    // Our client: HookHandled from vfio-hookd.
    const client = dbus.sessionBus({ busAddress: address });
    cleanup.teardown(() => client.disconnect());
    const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
    const hooks: HookHandled[] = [];
    manager.on('HookHandled', (domain: string, operation: string, subOperation: string, success: boolean, message: string) =>
      hooks.push({ domain, operation, subOperation, success, message }),
    );

    // /etc/libvirt: only the machine's top-level *.conf files (never its domains, networks, pools or
    // autostart links: a developer's real VMs must not start here), our hook, no cgroups.
    const etc = path.join(top, 'etc');
    await fs.mkdir(path.join(etc, 'qemu'), { recursive: true });
    await fs.mkdir(path.join(etc, 'hooks', 'qemu.d'), { recursive: true });
    for (const entry of await fs.readdir('/etc/libvirt', { withFileTypes: true })) {
      if (entry.isFile() && entry.name.endsWith('.conf'))
        await fs.copyFile(path.join('/etc/libvirt', entry.name), path.join(etc, entry.name));
    }
    const hookText = (await fs.readFile(path.join(REPO, 'hooks', 'qemu'), 'utf8'))
      .replace(/^BUSCTL=.*$/m, 'BUSCTL=/usr/bin/busctl')
      .replace(/^BUS_ADDRESS=.*$/m, `BUS_ADDRESS='${address}'`)
      // The hook leaves the domain XML in the daemon's runtime folder.
      .replace(/^RUNTIME=.*$/m, `RUNTIME='${path.join(daemon.runRoot, 'vfio-hookd')}'`);
    await fs.writeFile(path.join(etc, 'hooks', 'qemu.d', 'vfio-hookd'), hookText, { mode: 0o755 });
    // A probe run by libvirtd right after ours (qemu.d runs in name order) and before QEMU exists:
    // what the shm files are at that moment, one file per hook, in the probe folder.
    await fs.mkdir(path.join(top, 'probe'), { mode: 0o755 });
    await fs.writeFile(path.join(etc, 'hooks', 'qemu.d', 'zz-e2e-probe'), probeScript(path.join(top, 'probe')), { mode: 0o755 });
    await fs.appendFile(path.join(etc, 'qemu.conf'), "\n# vfio-hookd e2e: leave the machine's cgroups alone\ncgroup_controllers = [ ]\n");

    // The holder of the namespaces.
    const holder = spawn(
      'unshare',
      ['-m', '-n', '--propagation', 'private', '/bin/sh', '-c', holderScript(top, shmDir, process.pid, [busChild.pid!, daemon.child.pid!])],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    logs.set('holder', collect(holder));
    const e2e = new E2eLibvirt({ cleanup, top, bus, daemon, holder, logs, client, hooks });
    // Ended last of the libvirt side: its namespaces (and their mounts) go with it.
    cleanup.teardown(() => stopChild(holder, 'SIGKILL'));
    await waitUntil(
      'the namespace holder is ready',
      START_TIMEOUT_MS,
      async () => logs.get('holder')!().includes('ready'),
      () => logs.get('holder')!(),
    );
    if (holder.exitCode !== null) throw new Error(`unshare failed: ${logs.get('holder')!()}`);
    // Any QEMU still running when libvirtd has gone (a harness failure) is ended by its pid file.
    cleanup.teardown(() => e2e.#killLeftoverQemu());

    const virtlogd = e2e.#spawnInside('virtlogd', ['virtlogd', '-p', '/run/virtlogd.pid'], e2e.#env);
    cleanup.teardown(() => stopChild(virtlogd));
    await waitUntil(
      'virtlogd listens',
      START_TIMEOUT_MS,
      () => e2e.#existsInside('/run/libvirt/virtlogd-sock'),
      () => e2e.log('virtlogd'),
    );

    cleanup.teardown(() => (e2e.#libvirtd ? stopChild(e2e.#libvirtd) : undefined));
    // Before libvirtd stops: no domain may outlive the test (their release hooks still reach vfio-hookd).
    cleanup.teardown(() => e2e.destroyAll());
    await e2e.#startLibvirtd();

    const libvirtDbus = e2e.#spawnInside('libvirt-dbus', ['/usr/sbin/libvirt-dbus', '--system'], e2e.#env);
    cleanup.teardown(() => stopChild(libvirtDbus));
    await waitUntil(
      'libvirt-dbus owns org.libvirt',
      START_TIMEOUT_MS,
      async () => {
        if (libvirtDbus.exitCode !== null) throw new Error(`libvirt-dbus exited ${libvirtDbus.exitCode}: ${e2e.log('libvirt-dbus')}`);
        const [owned] = (await client.call(
          new dbus.Message({
            destination: 'org.freedesktop.DBus',
            path: '/org/freedesktop/DBus',
            interface: 'org.freedesktop.DBus',
            member: 'NameHasOwner',
            signature: 's',
            body: ['org.libvirt'],
          }),
        ))!.body as [boolean];
        return owned;
      },
      () => e2e.log('libvirt-dbus'),
    );
    // Introspecting is a call: libvirt-dbus connects to libvirtd and registers for events only then.
    const connect = (await client.getProxyObject('org.libvirt', '/org/libvirt/QEMU')).getInterface('org.libvirt.Connect');
    connect.on('DomainEvent', (domain: string, event: number, detail: number) => e2e.domainEvents.push({ domain, event, detail }));
    await connect['ListDomains']!(0);
    return e2e;
  }

  async #startLibvirtd(): Promise<void> {
    const libvirtd = this.#spawnInside('libvirtd', ['libvirtd', '-p', '/run/libvirtd.pid'], this.#env);
    this.#libvirtd = libvirtd;
    await waitUntil(
      'libvirtd answers virsh',
      START_TIMEOUT_MS,
      async () => {
        if (libvirtd.exitCode !== null) throw new Error(`libvirtd exited ${libvirtd.exitCode}: ${this.log('libvirtd')}`);
        return (await this.virsh(['version'])).code === 0;
      },
      () => this.log('libvirtd'),
    );
  }

  /** Stop libvirtd (SIGTERM: running domains stay) and start it again; resolves when it answers. */
  async restartLibvirtd(): Promise<void> {
    if (this.#libvirtd) await stopChild(this.#libvirtd);
    await this.#startLibvirtd();
  }

  #spawnInside(name: string, argv: string[], env: NodeJS.ProcessEnv): ChildProcess {
    // nsenter execs the command itself: the child's pid is the daemon's.
    const child = spawn('nsenter', ['-t', String(this.#holder.pid), '-m', '-n', '--', ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#logs.set(name, collect(child));
    return child;
  }

  /** A path as the namespace sees it, through the holder's root. */
  inside(p: string): string {
    return path.join(`/proc/${this.#holder.pid}/root`, p);
  }

  async #existsInside(p: string): Promise<boolean> {
    return fs.access(this.inside(p)).then(
      () => true,
      () => false,
    );
  }

  /** What a process of the harness printed (stdout and stderr). */
  log(name: string): string {
    return this.#logs.get(name)?.() ?? '';
  }

  /** `virsh -c qemu:///system ARGS` inside the namespaces; never throws on a non-zero exit. */
  virsh(args: string[], stdin?: string): Promise<CommandResult> {
    return this.run('virsh', ['-q', '-c', 'qemu:///system', ...args], stdin);
  }

  /** A command inside the namespaces (where libvirtd's qemu:///system is); never throws on a non-zero exit. */
  async run(command: string, args: string[], stdin?: string): Promise<CommandResult> {
    const child = spawn('nsenter', ['-t', String(this.#holder.pid), '-m', '-n', '--', command, ...args], {
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.stdin.end(stdin ?? '');
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code: code ?? -1, stdout, stderr };
  }

  /** Define the e2e domain (the XML goes through a file inside the namespace's /run). */
  async define(xml: string = E2E_DOMAIN_XML): Promise<void> {
    await fs.writeFile(this.inside('/run/vfiohookd-e2e-domain.xml'), xml);
    const r = await this.virsh(['define', '/run/vfiohookd-e2e-domain.xml']);
    if (r.code !== 0) throw new Error(`virsh define failed: ${r.stderr}`);
  }

  /** The probe's record of the shm files at hook `operation-sub` (the last time it ran), keyed by /dev/shm path. */
  async probe(operation: string, subOperation: string): Promise<Map<string, ShmProbe | null>> {
    const text = await fs.readFile(path.join(this.top, 'probe', `${operation}-${subOperation}`), 'utf8');
    const result = new Map<string, ShmProbe | null>();
    for (const line of text.split('\n').filter(Boolean)) {
      const [p, uid, gid, mode, size, ino] = line.split(' ');
      result.set(
        p!,
        uid === 'missing'
          ? null
          : { path: p!, uid: Number(uid), gid: Number(gid), mode: parseInt(mode!, 8), size: Number(size), ino: Number(ino) },
      );
    }
    return result;
  }

  /** Forget what the probe saw. */
  async clearProbes(): Promise<void> {
    for (const f of await fs.readdir(path.join(this.top, 'probe'))) await fs.rm(path.join(this.top, 'probe', f), { force: true });
  }

  /** QEMU's pid for a running domain, from libvirt's pid file. */
  async qemuPid(domain: string = E2E_DOMAIN): Promise<number> {
    return Number((await fs.readFile(this.inside(`/run/libvirt/qemu/${domain}.pid`), 'utf8')).trim());
  }

  /** Resolves when the hook `operation sub` for `domain` has been handled, at or after index `from`. */
  async waitForHook(operation: string, subOperation: string, from = 0, domain: string = E2E_DOMAIN, ms = 20_000): Promise<HookHandled> {
    let found: HookHandled | undefined;
    await waitUntil(
      `hook '${operation} ${subOperation}' handled`,
      ms,
      async () => {
        found = this.hooks.slice(from).find((h) => h.domain === domain && h.operation === operation && h.subOperation === subOperation);
        return found !== undefined;
      },
      () => JSON.stringify(this.hooks),
    );
    return found!;
  }

  async waitForDomainEvent(event: number, from = 0, ms = 20_000): Promise<DomainEvent> {
    let found: DomainEvent | undefined;
    await waitUntil(
      `DomainEvent ${event}`,
      ms,
      async () => {
        found = this.domainEvents.slice(from).find((e) => e.event === event);
        return found !== undefined;
      },
      () => JSON.stringify(this.domainEvents),
    );
    return found!;
  }

  /** Destroy every running domain (each destroy runs the stopped and release hooks). */
  async destroyAll(): Promise<void> {
    const r = await this.virsh(['list', '--name']);
    for (const name of r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean))
      await this.virsh(['destroy', name]);
  }

  async #killLeftoverQemu(): Promise<void> {
    const dir = this.inside('/run/libvirt/qemu');
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    for (const n of names.filter((x) => x.endsWith('.pid'))) {
      const pid = Number((await fs.readFile(path.join(dir, n), 'utf8').catch(() => '')).trim());
      if (!Number.isInteger(pid) || pid <= 1) continue;
      const comm = await fs.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.startsWith('qemu-system')) process.kill(pid, 'SIGKILL');
    }
  }

  /** Stop everything, last-started first; resolves with the cleanup errors (none is expected). */
  stop(): Promise<string[]> {
    return this.#cleanup.run();
  }
}
