/**
 * The hook's contract with the daemon, through the real hooks/qemu run as
 * libvirt runs it: a refusal is never taken for an unreachable daemon (nor
 * the other way round) whatever the VM's name or the refusal's text; a
 * domain XML of any size reaches the daemon; the hook leaves no file behind.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import dbus from 'dbus-next';
import { startDaemon, startPrivateBus, tempDir, type DaemonProcess, type PrivateBus } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, leftovers, runHook, type HookRun, type InstalledHook } from '../helpers/hook.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import { HOSTILE_NAMES, escapeXml, managedConfig } from '../helpers/hook-fuzz.js';
import { callManager, run as exec } from '../helpers/command.js';
import { q } from '../../lib/errors.js';
import { DOMAIN_XML_MAX_BYTES } from '../../lib/domain/index.js';
import { ManagerInterface, type ManagerBackend } from '../../lib/bus/manager-interface.js';
import { InvalidArgs } from '../../lib/errors.js';

const MiB = 2 ** 20;

/** win10.xml (two PCI hostdevs, a 32M and a 2M shmem) for a VM named `name`. */
function win10Xml(name: string): string {
  return WIN10_XML.replace('<name>win10</name>', `<name>${escapeXml(name)}</name>`);
}

/** A domain with neither <hostdev> nor <shmem>. */
function plainXml(name: string): string {
  return `<domain type='kvm'><name>${escapeXml(name)}</name><memory>1048576</memory><devices><disk type='file'/></devices></domain>`;
}

/**
 * Every hostile name managed, with a Looking Glass size the XML contradicts:
 * their prepare is refused before anything happens (merge.ts), so one daemon
 * can refuse them all.
 */
const HOSTILE_CONFIG = managedConfig(HOSTILE_NAMES);

function lines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l !== '');
}

/** The hook refused with the daemon's own sentence: exit 1, nothing on stdout, one stderr line starting `vfio-hookd: `. */
function assertRefused(t: ExecutionContext, r: HookRun, start: string, what: string): void {
  t.is(r.code, 1, `${what}: ${r.stderr}`);
  t.is(r.stdout, '', what);
  t.is(lines(r.stderr).length, 1, `${what}: ${r.stderr}`);
  t.true(r.stderr.startsWith(start), `${what}: ${JSON.stringify(r.stderr)} should start ${JSON.stringify(start)}`);
  t.false(r.stderr.includes('no answer from vfio-hookd'), what);
}

async function daemonUp(t: ExecutionContext, config: string): Promise<{ bus: PrivateBus; daemon: DaemonProcess; hook: InstalledHook }> {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config });
  return { bus, daemon, hook: await installHook(t, bus.address, daemonRuntime(daemon)) };
}

async function driverOf(daemon: DaemonProcess, address: string): Promise<string | null> {
  const link = await fs.readlink(path.join(daemon.simDir, 'sys/bus/pci/devices', address, 'driver')).catch(() => null);
  return link === null ? null : path.basename(link);
}

async function rx590(daemon: DaemonProcess): Promise<[string | null, string | null]> {
  return [await driverOf(daemon, '0000:0b:00.0'), await driverOf(daemon, '0000:0b:00.1')];
}

test.serial("a managed VM with a hostile name is refused with the daemon's sentence, never let through", async (t) => {
  const { daemon, hook } = await daemonUp(t, HOSTILE_CONFIG);
  for (const name of HOSTILE_NAMES) {
    const r = await runHook(hook, [name, 'prepare', 'begin', '-'], win10Xml(name));
    assertRefused(
      t,
      r,
      `vfio-hookd: VM ${q(name)}: <shmem name='looking-glass'> is 32M in the domain XML but 64M in the configuration`,
      name,
    );
  }
  t.deepEqual(await rx590(daemon), ['amdgpu', 'snd_hda_intel'], 'nothing moved');
  t.is(await fs.lstat(path.join(daemon.simDir, 'dev/shm/looking-glass')).catch(() => null), null, 'no shm file made');
  t.deepEqual(await leftovers(hook), []);
});

