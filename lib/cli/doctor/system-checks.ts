/**
 * The doctor's checks of the host, before any VM: the IOMMU, vfio-pci, and
 * libvirt's hook. Each reads a few files and says what it found; the fixes
 * are the ones the field's guides give (the Arch wiki's "PCI passthrough via
 * OVMF", libvirt's hooks page), worded for this tool.
 */
import path from 'node:path';
import { fail, ok, skip, warn, type Check } from './check.js';
import type { HostView } from './host-view.js';

export async function iommuChecks(host: HostView): Promise<Check[]> {
  const checks: Check[] = [];
  const groupsDir = path.join(host.roots.sysfs, 'kernel', 'iommu_groups');
  const groups = await host.list(groupsDir);
  const cmdline = (await host.text(path.join(host.roots.proc, 'cmdline'))) ?? null;
  const words = cmdline === null ? [] : cmdline.trim().split(/\s+/);
  const cpuinfo = (await host.text(path.join(host.roots.proc, 'cpuinfo'))) ?? '';
  const vendor = /GenuineIntel/.test(cpuinfo) ? 'intel' : /AuthenticAMD/.test(cpuinfo) ? 'amd' : null;
  const iommuFlag =
    vendor === 'intel' ? 'intel_iommu=on' : vendor === 'amd' ? 'amd_iommu=on' : 'intel_iommu=on (Intel) or amd_iommu=on (AMD)';

  if (groups === null) {
    checks.push(skip('iommu.groups', 'IOMMU groups', `cannot list ${groupsDir}`, 'run vfio-hookctl doctor as root'));
  } else if (groups.length === 0) {
    checks.push(
      fail(
        'iommu.groups',
        'IOMMU groups',
        `there are none under ${groupsDir}: the IOMMU is off, and nothing can be passed through`,
        `enable VT-d / AMD-Vi (IOMMU) in the firmware setup${words.includes(iommuFlag) ? '' : `, add ${iommuFlag} to the kernel command line`} and reboot`,
      ),
    );
  } else {
    checks.push(ok('iommu.groups', 'IOMMU groups', `${groups.length} groups under ${groupsDir}`));
  }

  if (cmdline === null) {
    checks.push(
      skip('iommu.cmdline', 'kernel command line', `cannot read ${path.join(host.roots.proc, 'cmdline')}`, 'run it on the host itself'),
    );
  } else {
    const disabled = words.find((w) => w === 'intel_iommu=off' || w === 'amd_iommu=off' || w === 'iommu=off');
    if (disabled !== undefined) {
      checks.push(
        fail('iommu.cmdline', 'kernel command line', `it has '${disabled}', which turns the IOMMU off`, `remove '${disabled}' and reboot`),
      );
    } else if (vendor === 'intel' && !words.includes('intel_iommu=on')) {
      // Only a warning: kernels built with CONFIG_INTEL_IOMMU_DEFAULT_ON need no flag.
      const on = groups !== null && groups.length > 0;
      checks.push(
        on
          ? ok('iommu.cmdline', 'kernel command line', 'no intel_iommu=on, but the IOMMU is on (this kernel enables it by default)')
          : warn(
              'iommu.cmdline',
              'kernel command line',
              'an Intel CPU and no intel_iommu=on',
              'add intel_iommu=on to the kernel command line and reboot',
            ),
      );
    } else {
      checks.push(
        ok(
          'iommu.cmdline',
          'kernel command line',
          vendor === 'amd' ? 'AMD-Vi needs no flag; nothing turns it off' : 'nothing turns the IOMMU off',
        ),
      );
    }
    checks.push(
      words.includes('iommu=pt')
        ? ok('iommu.pt', 'iommu=pt', 'set: host devices skip DMA translation')
        : warn(
            'iommu.pt',
            'iommu=pt',
            'not set: every host device goes through DMA translation, which costs some I/O speed on the host',
            'optional: add iommu=pt to the kernel command line (passthrough devices are isolated either way)',
          ),
    );
  }
  checks.push(await interruptRemapping(host));
  return checks;
}

/**
 * Interrupt remapping: without it VFIO refuses to assign devices unless
 * vfio_iommu_type1's allow_unsafe_interrupts is set. Intel's DMAR units
 * advertise it in their extended capabilities (ECAP bit 3, "IR"); AMD-Vi
 * units always remap interrupts when the IOMMU is on.
 */
