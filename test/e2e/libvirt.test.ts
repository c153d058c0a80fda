/**
 * e2e: a real libvirtd + QEMU (KVM) + libvirt-dbus, driven by `virsh`, calling
 * the real hook, which calls the real vfio-hookd on a simulated reference host.
 * One stack for the file (libvirtd probes QEMU for ~10 s when its cache is new),
 * tests one after the other, the domain shut off between them.
 * See test/helpers/e2e-libvirt.ts for what is isolated and how.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { addSimProcess, removeSimProcess } from '../../lib/sim/index.js';
import { rootsUnder } from '../../lib/roots.js';
import { E2E_DOMAIN, E2eLibvirt, LG_NAME, MiB, SCREAM_NAME, SHM_UID } from '../helpers/e2e-libvirt.js';
import { REPO, startDaemon } from '../helpers/private-bus.js';
import { machinePath } from '../../lib/bus/object-path.js';

let e2e: E2eLibvirt;
let startedAt = 0;

test.before(async (t) => {
  startedAt = Date.now();
  e2e = await E2eLibvirt.start();
  await e2e.define();
  t.log(`stack up in ${Date.now() - startedAt} ms`);
});

test.after.always(async (t) => {
  if (e2e === undefined) return;
  const errors = await e2e.stop();
  t.log(`tier ran ${Date.now() - startedAt} ms in all`);
  if (errors.length > 0) t.log(`cleanup errors: ${errors.join('; ')}`);
});

test.afterEach.always(async () => {
  await e2e.destroyAll();
});

async function kvmGid(): Promise<number> {
  const line = (await fs.readFile('/etc/group', 'utf8')).split('\n').find((l) => l.startsWith('kvm:'));
  if (line === undefined) throw new Error('no kvm group');
  return Number(line.split(':')[2]);
}

async function driverOf(address: string): Promise<string | null> {
  const link = await fs.readlink(path.join(e2e.daemon.simDir, 'sys/bus/pci/devices', address, 'driver')).catch(() => null);
  return link === null ? null : path.basename(link);
}

async function start(): Promise<void> {
  const r = await e2e.virsh(['start', E2E_DOMAIN]);
  if (r.code !== 0) throw new Error(`virsh start failed: ${r.stderr}\nlibvirtd: ${e2e.log('libvirtd').slice(-2000)}`);
}

async function destroy(from: number): Promise<void> {
  const r = await e2e.virsh(['destroy', E2E_DOMAIN]);
  if (r.code !== 0) throw new Error(`virsh destroy failed: ${r.stderr}`);
  await e2e.waitForHook('release', 'end', from);
}

test.serial('virsh start and destroy reach vfio-hookd as prepare, start, started, then stopped, release', async (t) => {
  const from = e2e.hooks.length;
  const t0 = Date.now();
  await start();
  const t1 = Date.now();
  await destroy(from);
  t.log(`virsh start ${t1 - t0} ms (hooks included), destroy to release end ${Date.now() - t1} ms`);
  const seen = e2e.hooks
    .slice(from)
    .filter((h) => h.domain === E2E_DOMAIN)
    .map((h) => `${h.operation} ${h.subOperation} ${h.success ? 'ok' : 'failed'}`);
  t.deepEqual(seen, ['prepare begin ok', 'start begin ok', 'started begin ok', 'stopped end ok', 'release end ok']);
});

test.serial(
  'the shm files exist with owner, group, mode and size from the configuration before QEMU runs, and QEMU maps those very files',
  async (t) => {
    await e2e.clearProbes();
    const gid = await kvmGid();
    const from = e2e.hooks.length;
    await start();
    // Seen by a second hook that libvirtd runs right after ours, before it spawns QEMU.
    const before = await e2e.probe('prepare', 'begin');
    const expected = { uid: SHM_UID, gid, mode: 0o660 };
    const lg = before.get(`/dev/shm/${LG_NAME}`);
    const scream = before.get(`/dev/shm/${SCREAM_NAME}`);
    t.like(lg, { ...expected, size: 32 * MiB });
    t.like(scream, { ...expected, size: 2 * MiB });

    // QEMU (as libvirt-qemu:kvm) has mapped the same inodes; it created nothing of its own (that would be libvirt-qemu, 0644).
    const maps = await fs.readFile(`/proc/${await e2e.qemuPid()}/maps`, 'utf8');
    const mapped = (name: string): number[] => [
      ...new Set(
        maps
          .split('\n')
          .filter((l) => l.endsWith(`/dev/shm/${name}`))
          .map((l) => Number(l.trim().split(/\s+/)[4])),
      ),
    ];
    t.deepEqual(mapped(LG_NAME), [lg!.ino]);
    t.deepEqual(mapped(SCREAM_NAME), [scream!.ino]);
    for (const [name, size] of [
      [LG_NAME, 32 * MiB],
      [SCREAM_NAME, 2 * MiB],
    ] as const) {
      const st = await fs.stat(path.join(e2e.daemon.simDir, 'dev', 'shm', name));
      t.like(
        { uid: st.uid, gid: st.gid, mode: st.mode & 0o777, size: st.size, ino: st.ino },
        { ...expected, size, ino: before.get(`/dev/shm/${name}`)!.ino },
        name,
      );
    }
    const prepare = await e2e.waitForHook('prepare', 'begin', from);
    t.regex(prepare.message, /2 shm file\(s\) ready/);
    await destroy(from);
  },
);

test.serial(
  'while the VM runs the simulated RX 590 and its audio are on vfio-pci; after destroy they are back on amdgpu and snd_hda_intel',
  async (t) => {
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
    const from = e2e.hooks.length;
    await start();
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['vfio-pci', 'vfio-pci']);
    t.is(await driverOf('0000:0a:00.0'), 'amdgpu', 'the host GPU never moves');
    t.is((await e2e.virsh(['domstate', E2E_DOMAIN])).stdout.trim(), 'running');
    await destroy(from);
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
  },
);

test.serial('a refused prepare blocks the start, virsh prints our sentence, and libvirt then runs stopped and release', async (t) => {
  const host = { roots: rootsUnder(e2e.daemon.simDir) };
  await addSimProcess(host, { pid: 4242, comm: 'looking-glass', fds: ['/dev/dri/card1'] });
  t.teardown(() => removeSimProcess(host, 4242));
  const from = e2e.hooks.length;
  const r = await e2e.virsh(['start', E2E_DOMAIN]);
  t.not(r.code, 0);
  // libvirt's words around the hook's one stderr line.
  t.regex(r.stderr, /^error: Failed to start domain 'vfiohookd-e2e'\n/);
  t.regex(
    r.stderr,
    /Hook script execution failed: .*\/etc\/libvirt\/hooks\/qemu\.d\/vfio-hookd vfiohookd-e2e prepare begin -\) unexpected exit status 1: /s,
  );
  t.regex(
    r.stderr.replace(/\s+/g, ' '),
    /exit status 1: vfio-hookd: Cannot detach '0000:0b:00\.0': '0000:0b:00\.0' is held by 'looking-glass' \(pid 4242\) through '\/dev\/dri\/card1'; close it, refusing/,
  );
  t.log(r.stderr.trim());
  await e2e.waitForHook('release', 'end', from);
  const seen = e2e.hooks
    .slice(from)
    .filter((h) => h.domain === E2E_DOMAIN)
    .map((h) => `${h.operation} ${h.subOperation} ${h.success ? 'ok' : 'failed'}`);
  t.deepEqual(seen, ['prepare begin failed', 'stopped end ok', 'release end ok']);
  t.is((await e2e.virsh(['domstate', E2E_DOMAIN])).stdout.trim(), 'shut off');
  t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
});

test.serial('libvirt-dbus signals DomainEvent started at start and stopped at destroy, for our domain', async (t) => {
  const connect = (await e2e.client.getProxyObject('org.libvirt', '/org/libvirt/QEMU')).getInterface('org.libvirt.Connect');
  const domainPath = (await connect['DomainLookupByName']!(E2E_DOMAIN)) as string;
  const from = e2e.domainEvents.length;
  const hooksFrom = e2e.hooks.length;
  await start();
  const started = await e2e.waitForDomainEvent(2, from);
  t.is(started.domain, domainPath);
  const afterStart = e2e.domainEvents.length;
  await destroy(hooksFrom);
  const stopped = await e2e.waitForDomainEvent(5, afterStart);
  t.is(stopped.domain, domainPath);
  const events = e2e.domainEvents.slice(from).filter((e) => e.domain === domainPath);
  t.log(JSON.stringify(events.map((e) => [e.event, e.detail])));
  // RESUMED (4) comes with a start, before STARTED (2, detail BOOTED 0); a destroy may give SHUTDOWN (6)
  // from QEMU's own event before STOPPED (5, detail DESTROYED 1), which ends it.
  t.deepEqual(
    events.slice(0, 2).map((e) => e.event),
    [4, 2],
  );
  t.is(started.detail, 0);
  t.deepEqual(
    events.slice(2, -1).filter((e) => e.event !== 6),
    [],
  );
  t.deepEqual([events.at(-1)!.event, events.at(-1)!.detail], [5, 1]);
});

test.serial(
  'a libvirtd restart with the VM running reaches vfio-hookd as reconnect begin and changes nothing; libvirt-dbus signals again once called',
  async (t) => {
    const from = e2e.hooks.length;
    await start();
    await e2e.waitForHook('started', 'begin', from);
    const qemu = await e2e.qemuPid();
    const reconnectFrom = e2e.hooks.length;
    const t0 = Date.now();
    await e2e.restartLibvirtd();
    t.log(`libvirtd restarted in ${Date.now() - t0} ms`);
    const reconnect = await e2e.waitForHook('reconnect', 'begin', reconnectFrom);
    t.true(reconnect.success);
    t.deepEqual(
      e2e.hooks
        .slice(reconnectFrom)
        .filter((h) => h.domain === E2E_DOMAIN)
        .map((h) => `${h.operation} ${h.subOperation}`),
      ['reconnect begin'],
    );
    t.is(await e2e.qemuPid(), qemu, 'the same QEMU runs on');
    t.is((await e2e.virsh(['domstate', E2E_DOMAIN])).stdout.trim(), 'running');
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['vfio-pci', 'vfio-pci']);

    // libvirt-dbus lost its libvirtd connection; a call makes it connect and register for events again.
    const connect = (await e2e.client.getProxyObject('org.libvirt', '/org/libvirt/QEMU')).getInterface('org.libvirt.Connect');
    const domainPath = (await connect['DomainLookupByName']!(E2E_DOMAIN)) as string;
    const eventsFrom = e2e.domainEvents.length;
    await destroy(from);
    t.is((await e2e.waitForDomainEvent(5, eventsFrom)).domain, domainPath);
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
  },
);

test.serial(
  'a VM that stops while vfio-hookd is down is released from its record when vfio-hookd starts again and libvirt-dbus says it is off',
  async (t) => {
    const from = e2e.hooks.length;
    await start();
    await e2e.waitForHook('started', 'begin', from);
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['vfio-pci', 'vfio-pci']);
    // The daemon goes away (an upgrade, a crash, systemctl stop) and the VM stops meanwhile.
    e2e.daemon.child.kill('SIGTERM');
    t.is(await e2e.daemon.exited, 0);
    const destroyed = await e2e.virsh(['destroy', E2E_DOMAIN]);
    t.is(destroyed.code, 0, destroyed.stderr);
    t.is((await e2e.virsh(['domstate', E2E_DOMAIN])).stdout.trim(), 'shut off');
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['vfio-pci', 'vfio-pci'], 'nobody gave them back yet');

    const daemon = await startDaemon(t, e2e.bus, { dir: path.dirname(e2e.daemon.simDir) });
    const stateFile = path.join(daemon.runRoot, 'vfio-hookd', 'state.json');
    const readState = async (): Promise<{ claims: object; machines: object } | null> =>
      JSON.parse(await fs.readFile(stateFile, 'utf8').catch(() => 'null')) as { claims: object; machines: object } | null;
    // The daemon asks libvirt-dbus once no hook runs: wait (bounded) for the whole
    // release it then makes. The functions come back one after the other and the
    // record is written last, so waiting for the first function alone (as this test
    // once did) read the audio function while it was still on its way back.
    const released = async (): Promise<boolean> => {
      const state = await readState();
      return state !== null && Object.keys(state.claims).length === 0 && Object.keys(state.machines).length === 0;
    };
    const deadline = Date.now() + 30_000;
    while (!(await released()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
    const journaled = daemon
      .stderr()
      .split('\n')
      .filter((l) => l.includes('held devices but libvirt reports it not running'));
    t.is(journaled.length, 1, daemon.stderr());
    const state = await readState();
    t.deepEqual(state?.claims, {});
    t.deepEqual(state?.machines, {});
  },
);

test.serial(
  'a managed VM started without its hook (installed, but libvirtd not restarted) is reported loudly through libvirt-dbus',
  async (t) => {
    // The field's most common complaint: libvirtd runs without our hook (it looks
    // for hooks only when it starts) while vfio-hookd has just been started.
    const hook = path.join(e2e.top, 'etc', 'hooks', 'qemu.d', 'vfio-hookd');
    const away = path.join(e2e.top, 'etc', 'hooks', 'vfio-hookd.away');
    await fs.rename(hook, away);
    t.teardown(async () => {
      await fs.rename(away, hook).catch(() => undefined);
      await e2e.restartLibvirtd();
    });
    await e2e.restartLibvirtd();
    e2e.daemon.child.kill('SIGTERM');
    t.is(await e2e.daemon.exited, 0);
    const daemon = await startDaemon(t, e2e.bus, { dir: path.dirname(e2e.daemon.simDir) });
    // Our own client's libvirt-dbus events need a call after the libvirtd restart too.
    const connect = (await e2e.client.getProxyObject('org.libvirt', '/org/libvirt/QEMU')).getInterface('org.libvirt.Connect');
    await connect['ListDomains']!(0);

    const from = e2e.hooks.length;
    const eventsFrom = e2e.domainEvents.length;
    await start();
    await e2e.waitForDomainEvent(2, eventsFrom);

    const machine = (await e2e.client.getProxyObject('org.vfiohookd1', machinePath(E2E_DOMAIN))).getInterface(
      'org.freedesktop.DBus.Properties',
    );
    const get = async (name: string): Promise<unknown> =>
      (await (machine['Get'] as (i: string, p: string) => Promise<{ value: unknown }>)('org.vfiohookd1.Machine', name)).value;
    // The daemon asks libvirt-dbus for the domain's name once no hook runs: wait (bounded) for its verdict.
    const deadline = Date.now() + 20_000;
    while ((await get('State')) !== 'failed' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    t.is(await get('State'), 'failed');
    t.regex(
      String(await get('LastMessage')),
      /^VM 'vfiohookd-e2e' started, but its prepare hook never reached vfio-hookd: .*restart libvirtd once/,
    );
    t.regex(daemon.stderr(), /<3>VM 'vfiohookd-e2e' started, but its prepare hook never reached vfio-hookd/);
    t.deepEqual(
      e2e.hooks.slice(from).filter((h) => h.domain === E2E_DOMAIN),
      [],
      'no hook reached the daemon',
    );
    t.deepEqual([await driverOf('0000:0b:00.0'), await driverOf('0000:0b:00.1')], ['amdgpu', 'snd_hda_intel']);
    t.is((await e2e.virsh(['destroy', E2E_DOMAIN])).code, 0);
  },
);

test.serial('doctor and config suggest read the domain from the real libvirtd (virsh --connect qemu:///system)', async (t) => {
  const hookctl = (...args: string[]) =>
    // nsenter -m starts in the namespace's own working folder: cd to the repository first, so that --import tsx resolves.
    e2e.run('sh', [
      '-c',
      'cd "$0" && exec "$@"',
      REPO,
      process.execPath,
      '--import',
      'tsx',
      path.join(REPO, 'service', 'vfio-hookctl.ts'),
      ...args,
    ]);
  const common = [
    '--simulate',
    'reference-host',
    '--sim-dir',
    e2e.daemon.simDir,
    '--bus-address',
    e2e.bus.address,
    '--config',
    e2e.daemon.configPath,
  ];
  const r = await hookctl('doctor', E2E_DOMAIN, ...common, '--connect', 'qemu:///system', '--json');
  t.not(r.stdout, '', r.stderr);
  const report = JSON.parse(r.stdout) as { checks: { id: string; status: string; finding: string }[] };
  const check = (id: string) => report.checks.find((c) => c.id === `vm.${E2E_DOMAIN}.${id}`);
  t.like(check('domain'), { status: 'ok', finding: 'defined (read from libvirt (qemu:///system))' }, r.stdout + r.stderr);
  t.like(check('shmem'), { status: 'ok' }, 'the 32M and 2M <shmem>s agree with the configuration');
  // The configuration detaches the simulated RX 590 for it, but its XML passes no <hostdev> through.
  t.like(check('functions'), { status: 'warn' });
  t.regex(check('functions')!.finding, /^0000:0b:00\.0, 0000:0b:00\.1 are detached for it but not in its XML/);
  // Whether a daemon runs at this point depends on the tests before it (they stop and restart it); the bus tier checks doctor's daemon check.

  const missing = await hookctl('doctor', 'no-such-vm', ...common, '--connect', 'qemu:///system', '--json');
  t.is(missing.code, 1);

  const s = await hookctl('config', 'suggest', E2E_DOMAIN, '--connect', 'qemu:///system', '--json');
  t.is(s.code, 0, s.stderr);
  const suggestion = JSON.parse(s.stdout) as { table: string; from: string };
  t.is(suggestion.from, 'libvirt (qemu:///system)');
  t.regex(suggestion.table, /\[vm\.vfiohookd-e2e\.looking-glass\]\nname = "vfiohookd-e2e-lg"\nsize = "32M"/);
  const gone = await hookctl('config', 'suggest', 'no-such-vm', '--connect', 'qemu:///system');
  t.is(gone.code, 1);
  t.regex(gone.stderr, /libvirt has no domain named 'no-such-vm'/);
});
