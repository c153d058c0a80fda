/**
 * The hook answers a VM the daemon owes nothing without calling it
 * (lib/daemon/owed-index.ts, hooks/qemu `owed()`), and calls it in every
 * other case: a listed name, an XML that mentions <hostdev>, <shmem> or our
 * <metadata>, and an index that is missing, not root's, or not whole. Calls
 * are seen as the daemon's HookHandled signals, in bus order: a hook run
 * after the one under test whose signal arrives first proves the first sent
 * none.
 */
import test, { type ExecutionContext } from 'ava';
import dbus from 'dbus-next';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startDaemon, startPrivateBus, tempDir, type DaemonProcess, type PrivateBus } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, runHook, type InstalledHook } from '../helpers/hook.js';
import { callManager } from '../helpers/command.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const NAME = 'org.vfiohookd1';
const PATH = '/org/vfiohookd1';
const IFACE = 'org.vfiohookd1.Manager';
const plainXml = (name: string, devices = "<disk type='file'/>"): string =>
  `<domain type='kvm'><name>${name}</name><memory>1048576</memory><devices>${devices}</devices></domain>`;

interface Setup {
  bus: PrivateBus;
  daemon: DaemonProcess;
  hook: InstalledHook;
  index: string;
  /** Names of the VMs whose hook calls reached the daemon, in order. */
  handled: string[];
  /** Resolves when `count` HookHandled signals have arrived in all. */
  handledCount(count: number): Promise<void>;
}

async function setup(t: ExecutionContext, config = WIN10_CONFIG): Promise<Setup> {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  const client = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => client.disconnect());
  const manager = (await client.getProxyObject(NAME, PATH)).getInterface(IFACE);
  const handled: string[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  manager.on('HookHandled', (vm: string) => {
    handled.push(vm);
    for (const w of waiters.filter((x) => handled.length >= x.count)) w.resolve();
  });
  // A call on the same connection after on()'s AddMatch: the bus handles one connection's messages in order,
  // so once this returns the match is in place for every hook's call.
  await client.call(new dbus.Message({ destination: NAME, path: PATH, interface: 'org.freedesktop.DBus.Peer', member: 'Ping' }));
  const handledCount = (count: number): Promise<void> =>
    handled.length >= count ? Promise.resolve() : new Promise((resolve) => waiters.push({ count, resolve }));
  return { bus, daemon, hook, index: path.join(daemonRuntime(daemon), 'owed'), handled, handledCount };
}

/**
 * Run the hook for `vm`, then a marker hook (win10's reconnect, always a call), and say whether `vm`'s call reached
 * the daemon: the daemon signals each hook before it answers, so a signal of `vm` comes before the marker's.
 */
async function called(s: Setup, vm: string, xml: string, op = 'prepare', sub = 'begin'): Promise<boolean> {
  const before = s.handled.length;
  const run = await runHook(s.hook, [vm, op, sub, '-'], xml);
  if (run.code !== 0) throw new Error(`hook for ${vm} exited ${run.code}: ${run.stderr}`);
  const marker = await runHook(s.hook, ['win10', 'reconnect', 'begin', '-'], WIN10_XML);
  if (marker.code !== 0) throw new Error(`marker hook exited ${marker.code}: ${marker.stderr}`);
  await s.handledCount(before + 1);
  const since = s.handled.slice(before);
  while (!since.includes('win10')) {
    await s.handledCount(before + since.length + 1);
    since.splice(0, since.length, ...s.handled.slice(before));
  }
  return since.slice(0, since.indexOf('win10')).includes(vm);
}

test('the daemon writes the index before READY=1: root-owned, 0644, its VMs between a header and an end line', async (t) => {
  const s = await setup(t, `${WIN10_CONFIG}\n[vm."win 11"]\n\n[vm."# end"]\n`);
  const st = await fs.stat(s.index);
  t.is(st.uid, 0);
  t.is(st.mode & 0o777, 0o644);
  t.is(await fs.readFile(s.index, 'utf8'), '# vfio-hookd owed v1\nvm # end\nvm win 11\nvm win10\n# end\n');
});