async function interruptRemapping(host: HostView): Promise<Check> {
  const subject = 'interrupt remapping';
  const classDir = path.join(host.roots.sysfs, 'class', 'iommu');
  const units = (await host.list(classDir)) ?? [];
  const unsafe = (
    await host.text(path.join(host.roots.sysfs, 'module', 'vfio_iommu_type1', 'parameters', 'allow_unsafe_interrupts'))
  )?.trim();
  const unsafeNote = unsafe === 'Y' ? ' (allow_unsafe_interrupts=Y is set)' : '';
  const dmar = units.filter((u) => u.startsWith('dmar'));
  if (dmar.length > 0) {
    const ecaps = await Promise.all(dmar.map((u) => host.text(path.join(classDir, u, 'intel-iommu', 'ecap'))));
    if (ecaps.some((e) => e === null))
      return skip('iommu.irq-remap', subject, `cannot read the ECAP of ${dmar.join(', ')}`, 'run it as root');
    const without = dmar.filter((_, i) => (BigInt(`0x${ecaps[i]!.trim() || '0'}`) & 8n) === 0n);
    return without.length === 0
      ? ok('iommu.irq-remap', subject, `every DMAR unit supports it (${dmar.length})`)
      : warn(
          'iommu.irq-remap',
          subject,
          `${without.join(', ')} cannot remap interrupts: VFIO refuses devices there unless unsafe interrupts are allowed${unsafeNote}`,
          'enable "Interrupt remapping" (or x2APIC) in the firmware setup',
        );
  }
  if (units.some((u) => u.startsWith('ivhd'))) return ok('iommu.irq-remap', subject, 'AMD-Vi remaps interrupts');
  if (units.length === 0) return skip('iommu.irq-remap', subject, `no IOMMU units under ${classDir}`, 'turn the IOMMU on first');
  return skip(
    'iommu.irq-remap',
    subject,
    `cannot tell for the IOMMU units ${units.join(', ')}${unsafeNote}`,
    'see dmesg for "Interrupt remapping"',
  );
}

