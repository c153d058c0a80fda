/**
 * `vfio-hookctl doctor` on simulated hosts: a reference host set up right
 * (every check but the daemon's passes; the bus tier runs the daemon), then
 * the same host broken one way per test, each check failing for its cause.
 *
 * The simulated host is its own `/`: its etc/, usr/ and var/ are written
 * here beside the sys/ and proc/ lib/sim builds. Accounts are numbers
 * (uid 1000, gid 64055) or users every Debian has (root, nobody).
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { runDoctor } from '../../lib/cli/doctor/doctor.js';
import { doctorExitCode, formatChecks, type Check } from '../../lib/cli/doctor/check.js';
import { BUILTIN_HOSTS } from '../../lib/sim/index.js';
import { makeSim } from '../helpers/sim.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import { BTIME, libvirtd, setUpRight } from '../helpers/doctor-host.js';

interface Setup {
  dir: string;
  write(relative: string, text: string, mode?: number): Promise<void>;
  remove(relative: string): Promise<void>;
  run(vms?: string[]): Promise<Check[]>;
}

/** The reference host as a careful user sets it up (test/helpers/doctor-host.ts). */
async function setup(t: ExecutionContext, fixture = 'reference-host'): Promise<Setup> {
  const sim = await makeSim(t, fixture);
  const dir = sim.dir;
  const host = await setUpRight(dir);
  return {
    dir,
    write: host.write,
    remove: host.remove,
    run: (vms = []) =>
      runDoctor({
        root: dir,
        port: sim.kernel,
        configPath: path.join(dir, 'etc/vfio-hookd/vfio-hookd.toml'),
        busAddress: `unix:path=${path.join(dir, 'no-bus')}`,
        connect: null,
        vms,
      }),
  };
}

function byId(checks: readonly Check[], id: string): Check {
  const found = checks.find((c) => c.id === id);
  if (found === undefined) throw new Error(`no check ${id} in:\n${formatChecks(checks)}`);
  return found;
}

test('a host set up right passes every check but the daemon (not running in the sim tier)', async (t) => {
  const s = await setup(t);
  const checks = await s.run();
  const notOk = checks.filter((c) => c.status !== 'ok');
  t.deepEqual(
    notOk.map((c) => c.id),
    ['daemon.running'],
    formatChecks(checks),
  );
  t.is(doctorExitCode(checks), 1);
  // Every configured VM's checks ran: the domain, functions, shm sizes, accounts, room, RemoveIPC, the dry run, the identical card, the agent.
  for (const id of [
    'domain',
    'managed',
    'functions',
    'shmem',
    'user',
    'access.looking-glass',
    'access.scream',
    'shm-room',
    'remove-ipc',
    'plan',
    'twin.0000:0b:00.0',
    'agent',
  ])
    t.is(byId(checks, `vm.win10.${id}`).status, 'ok', id);
  t.regex(byId(checks, 'vm.win10.plan').finding, /would move 0000:0b:00\.1 \(snd_hda_intel\), 0000:0b:00\.0 \(amdgpu\) to vfio-pci/);
  t.regex(
    byId(checks, 'vm.win10.twin.0000:0b:00.0').finding,
    /0000:0a:00\.0 \(rev e7, subsystem 1da2:e366, the boot VGA, on amdgpu\) is the same model as the VM's 0000:0b:00\.0 \(rev e1, subsystem 1682:c590/,
  );
});

test('one line a check, with the fix, and a totals line', async (t) => {
  const s = await setup(t);
  const text = formatChecks(await s.run());
  const lines = text.trimEnd().split('\n');
  t.true(
    lines.every((l, i) => i === lines.length - 1 || /^\[(ok  |WARN|FAIL|skip)\] [^:]+: /.test(l)),
    text,
  );
  t.regex(text, /\[FAIL\] vfio-hookd: not running .*; fix: systemctl enable --now vfio-hookd/);
  t.regex(lines.at(-1)!, /^\d+ checks: \d+ ok, 0 warnings, 1 problems, 0 not checked$/);
});