test('a VM with no <hostdev>, <shmem> or metadata and a name not listed gets exit 0, no output and no call', async (t) => {
  const s = await setup(t);
  const run = await runHook(s.hook, ['plain', 'prepare', 'begin', '-'], plainXml('plain'));
  t.deepEqual([run.code, run.stdout, run.stderr], [0, '', '']);
  t.false(await called(s, 'plain', plainXml('plain')));
  t.false(await called(s, 'plain', plainXml('plain'), 'release', 'end'));
});

test('the daemon is called for a listed name, and for any XML that mentions hostdev, shmem or our namespace', async (t) => {
  const s = await setup(t, `${WIN10_CONFIG}\n[vm."win 11"]\n\n[vm."# end"]\n`);
  t.true(await called(s, 'win 11', plainXml('win 11')), 'a configured name with a space');
  t.true(await called(s, '# end', plainXml('# end')), 'a name that looks like the end line');
  t.true(await called(s, 'usb', plainXml('usb', "<hostdev mode='subsystem' type='usb'/>")), 'a USB hostdev');
  t.true(await called(s, 'net', plainXml('net', "<interface type='hostdev'/>")), "an SR-IOV interface type='hostdev'");
  t.true(await called(s, 'ivshmem', plainXml('ivshmem', "<shmem name='looking-glass'/>")), 'a shmem');
  const metadata = `<domain type='kvm'><name>meta</name><metadata><vfio:vm xmlns:vfio="https://vfio-hookd.org/xmlns/vm/1"/></metadata><devices/></domain>`;
  t.true(await called(s, 'meta', metadata), 'our <metadata>');
  t.true(await called(s, 'comment', plainXml('comment', '<!-- hostdev later -->')), 'a mere mention asks too');
});

test("an index that is missing, not whole, has another header, or is not root's makes the hook ask", async (t) => {
  const s = await setup(t);
  const good = await fs.readFile(s.index, 'utf8');
  const cases: [string, () => Promise<void>][] = [
    ['missing', () => fs.rm(s.index)],
    ['without its end line', () => fs.writeFile(s.index, good.replace('# end\n', ''))],
    ['empty', () => fs.writeFile(s.index, '')],
    ['another header', () => fs.writeFile(s.index, good.replace('owed v1', 'owed v2'))],
    ['owned by nobody', async () => (await fs.writeFile(s.index, good), await fs.chown(s.index, 65534, 65534))],
  ];
  for (const [what, damage] of cases) {
    await damage();
    t.true(await called(s, 'plain', plainXml('plain')), what);
    await fs.rm(s.index, { force: true });
    await fs.writeFile(s.index, good, { mode: 0o644 });
  }
});

test('a VM added by a reload is listed when Reload() returns, and the index goes with a clean stop (the hook then says there is no answer)', async (t) => {
  const s = await setup(t);
  t.false(await called(s, 'plain', plainXml('plain')));
  await fs.writeFile(s.daemon.configPath, `${WIN10_CONFIG}\n[vm.plain]\n`);
  const reload = await callManager(s.bus, 'Reload', '');
  t.is(reload.code, 0, reload.stderr);
  // Reload() returns once the index is rewritten (ExecReload calls it, so `systemctl reload` waits for this too):
  // read at once, no polling; a hook right after the reload finds the new VM.
  t.true((await fs.readFile(s.index, 'utf8')).includes('vm plain\n'), 'listed when Reload() returns');
  t.true(await called(s, 'plain', plainXml('plain')));

  s.daemon.child.kill('SIGTERM');
  await s.daemon.exited;
  await t.throwsAsync(fs.stat(s.index), { code: 'ENOENT' });
  const run = await runHook(s.hook, ['other', 'prepare', 'begin', '-'], plainXml('other'));
  t.is(run.code, 0);
  t.regex(run.stderr, /no answer from vfio-hookd .*has no <hostdev> and no <shmem>, starting it anyway/);
});

