/**
 * A simulated host's `/` set up as a careful user sets it up, for
 * `vfio-hookctl doctor`: AMD with amd_iommu=on iommu=pt, vfio-pci loaded at
 * boot, the hook (root's, executable, its busctl present), libvirtd started
 * after the hook was written, libvirt-dbus, the win10 VM configured and
 * defined, RemoveIPC=no, the agent enabled for every user. The doctor tests
 * break one of these per test.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { WIN10_CONFIG, WIN10_XML } from './win10.js';

/** The simulated boot time (proc/stat btime). */
export const BTIME = 1_764_000_000;

export type Write = (relative: string, text: string, mode?: number) => Promise<void>;

export interface DoctorHost {
  write: Write;
  remove(relative: string): Promise<void>;
}

/** Write `dir`'s etc/, usr/, var/ and the proc/ and sys/ files the doctor reads beyond lib/sim's. */
export async function setUpRight(dir: string, config = `[daemon]\nqemu-user = "root"\n${WIN10_CONFIG}`): Promise<DoctorHost> {
  const write: Write = async (relative, text, mode = 0o644) => {
    const file = path.join(dir, relative);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, text, { mode });
    await fs.chmod(file, mode);
  };
  await write('proc/cmdline', 'BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 amd_iommu=on iommu=pt\n');
  await write('proc/cpuinfo', 'processor\t: 0\nvendor_id\t: AuthenticAMD\n');
  await write('proc/sys/kernel/osrelease', '6.12.0-test\n');
  await write('proc/stat', `cpu 0 0 0 0\nbtime ${BTIME}\n`);
  await fs.mkdir(path.join(dir, 'sys/class/iommu/ivhd0'), { recursive: true });
  await write('etc/modules-load.d/vfio.conf', '# passthrough\nvfio-pci\n');
  await write('usr/bin/busctl', '#!/bin/sh\n', 0o755);
  await write('etc/libvirt/hooks/qemu.d/vfio-hookd', "#!/bin/sh\nBUSCTL='/usr/bin/busctl'\n", 0o755);
  // The hook was written 100 s after boot; libvirtd (pid 900) started 200 s after boot.
  await fs.utimes(path.join(dir, 'etc/libvirt/hooks/qemu.d/vfio-hookd'), BTIME + 100, BTIME + 100);
  await libvirtd(write, 200);
  await write('usr/share/dbus-1/system-services/org.libvirt.service', '[D-BUS Service]\nName=org.libvirt\n');
  await write('etc/vfio-hookd/vfio-hookd.toml', config);
  await write('etc/libvirt/qemu/win10.xml', WIN10_XML);
  await write('etc/systemd/logind.conf.d/vfio-hookd.conf', '[Login]\nRemoveIPC=no\n');
  await fs.mkdir(path.join(dir, 'etc/systemd/user/default.target.wants'), { recursive: true });
  await fs.symlink(
    '/usr/lib/systemd/user/vfio-hookd-agent.service',
    path.join(dir, 'etc/systemd/user/default.target.wants/vfio-hookd-agent.service'),
  );
  return { write, remove: (relative) => fs.rm(path.join(dir, relative), { recursive: true, force: true }) };
}

/** A libvirtd (or virtqemud) process, pid 900, started `secondsAfterBoot` after BTIME (starttime is /proc/PID/stat field 22, in 1/100 s). */
export async function libvirtd(write: Write, secondsAfterBoot: number, comm = 'libvirtd'): Promise<void> {
  const fields = [
    'S',
    '1',
    '900',
    '900',
    '0',
    '-1',
    '4194560',
    '0',
    '0',
    '0',
    '0',
    '0',
    '0',
    '0',
    '0',
    '20',
    '0',
    '1',
    '0',
    String(secondsAfterBoot * 100),
  ];
  await write('proc/900/comm', `${comm}\n`);
  await write('proc/900/stat', `900 (${comm}) ${fields.join(' ')} 0 0\n`);
}