test('no IOMMU groups fails and says to enable the IOMMU, with the AMD flag when it is missing', async (t) => {
  const s = await setup(t);
  await s.remove('sys/kernel/iommu_groups');
  await fs.mkdir(path.join(s.dir, 'sys/kernel/iommu_groups'));
  await s.write('proc/cmdline', 'root=/dev/nvme0n1p2\n');
  const c = byId(await s.run(), 'iommu.groups');
  t.is(c.status, 'fail');
  t.regex(c.finding, /there are none under .*: the IOMMU is off/);
  t.is(c.fix, 'enable VT-d / AMD-Vi (IOMMU) in the firmware setup, add amd_iommu=on to the kernel command line and reboot');
});

test('a kernel command line that turns the IOMMU off fails; an Intel CPU without intel_iommu=on and no groups warns', async (t) => {
  const s = await setup(t);
  await s.write('proc/cmdline', 'root=/dev/sda1 amd_iommu=off\n');
  t.is(byId(await s.run(), 'iommu.cmdline').status, 'fail');
  await s.write('proc/cpuinfo', 'vendor_id\t: GenuineIntel\n');
  await s.write('proc/cmdline', 'root=/dev/sda1\n');
  t.is(byId(await s.run(), 'iommu.cmdline').status, 'ok', 'groups exist: this kernel turns it on by default');
  await s.remove('sys/kernel/iommu_groups');
  const c = byId(await s.run(), 'iommu.cmdline');
  t.is(c.status, 'warn');
  t.is(c.fix, 'add intel_iommu=on to the kernel command line and reboot');
});

test('iommu=pt missing is advice (a warning), not a problem', async (t) => {
  const s = await setup(t);
  await s.write('proc/cmdline', 'root=/dev/nvme0n1p2\n');
  const checks = await s.run();
  t.is(byId(checks, 'iommu.pt').status, 'warn');
  t.not(doctorExitCode(checks.filter((c) => c.id !== 'daemon.running')), 1);
});

test('interrupt remapping: an Intel DMAR unit without the IR capability warns; with it, ok', async (t) => {
  const s = await setup(t);
  await s.remove('sys/class/iommu/ivhd0');
  await s.write('sys/class/iommu/dmar0/intel-iommu/ecap', 'f0050d2\n'); // bit 3 clear
  const c = byId(await s.run(), 'iommu.irq-remap');
  t.is(c.status, 'warn');
  t.regex(c.finding, /^dmar0 cannot remap interrupts/);
  await s.write('sys/class/iommu/dmar0/intel-iommu/ecap', 'f0050da\n'); // bit 3 set
  t.is(byId(await s.run(), 'iommu.irq-remap').status, 'ok');
});

test('vfio-pci at boot is found in modules-load.d, mkinitcpio, dracut and the kernel command line, and warned about when nowhere', async (t) => {
  const s = await setup(t);
  await s.remove('etc/modules-load.d');
  const none = byId(await s.run(), 'vfio.boot');
  t.is(none.status, 'warn');
  t.is(none.fix, 'echo vfio-pci > /etc/modules-load.d/vfio-pci.conf');
  await s.write('etc/NIXOS', '');
  t.regex(byId(await s.run(), 'vfio.boot').fix!, /on NixOS: boot\.kernelModules = \[ "vfio-pci" \]/);
  await s.write('etc/mkinitcpio.conf', 'MODULES=(vfio_pci vfio vfio_iommu_type1)\n');
  t.regex(byId(await s.run(), 'vfio.boot').finding, /\/etc\/mkinitcpio\.conf \(the initramfs\)/);
  await s.remove('etc/mkinitcpio.conf');
  await s.write('etc/dracut.conf.d/10-vfio.conf', 'add_drivers+=" vfio_pci vfio "\n');
  t.regex(byId(await s.run(), 'vfio.boot').finding, /10-vfio\.conf \(the initramfs\)/);
  await s.remove('etc/dracut.conf.d');
  await s.write('etc/modules-load.d/other.conf', '# vfio-pci\n');
  t.is(byId(await s.run(), 'vfio.boot').status, 'warn', 'a comment naming it loads nothing');
  await s.write('proc/cmdline', 'root=/dev/sda1 rd.driver.pre=vfio-pci\n');
  t.regex(byId(await s.run(), 'vfio.boot').finding, /the kernel command line \(rd\.driver\.pre=vfio-pci\)/);
});