test.serial('a VM with a hostile name that the daemon does not manage starts, with at most a note', async (t) => {
  const { hook } = await daemonUp(t, WIN10_CONFIG);
  for (const name of HOSTILE_NAMES) {
    for (const xml of [plainXml(name), win10Xml(name)]) {
      const r = await runHook(hook, [name, 'prepare', 'begin', '-'], xml);
      t.is(r.code, 0, `${name}: ${r.stderr}`);
      t.is(r.stdout, '', name);
      // The daemon may add a note (a did-you-mean: win10's devices are configured for win10).
      t.true(r.stderr === '' || /^vfio-hookd: (?!no answer)[^\n]*\n$/.test(r.stderr), `${name}: ${r.stderr}`);
    }
  }
  t.deepEqual(await leftovers(hook), []);
});

test.serial('names libvirt would not make are refused with the name quoted on one line', async (t) => {
  const { hook } = await daemonUp(t, WIN10_CONFIG);
  const long = 'a'.repeat(10_000);
  const cases: [string, string][] = [
    [long, `vfio-hookd: Invalid domain name ${q(long)}: 10000 bytes long, at most 251 allowed\n`],
    ['a\nb', "vfio-hookd: Invalid domain name 'a\\x0ab': must not contain control characters\n"],
    [
      'a\rCall failed: vfio-hookd: x',
      "vfio-hookd: Invalid domain name 'a\\x0dCall failed: vfio-hookd: x': must not contain control characters\n",
    ],
    ['', "vfio-hookd: Invalid domain name '': must not be empty\n"],
    ['a/b', "vfio-hookd: Invalid domain name 'a/b': must not contain '/'\n"],
  ];
  t.is(q(long), `'${'a'.repeat(64)}\u2026' (10000 characters)`);
  for (const [name, message] of cases) {
    for (const xml of [plainXml('plain'), win10Xml('win10')]) {
      const r = await runHook(hook, [name, 'prepare', 'begin', '-'], xml);
      t.deepEqual(r, { code: 1, stdout: '', stderr: message }, JSON.stringify(name));
    }
  }
});

test.serial(
  'with the daemon down, a VM about to start fails closed with <hostdev> or <shmem> and starts without, whatever its name',
  async (t) => {
    const bus = await startPrivateBus(t);
    const hook = await installHook(t, bus.address);
    const names = [...HOSTILE_NAMES, 'a'.repeat(10_000), 'a\nb', 'tab\there', ''];
    for (const name of names) {
      const what = JSON.stringify(name.slice(0, 40));
      for (const operation of ['prepare', 'start']) {
        const closed = await runHook(hook, [name, operation, 'begin', '-'], win10Xml(name));
        t.is(closed.code, 1, what);
        t.is(closed.stdout, '', what);
        t.is(lines(closed.stderr).length, 1, `${what}: ${closed.stderr}`);
        t.regex(
          closed.stderr,
          /^vfio-hookd: no answer from vfio-hookd \(The name org\.vfiohookd1 was not provided by any \.service files\); VM '.*' has <hostdev> or <shmem> devices, so it does not start without it; start the daemon \(systemctl start vfio-hookd\) and try again\n$/,
          what,
        );

        const open = await runHook(hook, [name, operation, 'begin', '-'], plainXml(name));
        t.is(open.code, 0, what);
        t.is(open.stdout, '', what);
        t.is(lines(open.stderr).length, 1, `${what}: ${open.stderr}`);
        t.regex(
          open.stderr,
          /^vfio-hookd: no answer from vfio-hookd \(.*\); VM '.*' has no <hostdev> and no <shmem>, starting it anyway\n$/,
          what,
        );
      }
    }
    // The shown name loses its control characters, so the line stays one line.
    const nl = await runHook(hook, ['a\nb', 'prepare', 'begin', '-'], win10Xml('x'));
    t.true(nl.stderr.includes("VM 'ab' has <hostdev>"), nl.stderr);
    t.deepEqual(await leftovers(hook), []);
  },
);

