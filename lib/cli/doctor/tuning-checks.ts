/**
 * The doctor's checks of a VM's host tuning (host-cpus, hugepages,
 * reset-method, Looking Glass's kvmfr): what its prepare would refuse,
 * found before `virsh start`, by reading the same files the host changes
 * read (lib/host, lib/shm/kvmfr.ts), never writing one.
 */
import path from 'node:path';

import type { VmSettings } from '../../config/index.js';
import { formatCpuList, onlineCpus, parseCpuList } from '../../host/cpu-isolation.js';
import { parseHugepages } from '../../host/hugepages.js';
import { readFileOrNull } from '../../pci/fs-reads.js';
import { pciDeviceEntry } from '../../pci/sysfs-layout.js';
import { under, type HostRoots } from '../../roots.js';
import { formatSize } from '../../shm/index.js';
import { MODPROBE_DIRS, kvmfrModuleSize, kvmfrPresent } from '../../shm/kvmfr.js';
import type { HostView } from './host-view.js';
import { fail, ok, skip, warn, type Check } from './check.js';

type Namer = (what: string) => string;

export async function tuningChecks(host: HostView, vm: VmSettings, id: Namer, subject: Namer): Promise<Check[]> {
  const { roots } = host;
  const checks: Check[] = [];
  if (vm.hostCpus !== null) checks.push(await hostCpusCheck(roots, vm, vm.hostCpus, id, subject));
  if (vm.hugepages !== null) checks.push(await hugepagesCheck(roots, vm.hugepages, id, subject));
  for (const { address, methods } of vm.resetMethods) checks.push(await resetMethodCheck(roots, vm, address, methods, id, subject));
  if (vm.lookingGlass !== null && vm.lookingGlass.kvmfr !== 'off') checks.push(await kvmfrCheck(host, vm, id, subject));
  return checks;
}

async function hostCpusCheck(roots: HostRoots, vm: VmSettings, text: string, id: Namer, subject: Namer): Promise<Check> {
  const what = subject('host-cpus');
  const online = await onlineCpus(roots.sysfs).catch(() => null);
  if (online === null)
    return skip(id('host-cpus'), what, 'cannot read the CPUs online', `check ${under(roots.sysfs, 'devices/system/cpu/online')}`);
  const cpus = parseCpuList(text);
  const missing = cpus.filter((c) => !online.includes(c));
  if (missing.length > 0) {
    return fail(
      id('host-cpus'),
      what,
      `CPU ${formatCpuList(missing)} is not online (the host has ${formatCpuList(online)}): the VM's start is refused`,
      `list only CPUs the host has in host-cpus of [vm.${vm.name}]`,
    );
  }
  const left = online.filter((c) => !cpus.includes(c));
  if (left.length === 0) {
    return fail(
      id('host-cpus'),
      what,
      "that is every CPU online, so nothing is left for the VM: the VM's start is refused",
      'leave out the CPUs the domain pins the VM to',
    );
  }
  return ok(
    id('host-cpus'),
    what,
    `the host keeps CPU ${formatCpuList(cpus)} while the VM runs; ${formatCpuList(left)} are left to the VM`,
  );
}

async function hugepagesCheck(roots: HostRoots, settings: { total: string; pageSize: string }, id: Namer, subject: Namer): Promise<Check> {
  const what = subject('hugepages');
  const { pageKiB, pages } = parseHugepages(settings);
  const pageSize = formatSize(pageKiB * 1024);
  const nr = await readFileOrNull(under(roots.sysfs, 'kernel', 'mm', 'hugepages', `hugepages-${pageKiB}kB`, 'nr_hugepages'));
  if (nr === null) {
    return fail(
      id('hugepages'),
      what,
      `this kernel has no ${pageSize} hugepages: the VM's start is refused`,
      `use a hugepage-size listed under ${under(roots.sysfs, 'kernel/mm/hugepages')}`,
    );
  }
  const meminfo = (await readFileOrNull(under(roots.proc, 'meminfo'))) ?? '';
  const available = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo);
  const need = `${pages} ${pageSize} pages (${settings.total})`;
  if (available === null) return ok(id('hugepages'), what, `reserves ${need} at start; ${nr.trim()} reserved now`);
  const availableKiB = Number(available[1]);
  return availableKiB >= pages * pageKiB
    ? ok(id('hugepages'), what, `reserves ${need} at start; ${Math.floor(availableKiB / 1024)} MiB available now`)
    : warn(
        id('hugepages'),
        what,
        `reserves ${need} at start, but only ${Math.floor(availableKiB / 1024)} MiB is available now: the start would be refused`,
        'free memory before the VM starts, or reserve the pages at boot (hugepages= on the kernel command line)',
      );
}