test('the hook: missing, not executable, its busctl missing, each fails with its fix', async (t) => {
  const s = await setup(t);
  const hook = 'etc/libvirt/hooks/qemu.d/vfio-hookd';
  await fs.chmod(path.join(s.dir, hook), 0o644);
  const notExec = byId(await s.run(), 'hook.executable');
  t.is(notExec.status, 'fail');
  t.regex(notExec.finding, /is not executable: libvirt skips it/);
  await fs.chmod(path.join(s.dir, hook), 0o755);
  await s.remove('usr/bin/busctl');
  const busctl = byId(await s.run(), 'hook.busctl');
  t.is(busctl.status, 'fail');
  t.regex(busctl.finding, /^\/usr\/bin\/busctl is missing, and so is busctl in/);
  await s.write('run/current-system/sw/bin/busctl', '#!/bin/sh\n', 0o755);
  t.regex(byId(await s.run(), 'hook.busctl').finding, /^\/run\/current-system\/sw\/bin\/busctl \(the hook names \/usr\/bin\/busctl\)/);
  await s.remove(hook);
  const missing = byId(await s.run(), 'hook.present');
  t.is(missing.status, 'fail');
  t.regex(missing.finding, /libvirt starts VMs without calling vfio-hookd/);
});

test("NixOS: the hook is looked for in /var/lib/libvirt/hooks, where the module's libvirtd-config links it", async (t) => {
  const s = await setup(t);
  await s.write('etc/NIXOS', '');
  await s.remove('etc/libvirt/hooks');
  await s.write('var/lib/libvirt/hooks/qemu.d/vfio-hookd', "#!/bin/sh\nBUSCTL='/usr/bin/busctl'\n", 0o755);
  await fs.utimes(path.join(s.dir, 'var/lib/libvirt/hooks/qemu.d/vfio-hookd'), BTIME + 100, BTIME + 100);
  const c = byId(await s.run(), 'hook.present');
  t.is(c.status, 'ok');
  t.is(c.finding, '/var/lib/libvirt/hooks/qemu.d/vfio-hookd');
});

test('libvirtd that started before the hook was changed fails with "restart once"; none running warns; virtqemud counts', async (t) => {
  const s = await setup(t);
  await libvirtd(s.write, 50);
  const before = byId(await s.run(), 'hook.libvirtd');
  t.is(before.status, 'fail');
  t.is(before.fix, 'restart libvirtd once (systemctl restart libvirtd)');
  await libvirtd(s.write, 300, 'virtqemud');
  t.regex(byId(await s.run(), 'hook.libvirtd').finding, /^virtqemud started after/);
  await s.remove('proc/900');
  t.is(byId(await s.run(), 'hook.libvirtd').status, 'warn');
});

test('blog-era hooks that rebind devices too fail, naming each file; a harmless one does not', async (t) => {
  const s = await setup(t);
  await s.write('etc/libvirt/hooks/qemu.d/win10/prepare/begin/start.sh', '#!/bin/bash\nvirsh nodedev-detach pci_0000_0b_00_0\n', 0o755);
  await s.write('etc/libvirt/hooks/qemu', '#!/bin/bash\necho 0000:0b:00.0 > /sys/bus/pci/devices/0000:0b:00.0/driver/unbind\n', 0o755);
  await s.write('etc/libvirt/hooks/qemu.d/notify', '#!/bin/sh\nlogger "$1 $2"\n', 0o755);
  const c = byId(await s.run(), 'hook.others');
  t.is(c.status, 'fail');
  t.is(
    c.finding,
    '/etc/libvirt/hooks/qemu, /etc/libvirt/hooks/qemu.d/win10/prepare/begin/start.sh rebind devices too: two writers to one device leave it half-bound or lock the machine',
  );
});