test.serial('with the daemon down, steps of a VM that is not starting go on, so libvirt never kills a running VM for it', async (t) => {
  const bus = await startPrivateBus(t);
  const hook = await installHook(t, bus.address);
  for (const [operation, sub] of [
    ['started', 'begin'],
    ['reconnect', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
    ['migrate', 'begin'],
    ['restore', 'begin'],
    ['attach', 'begin'],
  ] as const) {
    const r = await runHook(hook, ['win10', operation, sub, '-'], WIN10_XML);
    t.deepEqual(
      r,
      {
        code: 0,
        stdout: '',
        stderr: `vfio-hookd: no answer from vfio-hookd (The name org.vfiohookd1 was not provided by any .service files); nothing done for '${operation} ${sub}' of VM 'win10'\n`,
      },
      `${operation} ${sub}`,
    );
  }
});

test.serial('a runtime folder the hook cannot write in is no answer: the XML alone decides', async (t) => {
  const { bus } = await daemonUp(t, WIN10_CONFIG);
  const hook = await installHook(t, bus.address, '/proc/vfio-hookd-cannot-be-made');
  const plain = await runHook(hook, ['plain', 'prepare', 'begin', '-'], plainXml('plain'));
  t.deepEqual(plain, {
    code: 0,
    stdout: '',
    stderr:
      "vfio-hookd: no answer from vfio-hookd (cannot make a file in '/proc/vfio-hookd-cannot-be-made' for the domain XML); VM 'plain' has no <hostdev> and no <shmem>, starting it anyway\n",
  });
  const win10 = await runHook(hook, ['win10', 'prepare', 'begin', '-'], WIN10_XML);
  t.is(win10.code, 1);
  t.regex(
    win10.stderr,
    /^vfio-hookd: no answer from vfio-hookd \(cannot make a file in .*\); VM 'win10' has <hostdev> or <shmem> devices, so it does not start without it;[^\n]*\n$/,
  );
});

test.serial('a hook that cannot read its stdin refuses every VM rather than guess', async (t) => {
  const hook = await installHook(t, 'unix:path=/nonexistent/vfio-hookd-test-bus');
  const empty = await tempDir(t, 'vfio-hookd-empty-path-', 0o755);
  for (const xml of [plainXml('plain'), WIN10_XML]) {
    const r = await runHook(hook, ['plain', 'prepare', 'begin', '-'], xml, { LC_ALL: 'C', PATH: empty });
    t.deepEqual(r, {
      code: 1,
      stdout: '',
      stderr: "vfio-hookd: cannot read the domain XML on stdin (is cat on the hook's PATH?), refusing\n",
    });
  }
});

test.serial('too few arguments is refused whether or not the daemon runs', async (t) => {
  const hook = await installHook(t, 'unix:path=/nonexistent/vfio-hookd-test-bus');
  const r = await runHook(hook, ['win10', 'prepare', 'begin'], WIN10_XML);
  t.deepEqual(r, { code: 1, stdout: '', stderr: 'vfio-hookd: expected 4 arguments (VM OPERATION SUB-OPERATION EXTRA), got 3\n' });
});

/** win10.xml grown past `bytes` with disks (elements, the parser's slow case). */
function grown(xml: string, bytes: number): string {
  const disk =
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/data.qcow2'/><target dev='vdb' bus='virtio'/></disk>\n";
  return xml.replace('<devices>', `<devices>\n${disk.repeat(Math.ceil(bytes / disk.length))}`);
}

test.serial('a 1 MiB domain XML reaches the daemon: a managed VM is prepared and released, an unmanaged one answered', async (t) => {
  const { daemon, hook } = await daemonUp(t, WIN10_CONFIG);
  const big = grown(WIN10_XML, MiB);
  t.true(Buffer.byteLength(big) > MiB);
  const prepare = await runHook(hook, ['win10', 'prepare', 'begin', '-'], big);
  t.deepEqual(prepare, { code: 0, stdout: '', stderr: '' });
  t.deepEqual(await rx590(daemon), ['vfio-pci', 'vfio-pci']);
  const shm = await fs.lstat(path.join(daemon.simDir, 'dev/shm/looking-glass'));
  t.is(shm.size, 32 * MiB);
  const release = await runHook(hook, ['win10', 'release', 'end', '-'], big);
  t.deepEqual(release, { code: 0, stdout: '', stderr: '' });
  t.deepEqual(await rx590(daemon), ['amdgpu', 'snd_hda_intel']);

  const plain = await runHook(hook, ['plain', 'prepare', 'begin', '-'], grown(plainXml('plain').replace('<devices>', '<devices>'), MiB));
  t.deepEqual(plain, { code: 0, stdout: '', stderr: '' });
  t.deepEqual(await leftovers(hook), []);
});

test.serial('a domain XML over the 16 MiB cap is refused for every VM with the cap in the sentence', async (t) => {
  const { hook } = await daemonUp(t, WIN10_CONFIG);
  const huge = plainXml('plain').replace('<memory>', `<description>${'x'.repeat(DOMAIN_XML_MAX_BYTES)}</description><memory>`);
  const bytes = Buffer.byteLength(huge) + 1; // the hook adds the newline that $(cat) took
  const r = await runHook(hook, ['plain', 'prepare', 'begin', '-'], huge);
  t.deepEqual(r, {
    code: 1,
    stdout: '',
    stderr: `vfio-hookd: Invalid domain XML: ${bytes} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing\n`,
  });
  t.deepEqual(await leftovers(hook), []);
});

test.serial('the bus keeps answering while a large hook is parsed, and answers first', async (t) => {
  const { bus, daemon } = await daemonUp(t, WIN10_CONFIG);
  const file = path.join(daemonRuntime(daemon), 'hook-xml.test');
  await fs.mkdir(daemonRuntime(daemon), { recursive: true });
  await fs.writeFile(file, grown(plainXml('plain'), 4 * MiB), { mode: 0o600 });
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const call = (iface: string, member: string, signature = '', body: unknown[] = []): Promise<unknown> =>
    client.call(new dbus.Message({ destination: 'org.vfiohookd1', path: '/org/vfiohookd1', interface: iface, member, signature, body }));
  await call('org.freedesktop.DBus.Peer', 'Ping'); // connected and the daemon there

  const order: string[] = [];
  const hook = call('org.vfiohookd1.Manager', 'HandleHookFile', 'sssss', ['plain', 'prepare', 'begin', '-', file]).then(() =>
    order.push('hook'),
  );
  const ping = call('org.freedesktop.DBus.Peer', 'Ping').then(() => order.push('ping'));
  const version = call('org.freedesktop.DBus.Properties', 'Get', 'ss', ['org.vfiohookd1.Manager', 'Version']).then(() =>
    order.push('version'),
  );
  await Promise.all([hook, ping, version]);
  t.deepEqual(order, ['ping', 'version', 'hook']);
});

test.serial('HandleHookFile reads only a hook file in the runtime folder, and marks its refusals', async (t) => {
  const { bus, daemon } = await daemonUp(t, WIN10_CONFIG);
  const runtime = daemonRuntime(daemon);
  await fs.mkdir(runtime, { recursive: true });
  await fs.symlink('/etc/passwd', path.join(runtime, 'hook-link'));
  const busctl = (member: string, signature: string, ...args: string[]) => callManager(bus, member, signature, ...args);
  t.deepEqual(await busctl('HandleHookFile', 'sssss', 'plain', 'prepare', 'begin', '-', '/etc/passwd'), {
    code: 1,
    stdout: '',
    stderr: `Call failed: vfio-hookd: Invalid domain XML file '/etc/passwd': expected a file named 'hook-*' in ${q(runtime)}, refusing\n`,
  });
  t.deepEqual(await busctl('HandleHookFile', 'sssss', 'plain', 'prepare', 'begin', '-', path.join(runtime, 'hook-link')), {
    code: 1,
    stdout: '',
    stderr: `Call failed: vfio-hookd: Domain XML file ${q(path.join(runtime, 'hook-link'))} is a symlink, refusing\n`,
  });
  // The hook's own refusals are marked the same way.
  await fs.writeFile(path.join(runtime, 'hook-xml.ok'), plainXml('plain'), { mode: 0o600 });
  t.deepEqual(await busctl('HandleHookFile', 'sssss', 'plain', 'explode', 'begin', '-', path.join(runtime, 'hook-xml.ok')), {
    code: 1,
    stdout: '',
    stderr: `Call failed: vfio-hookd: Invalid hook operation 'explode': expected one of prepare, start, started, stopped, release, migrate, restore, reconnect, attach\n`,
  });
  t.deepEqual(await busctl('HandleHookFile', 'sssss', 'plain', 'prepare', 'begin', '-', path.join(runtime, 'hook-xml.ok')), {
    code: 0,
    stdout: 's ""\n',
    stderr: '',
  });
  t.true((await fs.stat(path.join(runtime, 'hook-xml.ok'))).isFile(), 'the daemon leaves the file to the hook');
});

test.serial('HandleHook with the XML inline still works for hooks of earlier versions, its errors unmarked', async (t) => {
  const { bus } = await daemonUp(t, WIN10_CONFIG);
  const call = (...args: string[]) =>
    exec('busctl', [
      `--address=${bus.address}`,
      '--',
      'call',
      'org.vfiohookd1',
      '/org/vfiohookd1',
      'org.vfiohookd1.Manager',
      'HandleHook',
      'sssss',
      ...args,
    ]);
  t.is((await call('plain', 'prepare', 'begin', '-', plainXml('plain'))).stdout, '');
  const error = (await t.throwsAsync(call('plain', 'explode', 'begin', '-', plainXml('plain')))) as unknown as { stderr: string };
  t.is(
    error.stderr,
    "Call failed: Invalid hook operation 'explode': expected one of prepare, start, started, stopped, release, migrate, restore, reconnect, attach\n",
  );
});

/**
 * A Manager of our own on the private bus, with a backend that answers as
 * told: the hook's reading of notes and refusals, whatever their text.
 */
async function fakeDaemon(t: ExecutionContext, handleHook: ManagerBackend['handleHook']): Promise<InstalledHook> {
  const bus = await startPrivateBus(t);
  const connection = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => connection.disconnect());
  const none = async (): Promise<never> => {
    throw new InvalidArgs('not in this test');
  };
  const backend: ManagerBackend = {
    listMachines: none,
    listDevices: none,
    detachDevice: none,
    reattachDevice: none,
    reload: none,
    handleHook,
  };
  connection.export('/org/vfiohookd1', new ManagerInterface(backend, { version: 'test', configFile: '', runRoot: bus.dir }));
  await connection.requestName('org.vfiohookd1', dbus.NameFlag.DO_NOT_QUEUE);
  return installHook(t, bus.address, path.join(bus.dir, 'vfio-hookd'));
}