test('prepare without its XML file is refused with a sentence; later stages need none', async (t) => {
  const s = await setup(t);
  const prepare = await callManager(s.bus, 'HandleHookFile', 'sssss', 'win10', 'prepare', 'begin', '-', '');
  t.not(prepare.code, 0);
  t.regex(
    prepare.stderr,
    /vfio-hookd: Operation 'prepare' of 'win10' came without the domain XML file; the hook passes one for prepare, refusing/,
  );
  const release = await callManager(s.bus, 'HandleHookFile', 'sssss', 'win10', 'release', 'end', '-', '');
  t.is(release.code, 0, release.stderr);
  // The hook leaves no XML file for a stage that is not prepare (nor for prepare, once answered).
  t.is((await runHook(s.hook, ['win10', 'started', 'begin', '-'], WIN10_XML)).code, 0);
  t.deepEqual(
    (await fs.readdir(daemonRuntime(s.daemon))).filter((f) => f.startsWith('hook-')),
    [],
  );
});

test("a listed VM's steps after prepare reach the daemon with the XML unread; a prepare, an unlisted VM and an unanswered start read it", async (t) => {
  const s = await setup(t);
  // No cat on the PATH: a step that reads the XML would refuse ("cannot read the domain XML"); one that does not, runs.
  const noCat = { LC_ALL: 'C', PATH: await tempDir(t, 'vfio-hookd-no-cat-', 0o755) };
  // 1 MiB, past the 64 KiB a pipe holds: the hook exits with its stdin unread and nobody waits on it.
  const big = WIN10_XML.replace('<devices>', `<devices>${"<disk type='file'/>\n".repeat(2 ** 20 / 18)}`);
  const steps = [
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
    ['reconnect', 'begin'],
  ] as const;
  for (const [op, sub] of steps) {
    const before = s.handled.length;
    const run = await runHook(s.hook, ['win10', op, sub, '-'], big, noCat);
    t.deepEqual(run, { code: 0, stdout: '', stderr: '' }, `${op} ${sub}`);
    await s.handledCount(before + 1);
    t.is(s.handled[before], 'win10', `${op} ${sub} reached the daemon`);
  }
  const refused = {
    code: 1,
    stdout: '',
    stderr: "vfio-hookd: cannot read the domain XML on stdin (is cat on the hook's PATH?), refusing\n",
  };
  t.deepEqual(await runHook(s.hook, ['win10', 'prepare', 'begin', '-'], WIN10_XML, noCat), refused, 'prepare hands the XML over');
  t.deepEqual(await runHook(s.hook, ['plain', 'stopped', 'end', '-'], plainXml('plain'), noCat), refused, 'an unlisted VM is judged on it');

  // No answer (the daemon gone, its index with it): a start is judged on the XML, read only now.
  s.daemon.child.kill('SIGTERM');
  await s.daemon.exited;
  const start = await runHook(s.hook, ['win10', 'start', 'begin', '-'], WIN10_XML);
  t.is(start.code, 1);
  t.regex(
    start.stderr,
    /^vfio-hookd: no answer from vfio-hookd \(.*\); VM 'win10' has <hostdev> or <shmem> devices, so it does not start without it;/,
  );
  const blind = await runHook(s.hook, ['win10', 'start', 'begin', '-'], WIN10_XML, noCat);
  t.is(blind.code, 1, 'an XML it cannot read is a start it cannot judge: refused');
  t.regex(
    blind.stderr,
    /^vfio-hookd: no answer from vfio-hookd \(.*\), and the domain XML cannot be read \(is cat on the hook's PATH\?\); VM 'win10' may have/,
  );
  const release = await runHook(s.hook, ['win10', 'release', 'end', '-'], WIN10_XML, noCat);
  t.is(release.code, 0, 'a release goes on, with its line');
  t.regex(release.stderr, /^vfio-hookd: no answer from vfio-hookd \(.*\); nothing done for 'release end' of VM 'win10'\n$/);
});