test('a configuration error fails with its line and column; a missing file warns that no VM is managed', async (t) => {
  const s = await setup(t);
  await s.write('etc/vfio-hookd/vfio-hookd.toml', '[vm.win10]\ndevices = ["0000:0b:00.0"]\nuser = 5\n');
  const bad = byId(await s.run(), 'config');
  t.is(bad.status, 'fail');
  t.regex(bad.finding, /vfio-hookd\.toml:3:\d+/);
  await s.remove('etc/vfio-hookd/vfio-hookd.toml');
  const checks = await s.run();
  t.is(byId(checks, 'config').status, 'warn');
  t.false(checks.some((c) => c.id.startsWith('vm.')));
});

test('a VM named on the command line that the configuration does not hold fails with a did-you-mean', async (t) => {
  const s = await setup(t);
  const c = byId(await s.run(['win01']), 'vm.win01');
  t.is(c.status, 'fail');
  t.is(c.finding, "not in the configuration (did you mean 'win10'?)");
});

test("the domain: managed='yes', a missing function and a <shmem> of another size are each named", async (t) => {
  const s = await setup(t);
  const xml = WIN10_XML.replace(/managed='no'/, "managed='yes'").replace(/<size unit='M'>32<\/size>/, "<size unit='M'>64</size>");
  t.not(xml, WIN10_XML);
  await s.write('etc/libvirt/qemu/win10.xml', xml);
  const checks = await s.run();
  t.is(byId(checks, 'vm.win10.managed').status, 'fail');
  t.regex(byId(checks, 'vm.win10.managed').finding, /^0000:0b:00\.0 is managed='yes': libvirt would detach it itself/);
  t.is(byId(checks, 'vm.win10.shmem').finding, "<shmem name='looking-glass'> is 64 MiB, the configuration says 32 MiB");
  // Only the VGA function as a hostdev: the HDMI audio is detached (same group) but the guest would not get it.
  const withoutAudio = WIN10_XML.replace(
    /<hostdev mode='subsystem' type='pci' managed='no'>\s*<source>\s*<address [^>]*function='0x1'\/>[^]*?<\/hostdev>/,
    '',
  );
  t.not(withoutAudio, WIN10_XML);
  await s.write('etc/libvirt/qemu/win10.xml', withoutAudio);
  const f = byId(await s.run(), 'vm.win10.functions');
  t.is(f.status, 'warn', f.finding);
  t.regex(f.finding, /0000:0b:00\.1 is detached for it but not in its XML/);
});

test('a domain libvirt does not have is not checked here (skip, with how to check it)', async (t) => {
  const s = await setup(t);
  await s.remove('etc/libvirt/qemu/win10.xml');
  const c = byId(await s.run(), 'vm.win10.domain');
  t.is(c.status, 'skip');
  t.regex(c.finding, /no domain definition at .*win10\.xml/);
});

test("QEMU's user that may not open the shm files fails, naming the user, owner, group and mode", async (t) => {
  const s = await setup(t);
  await s.write('etc/vfio-hookd/vfio-hookd.toml', `[daemon]\nqemu-user = "nobody"\n${WIN10_CONFIG}`);
  const c = byId(await s.run(), 'vm.win10.access.looking-glass');
  t.is(c.status, 'fail');
  t.is(c.finding, "QEMU runs as 'nobody', which may not read and write it (owner uid 1000, group 64055, mode 0660): the VM fails to start");
});