/** Where modules are loaded at boot, with the file and line that names vfio-pci. */
const BOOT_MODULE_FILES = ['/etc/modules-load.d', '/usr/lib/modules-load.d', '/run/modules-load.d', '/lib/modules-load.d'];
const INITRAMFS_FILES = ['/etc/initramfs-tools/modules', '/etc/mkinitcpio.conf', '/etc/modules'];
const INITRAMFS_DIRS = ['/etc/dracut.conf.d', '/etc/mkinitcpio.conf.d'];
const VFIO_MODULE = /(^|[\s"'(=,+])vfio[-_]pci($|[\s"'),])/m;

export async function vfioChecks(host: HostView): Promise<Check[]> {
  const checks: Check[] = [];
  const release = (await host.text(path.join(host.roots.proc, 'sys', 'kernel', 'osrelease')))?.trim() ?? null;
  const loaded =
    (await host.stat(path.join(host.roots.sysfs, 'bus', 'pci', 'drivers', 'vfio-pci'))) !== null ||
    (await host.stat(path.join(host.roots.sysfs, 'module', 'vfio_pci'))) !== null;
  let available: boolean | null = loaded ? true : null;
  if (!loaded && release !== null) {
    const moduleDir = host.sys(path.join('/lib/modules', release));
    const dep = (await host.text(path.join(moduleDir, 'modules.dep'))) ?? '';
    const builtin = (await host.text(path.join(moduleDir, 'modules.builtin'))) ?? '';
    available = /vfio-pci\.ko/.test(dep) || /vfio-pci\.ko/.test(builtin);
  }
  if (available === null)
    checks.push(skip('vfio.available', 'vfio-pci available', 'cannot read the kernel release', 'run it on the host itself'));
  else if (!available)
    checks.push(
      fail(
        'vfio.available',
        'vfio-pci available',
        `kernel ${release} has no vfio-pci module (not in modules.dep or modules.builtin)`,
        'install a kernel built with CONFIG_VFIO_PCI',
      ),
    );
  else checks.push(ok('vfio.available', 'vfio-pci available', loaded ? 'it is loaded' : `kernel ${release} has it`));

  checks.push(
    loaded
      ? ok('vfio.loaded', 'vfio-pci loaded', 'the vfio-pci driver is registered')
      : warn(
          'vfio.loaded',
          'vfio-pci loaded',
          'not loaded now (vfio-hookd loads it at the first detach)',
          'modprobe vfio-pci, and load it at boot',
        ),
  );

  const found = await bootLoad(host);
  checks.push(
    found !== null
      ? ok('vfio.boot', 'vfio-pci at boot', `loaded at boot by ${found}`)
      : warn(
          'vfio.boot',
          'vfio-pci at boot',
          'nothing loads it at boot (modules-load.d, the initramfs, the kernel command line)',
          `echo vfio-pci > /etc/modules-load.d/vfio-pci.conf${(await host.stat(host.sys('/etc/NIXOS'))) !== null ? ' (on NixOS: boot.kernelModules = [ "vfio-pci" ])' : ''}`,
        ),
  );
  return checks;
}

async function bootLoad(host: HostView): Promise<string | null> {
  for (const dir of BOOT_MODULE_FILES) {
    for (const name of (await host.list(host.sys(dir))) ?? []) {
      if (!name.endsWith('.conf')) continue;
      const text = (await host.text(host.sys(path.join(dir, name)))) ?? '';
      if (text.split('\n').some((l) => /^\s*vfio[-_]pci\s*$/.test(l))) return path.join(dir, name);
    }
  }
  for (const file of INITRAMFS_FILES) {
    const text = (await host.text(host.sys(file))) ?? '';
    const lines = text.split('\n').filter((l) => !l.trim().startsWith('#'));
    if (lines.some((l) => VFIO_MODULE.test(l))) return `${file} (the initramfs)`;
  }
  for (const dir of INITRAMFS_DIRS) {
    for (const name of (await host.list(host.sys(dir))) ?? []) {
      const text = (await host.text(host.sys(path.join(dir, name)))) ?? '';
      if (text.split('\n').some((l) => !l.trim().startsWith('#') && VFIO_MODULE.test(l))) return `${path.join(dir, name)} (the initramfs)`;
    }
  }
  const cmdline = (await host.text(path.join(host.roots.proc, 'cmdline'))) ?? '';
  const word = cmdline
    .split(/\s+/)
    .find((w) => /^(rd\.driver\.pre|modules[-_]load|rd\.modules[-_]load)=.*vfio[-_]pci/.test(w) || w.startsWith('vfio-pci.ids='));
  return word === undefined ? null : `the kernel command line (${word})`;
}

/** Scripts that write these are rebinding devices themselves: two writers to one device race. */
const REBINDS =
  /driver_override|nodedev-detach|nodedev-reattach|drivers_probe|\/unbind\b|\/bind\b|new_id|modprobe\s+-r\s+(amdgpu|nvidia|nouveau|radeon|i915)/;

/** The hooks folders libvirt reads on this system: NixOS links them from /var/lib (its /etc is read-only). */
export async function hookDirs(host: HostView): Promise<string[]> {
  return (await host.stat(host.sys('/etc/NIXOS'))) !== null ? ['/var/lib/libvirt/hooks', '/etc/libvirt/hooks'] : ['/etc/libvirt/hooks'];
}

export async function hookChecks(host: HostView): Promise<Check[]> {
  const checks: Check[] = [];
  const dirs = await hookDirs(host);
  const candidates = dirs.map((d) => path.join(d, 'qemu.d', 'vfio-hookd'));
  let hook: string | null = null;
  for (const c of candidates) if ((await host.lstat(host.sys(c))) !== null) hook = hook ?? c;
  if (hook === null) {
    checks.push(
      fail(
        'hook.present',
        'libvirt hook',
        `none at ${candidates.join(' or ')}: libvirt starts VMs without calling vfio-hookd`,
        'run install.sh again (or, on NixOS, enable services.vfio-hookd)',
      ),
    );
    return [...checks, ...(await otherHooks(host, dirs, null))];
  }
  const st = await host.stat(host.sys(hook));
  if (st === null) {
    checks.push(fail('hook.present', 'libvirt hook', `${hook} is a dangling link`, 'run install.sh again'));
    return checks;
  }
  checks.push(ok('hook.present', 'libvirt hook', `${hook}`));
  checks.push(
    (st.mode & 0o100) !== 0 && st.uid === 0
      ? ok('hook.executable', 'hook executable', 'owned by root and executable')
      : fail(
          'hook.executable',
          'hook executable',
          `${hook} is ${(st.mode & 0o100) === 0 ? 'not executable' : `owned by uid ${st.uid}, not root`}: libvirt ${(st.mode & 0o100) === 0 ? 'skips it' : 'runs it as root all the same'}`,
          `chown root:root ${hook} && chmod 0755 ${hook}`,
        ),
  );
  checks.push(await hookBusctl(host, hook));
  checks.push(await libvirtdStartedAfter(host, hook, st.mtimeMs));
  checks.push(...(await otherHooks(host, dirs, hook)));
  return checks;
}

/** The hook calls the daemon with busctl: the one it names, else the usual places (as the hook itself looks). */
async function hookBusctl(host: HostView, hook: string): Promise<Check> {
  const text = await host.read(host.sys(hook));
  if (!('text' in text)) return skip('hook.busctl', "the hook's busctl", `cannot read ${hook}`, 'run it as root');
  const named = /^BUSCTL=['"]?([^'"\n]+)['"]?\s*$/m.exec(text.text)?.[1] ?? 'busctl';
  const places = named.startsWith('/') ? [named] : [];
  places.push('/usr/bin/busctl', '/bin/busctl', '/run/current-system/sw/bin/busctl');
  for (const p of places) {
    const st = await host.stat(host.sys(p));
    if (st !== null && st.isFile() && (st.mode & 0o111) !== 0)
      return ok('hook.busctl', "the hook's busctl", p === named ? `${p}` : `${p} (the hook names ${named})`);
  }
  return fail(
    'hook.busctl',
    "the hook's busctl",
    `${named} is missing, and so is busctl in /usr/bin, /bin and /run/current-system/sw/bin: every VM with passthrough devices fails to start`,
    'install systemd (busctl), or run install.sh again so the hook names the busctl you have',
  );
}

/** libvirtd (or virtqemud) reads its hooks folder when it starts: a hook newer than the daemon is not run. */
async function libvirtdStartedAfter(host: HostView, hook: string, hookMtimeMs: number): Promise<Check> {
  const subject = 'libvirt sees the hook';
  const procDir = host.roots.proc;
  const stat = (await host.text(path.join(procDir, 'stat'))) ?? '';
  const btime = Number(/^btime (\d+)$/m.exec(stat)?.[1] ?? NaN);
  const pids = ((await host.list(procDir)) ?? []).filter((p) => /^\d+$/.test(p));
  const daemons: { name: string; startedMs: number }[] = [];
  for (const pid of pids) {
    const comm = (await host.text(path.join(procDir, pid, 'comm')))?.trim();
    if (comm !== 'libvirtd' && comm !== 'virtqemud') continue;
    const fields = (await host.text(path.join(procDir, pid, 'stat'))) ?? '';
    // Field 22 (starttime, clock ticks after boot) counts from after the ')' ending the command name.
    const after = fields.slice(fields.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(after[19]);
    // USER_HZ is 100 on every Linux architecture libvirt runs on (sysconf(_SC_CLK_TCK)).
    daemons.push({ name: comm, startedMs: Number.isFinite(btime) && Number.isFinite(ticks) ? (btime + ticks / 100) * 1000 : NaN });
  }
  if (daemons.length === 0)
    return warn(
      'hook.libvirtd',
      subject,
      'neither libvirtd nor virtqemud runs now',
      'start libvirtd (systemctl start libvirtd); it reads the hook when it starts',
    );
  const d = daemons[0]!;
  if (!Number.isFinite(d.startedMs)) return skip('hook.libvirtd', subject, `cannot read when ${d.name} started`, 'run it as root');
  return d.startedMs >= hookMtimeMs
    ? ok('hook.libvirtd', subject, `${d.name} started after ${hook} was last changed`)
    : fail(
        'hook.libvirtd',
        subject,
        `${d.name} started before ${hook} was last changed, and libvirt reads its hooks only when it starts: VMs start without vfio-hookd`,
        `restart ${d.name} once (systemctl restart ${d.name})`,
      );
}

/** The blog-era scripts: a `hooks/qemu` dispatcher and `qemu.d/<vm>/<stage>/...` scripts that rebind devices too. */
async function otherHooks(host: HostView, dirs: readonly string[], ours: string | null): Promise<Check[]> {
  const rebinding: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const name of (await host.list(host.sys(dir))) ?? []) {
      const file = path.join(dir, name);
      if (file === ours) continue;
      const st = await host.stat(host.sys(file));
      if (st === null) continue;
      if (st.isDirectory()) {
        if (depth < 4) await walk(file, depth + 1);
      } else if (st.isFile()) {
        const text = (await host.text(host.sys(file))) ?? '';
        if (REBINDS.test(text)) rebinding.push(file);
      }
    }
  };
  for (const dir of dirs) {
    const qemu = path.join(dir, 'qemu');
    const st = await host.stat(host.sys(qemu));
    if (st?.isFile() && REBINDS.test((await host.text(host.sys(qemu))) ?? '')) rebinding.push(qemu);
    await walk(path.join(dir, 'qemu.d'), 1);
  }
  return [
    rebinding.length === 0
      ? ok('hook.others', 'other hooks', 'no other hook rebinds devices')
      : fail(
          'hook.others',
          'other hooks',
          `${rebinding.join(', ')} rebind${rebinding.length === 1 ? 's' : ''} devices too: two writers to one device leave it half-bound or lock the machine`,
          'remove them (vfio-hookd does their work), or move them out of the hooks folder and restart libvirtd',
        ),
  ];
}