async function resetMethodCheck(
  roots: HostRoots,
  vm: VmSettings,
  address: string,
  methods: readonly string[],
  id: Namer,
  subject: Namer,
): Promise<Check> {
  const what = subject(`reset-method of ${address}`);
  const text = await readFileOrNull(pciDeviceEntry(roots, address, 'reset_method'));
  if (text === null) {
    return fail(
      id(`reset-method.${address}`),
      what,
      "the kernel has no reset_method for it (no such device, Linux before 5.15, or no reset method): the VM's start is refused",
      `remove it from reset-method in [vm.${vm.name}]`,
    );
  }
  const offered = text.trim().split(/\s+/).filter(Boolean);
  const missing = methods.filter((m) => !offered.includes(m));
  return missing.length === 0
    ? ok(id(`reset-method.${address}`), what, `'${methods.join(' ')}' (it offers '${offered.join(' ')}')`)
    : fail(
        id(`reset-method.${address}`),
        what,
        `it offers '${offered.join(' ')}', not '${missing.join(' ')}': the VM's start is refused`,
        'choose among those (a module such as vendor-reset adds device_specific)',
      );
}

async function kvmfrCheck(host: HostView, vm: VmSettings, id: Namer, subject: Namer): Promise<Check> {
  const { roots } = host;
  const lg = vm.lookingGlass!;
  const device = lg.kvmfr === 'auto' ? 'kvmfr0' : lg.kvmfr;
  const what = subject('kvmfr');
  if (!(await kvmfrPresent(roots, device))) {
    return lg.kvmfr === 'auto'
      ? ok(id('kvmfr'), what, `no /dev/kvmfr0: Looking Glass uses /dev/shm/${lg.name}`)
      : fail(
          id('kvmfr'),
          what,
          `${path.join(roots.dev, device)} does not exist: the VM's start is refused`,
          `load kvmfr (modprobe kvmfr static_size_mb=${lg.sizeBytes / (1024 * 1024)})`,
        );
  }
  const size = await kvmfrModuleSize(
    roots,
    Number(device.slice(5)),
    MODPROBE_DIRS.map((d) => host.sys(d)),
  ).catch(() => null);
  const uses =
    lg.kvmfr === 'auto'
      ? `${device} is there: Looking Glass uses it instead of /dev/shm/${lg.name} unless the domain maps that file`
      : `uses ${device}`;
  if (size === null)
    return warn(
      id('kvmfr'),
      what,
      `${uses}; its size is not known, so not checked`,
      `set static_size_mb in modprobe.d (options kvmfr static_size_mb=${lg.sizeBytes / (1024 * 1024)})`,
    );
  return size.bytes === lg.sizeBytes
    ? ok(id('kvmfr'), what, `${uses}; ${formatSize(size.bytes)} as configured (${size.from})`)
    : fail(
        id('kvmfr'),
        what,
        `${uses}, but kvmfr was loaded with ${formatSize(size.bytes)} for it (${size.from}), not ${formatSize(lg.sizeBytes)}: the VM's start is refused`,
        `set static_size_mb=${lg.sizeBytes / (1024 * 1024)} and reload kvmfr, or set kvmfr = "off"`,
      );
}