test('a user with shm files and RemoveIPC=yes (the default) warns; lingering or a system user passes', async (t) => {
  const s = await setup(t);
  await s.remove('etc/systemd/logind.conf.d');
  const c = byId(await s.run(), 'vm.win10.remove-ipc');
  t.is(c.status, 'warn');
  t.is(c.fix, 'set RemoveIPC=no in /etc/systemd/logind.conf.d/vfio-hookd.conf, or loginctl enable-linger 1000');
  await s.write('var/lib/systemd/linger/1000', '');
  t.is(byId(await s.run(), 'vm.win10.remove-ipc').status, 'ok');
});

test('room in /dev/shm: files larger than the free space fail', async (t) => {
  const s = await setup(t);
  await s.write(
    'etc/vfio-hookd/vfio-hookd.toml',
    `[daemon]\nqemu-user = "root"\n${WIN10_CONFIG.replace('size = "32M"', 'size = "1048576G"')}`,
  );
  const c = byId(await s.run(), 'vm.win10.shm-room');
  t.is(c.status, 'fail');
  t.regex(c.finding, /^\d+ MiB still to create but only \d+ MiB free in /);
});

test("the dry run of a VM's detach fails with the planner's sentence when the host needs the device", async (t) => {
  const s = await setup(t);
  await s.write('etc/vfio-hookd/vfio-hookd.toml', '[vm.disk]\ndevices = ["0000:01:00.0"]\n');
  const c = byId(await s.run(), 'vm.disk.plan');
  t.is(c.status, 'fail');
  t.regex(c.finding, /'\/' is mounted from 'nvme0n1p2'/);
});

test('the agent not enabled warns when the VM has units', async (t) => {
  const s = await setup(t);
  await s.remove('etc/systemd/user');
  const c = byId(await s.run(), 'vm.win10.agent');
  t.is(c.status, 'warn');
  t.regex(
    c.finding,
    /vfio-hookd-agent\.service is not enabled, so its units \(looking-glass-client@looking-glass\.service\) are not started/,
  );
});

test('runs on every simulated host without throwing, and each check has a subject, a finding and a fix unless ok', async (t) => {
  for (const name of BUILTIN_HOSTS.keys()) {
    const s = await setup(t, name);
    const checks = await s.run();
    for (const c of checks) {
      t.true(c.subject.length > 0 && c.finding.length > 0, `${name}: ${c.id}`);
      t.is(c.fix === null, c.status === 'ok', `${name}: ${c.id}`);
    }
  }
});

test('libvirt-dbus missing warns (the started-without-its-hook warning needs it)', async (t) => {
  const s = await setup(t);
  await s.remove('usr/share/dbus-1/system-services/org.libvirt.service');
  const c = byId(await s.run(), 'daemon.libvirt-dbus');
  t.is(c.status, 'warn');
  t.is(c.fix, 'install libvirt-dbus');
});

test('vfio-pci not loaded and not in the kernel fails; in modules.dep it is available but not loaded (a warning)', async (t) => {
  const s = await setup(t);
  await s.remove('sys/bus/pci/drivers/vfio-pci');
  const missing = await s.run();
  t.is(byId(missing, 'vfio.available').status, 'fail');
  t.is(byId(missing, 'vfio.available').finding, 'kernel 6.12.0-test has no vfio-pci module (not in modules.dep or modules.builtin)');
  t.is(byId(missing, 'vfio.loaded').status, 'warn');
  await s.write('lib/modules/6.12.0-test/modules.dep', 'kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\n');
  t.is(byId(await s.run(), 'vfio.available').status, 'ok');
});