test.serial('a note from the daemon is shown on one stderr line, whatever it holds', async (t) => {
  let note = '';
  const hook = await fakeDaemon(t, async () => ({ message: 'done', note }));
  const notes: [string, string][] = [
    ['', ''],
    ["VM 'Windows 10' is not managed; did you mean [vm.win10]?", "vfio-hookd: VM 'Windows 10' is not managed; did you mean [vm.win10]?\n"],
    ['quotes " and \\ and ";  and STRING "x"; \u00fc \u{1f5a5}', 'vfio-hookd: quotes " and \\ and ";  and STRING "x"; \u00fc \u{1f5a5}\n'],
    ['two\nlines\tand a tab', 'vfio-hookd: two lines and a tab\n'],
  ];
  for (const [text, stderr] of notes) {
    note = text;
    t.deepEqual(
      await runHook(hook, ['plain', 'prepare', 'begin', '-'], plainXml('plain')),
      { code: 0, stdout: '', stderr },
      JSON.stringify(text),
    );
  }
  t.deepEqual(await leftovers(hook), []);
});

test.serial('a refusal whose text looks like a bus failure is still a refusal, on one line', async (t) => {
  let text = '';
  const hook = await fakeDaemon(t, async () => {
    throw new InvalidArgs(text);
  });
  for (const message of [
    'Failed to connect to bus: No such file or directory',
    'org.freedesktop.DBus.Error.ServiceUnknown',
    'The name org.vfiohookd1 was not provided by any .service files',
    'Call failed: Connection timed out',
    'line one\nCall failed: vfio-hookd: line two',
    'a noncharacter \uffff, which sd-bus refuses',
    '',
  ]) {
    text = message;
    for (const xml of [plainXml('plain'), win10Xml('plain')]) {
      const r = await runHook(hook, ['plain', 'prepare', 'begin', '-'], xml);
      const shown =
        message === '' ? 'Refused without a reason; see the journal of vfio-hookd' : message.replace('\n', ' ').replace('\uffff', '\ufffd');
      t.deepEqual(r, { code: 1, stdout: '', stderr: `vfio-hookd: ${shown}\n` }, JSON.stringify(message));
    }
  }
});