test('a user or group that does not resolve fails, naming it', async (t) => {
  const s = await setup(t);
  await s.write(
    'etc/vfio-hookd/vfio-hookd.toml',
    `[daemon]\nqemu-user = "root"\n${WIN10_CONFIG.replace('user = "1000"', 'user = "no-such-user-x"')}`,
  );
  const user = byId(await s.run(), 'vm.win10.user');
  t.is(user.status, 'fail');
  t.regex(user.finding, /'no-such-user-x'/);
  await s.write(
    'etc/vfio-hookd/vfio-hookd.toml',
    `[daemon]\nqemu-user = "root"\n${WIN10_CONFIG.replace('group = "64055"', 'group = "no-such-group-x"')}`,
  );
  const group = byId(await s.run(), 'vm.win10.group.looking-glass');
  t.is(group.status, 'fail');
  t.regex(group.finding, /'no-such-group-x'/);
});

test("a VM configured with the host's boot VGA, of the same model as another card, warns to check the address", async (t) => {
  const s = await setup(t);
  await s.write('etc/vfio-hookd/vfio-hookd.toml', '[vm.win10]\ndevices = ["0000:0a:00.0"]\n');
  const c = byId(await s.run(), 'vm.win10.twin.0000:0a:00.0');
  t.is(c.status, 'warn');
  t.regex(c.finding, /^the VM's card 0000:0a:00\.0 .* is the boot VGA, and 0000:0b:00\.0 .* is the same model$/);
});

test('a hook not owned by root fails', async (t) => {
  const s = await setup(t);
  await fs.chown(path.join(s.dir, 'etc/libvirt/hooks/qemu.d/vfio-hookd'), 65534, 65534);
  const c = byId(await s.run(), 'hook.executable');
  t.is(c.status, 'fail');
  t.regex(c.finding, /owned by uid 65534, not root/);
});

test('host tuning: what a prepare would refuse is found before the start, and good values pass', async (t) => {
  const s = await setup(t);
  await s.write('sys/devices/system/cpu/online', '0-7\n');
  await s.write('sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages', '0\n');
  await s.write('proc/meminfo', 'MemTotal:       16384000 kB\nMemAvailable:    1048576 kB\n');
  const config = (tuning: string, kvmfr: string) =>
    s.write(
      'etc/vfio-hookd/vfio-hookd.toml',
      WIN10_CONFIG.replace('units = [', `${tuning}\nunits = [`).replace('size = "32M"', `size = "32M"\nkvmfr = "${kvmfr}"`),
      0o644,
    );
  await config('host-cpus = "0-9"\nhugepages = "4G"\nreset-method = { "0b:00.0" = "flr" }', 'kvmfr1');
  let checks = await s.run(['win10']);
  t.like(byId(checks, 'vm.win10.host-cpus'), {
    status: 'fail',
    finding: "CPU 8-9 is not online (the host has 0-7): the VM's start is refused",
  });
  t.like(byId(checks, 'vm.win10.hugepages'), {
    status: 'warn',
    finding: 'reserves 2048 2M pages (4G) at start, but only 1024 MiB is available now: the start would be refused',
  });
  t.like(byId(checks, 'vm.win10.reset-method.0000:0b:00.0'), {
    status: 'fail',
    finding: "it offers 'bus', not 'flr': the VM's start is refused",
  });
  t.like(byId(checks, 'vm.win10.kvmfr'), { status: 'fail' });
  t.regex(byId(checks, 'vm.win10.kvmfr').finding, /kvmfr1 does not exist/);

  await config('host-cpus = "0-1"\nhugepages = "512M"\nreset-method = { "0b:00.0" = "bus" }', 'auto');
  checks = await s.run(['win10']);
  for (const check of ['host-cpus', 'hugepages', 'reset-method.0000:0b:00.0', 'kvmfr'])
    t.is(byId(checks, `vm.win10.${check}`).status, 'ok', check);
  t.is(byId(checks, 'vm.win10.host-cpus').finding, 'the host keeps CPU 0-1 while the VM runs; 2-7 are left to the VM');
  t.is(byId(checks, 'vm.win10.kvmfr').finding, 'no /dev/kvmfr0: Looking Glass uses /dev/shm/looking-glass');
});
