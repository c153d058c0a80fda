/**
 * CPU isolation while a VM runs: `system.slice`, `user.slice` and
 * `init.scope` are restricted to the host's CPUs with a runtime
 * `SetUnitProperties(AllowedCPUs=...)`, systemd's own way on cgroup v2 (it
 * writes `cpuset.cpus` of those cgroups and keeps it across daemon-reload;
 * `--runtime` keeps it out of /etc, so a reboot forgets it).
 *
 * The record holds each unit's AllowedCPUs as it was (empty = every CPU, the
 * default) and undo writes exactly that back: an empty array resets the
 * property, as `systemctl set-property --runtime UNIT AllowedCPUs=` does.
 *
 * On the bus AllowedCPUs is an `ay` bitmask: byte i, bit j is CPU 8*i+j
 * (systemd's `cpu_set_to_dbus()` and `cpu_set_from_dbus()` in
 * src/shared/cpu-set-util.c: `out[cpu / 8] |= 1u << (cpu % 8)`), and an empty
 * array is the empty set, which for AllowedCPUs means "no restriction".
 */
import * as v from 'valibot';

import { HostDependency, InvalidConfig, q } from '../errors.js';
import { checkedRecord } from './host-change.js';
import { readFileOrNull } from '../pci/fs-reads.js';
import { under } from '../roots.js';
import type { HostChange, HostChangeRecord, HostContext, SystemdManager } from './host-change.js';

/** The units whose processes are the host's: everything but the VM's own scope (machine.slice). */
/** The record kind (lib/host/undo.ts finds the undo by it). */
export const CPU_ISOLATION_KIND = 'cpu-isolation';

export const ISOLATED_UNITS = [
  { name: 'system.slice', iface: 'org.freedesktop.systemd1.Slice' },
  { name: 'user.slice', iface: 'org.freedesktop.systemd1.Slice' },
  { name: 'init.scope', iface: 'org.freedesktop.systemd1.Scope' },
] as const;

/** The kernel's CPU numbers are below NR_CPUS (at most 8192 in distribution kernels); more is a typo. */
const MAX_CPU = 8191;

export interface CpuIsolationSettings {
  /** The CPUs the host keeps while the VM runs, a cpulist such as `"0-3,8-11"` (the configuration's `host-cpus`). */
  readonly hostCpus: string;
}

export interface CpuIsolationRecord extends HostChangeRecord {
  readonly kind: 'cpu-isolation';
  /** The CPUs apply gives the host's units. */
  readonly hostCpus: readonly number[];
  /** Each unit's AllowedCPUs before (`[]` = not set: every CPU). */
  readonly units: readonly { readonly name: string; readonly iface: string; readonly allowedCpus: readonly number[] }[];
}

const CPU = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_CPU));
/** What undo trusts of a record read back from state.json (a boundary: the file may be damaged or edited). */
const RECORD_SCHEMA = v.object({
  kind: v.literal('cpu-isolation'),
  hostCpus: v.array(CPU),
  units: v.pipe(
    v.array(
      v.object({
        name: v.picklist(ISOLATED_UNITS.map((u) => u.name)),
        iface: v.picklist(ISOLATED_UNITS.map((u) => u.iface)),
        allowedCpus: v.array(CPU),
      }),
    ),
    v.maxLength(ISOLATED_UNITS.length),
  ),
});

/**
 * Parse a cpulist as the kernel writes and reads them (`0-3,8-11`,
 * `0,2,4`, `0-15:2` for every second CPU, as bitmap_parselist() takes):
 * sorted, without duplicates.
 *
 * @throws InvalidConfig for anything else, or an empty list.
 */
export function parseCpuList(text: string, what = 'host-cpus'): number[] {
  if (typeof text !== 'string' || text.trim() === '') {
    throw new InvalidConfig(`Invalid ${what} ${q(text)}: expected a CPU list such as '0-3,8-11', refusing`);
  }
  const cpus = new Set<number>();
  for (const part of text.trim().split(',')) {
    const m = /^(\d+)(?:-(\d+)(?::(\d+))?)?$/.exec(part.trim());
    if (!m) {
      throw new InvalidConfig(`Invalid ${what} ${q(text)}: ${q(part)} is not a CPU or a range such as '8-11', refusing`);
    }
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    const step = m[3] === undefined ? 1 : Number(m[3]);
    if (last < first) throw new InvalidConfig(`Invalid ${what} ${q(text)}: range ${q(part)} runs backwards, refusing`);
    if (last > MAX_CPU) throw new InvalidConfig(`Invalid ${what} ${q(text)}: CPU ${last} is above ${MAX_CPU}, refusing`);
    if (step < 1) throw new InvalidConfig(`Invalid ${what} ${q(text)}: the step in ${q(part)} must be at least 1, refusing`);
    for (let c = first; c <= last; c += step) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** The shortest cpulist for a set: `[0,1,2,3,8]` -> `0-3,8`; `''` for none. */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** A CPU set as systemd's `ay` (see the file comment): byte i, bit j is CPU 8*i+j. */
export function cpusToDbus(cpus: readonly number[]): Buffer {
  const max = cpus.length === 0 ? -1 : Math.max(...cpus);
  const out = Buffer.alloc(max < 0 ? 0 : Math.floor(max / 8) + 1);
  for (const c of cpus) out[Math.floor(c / 8)]! |= 1 << (c % 8);
  return out;
}

/** systemd's `ay` back to a sorted CPU list. Takes a Buffer, a Uint8Array or a number array (what buses hand back). */
export function cpusFromDbus(value: unknown): number[] {
  let bytes: readonly number[];
  if (value instanceof Uint8Array) bytes = [...value];
  else if (Array.isArray(value) && value.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) bytes = value as number[];
  else throw new TypeError(`AllowedCPUs is not a byte array: ${q(JSON.stringify(value))}`);
  const cpus: number[] = [];
  bytes.forEach((b, i) => {
    for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) cpus.push(i * 8 + bit);
  });
  return cpus;
}

/** The CPUs the kernel has online (`<sysfs>/devices/system/cpu/online`), or null when it cannot be read. */
export async function onlineCpus(sysfs: string): Promise<number[] | null> {
  const text = await readFileOrNull(under(sysfs, 'devices', 'system', 'cpu', 'online'));
  return text === null || text.trim() === '' ? null : parseCpuList(text, 'online CPU list');
}

function needSystemd(context: HostContext, doing: string): SystemdManager {
  if (context.systemd === null) {
    throw new HostDependency(
      `Cannot ${doing}: there is no systemd manager on the system bus (AllowedCPUs is systemd's); run under systemd or remove host-cpus, refusing`,
    );
  }
  return context.systemd;
}

function sameCpus(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((c, i) => c === b[i]);
}

/**
 * Plan the isolation: check the CPU list against the CPUs online, then read
 * each unit's AllowedCPUs into the record. Nothing is changed.
 *
 * @throws InvalidConfig for a bad list, CPUs the host does not have, or all of them (nothing left for the VM).
 * @throws HostDependency without a systemd manager.
 */
export async function planCpuIsolation(settings: CpuIsolationSettings, context: HostContext): Promise<HostChange<CpuIsolationRecord>> {
  const hostCpus = parseCpuList(settings.hostCpus);
  const online = await onlineCpus(context.roots.sysfs);
  if (online === null) {
    throw new InvalidConfig(
      `Cannot check host-cpus ${q(settings.hostCpus)}: ${q(under(context.roots.sysfs, 'devices', 'system', 'cpu', 'online'))} cannot be read, refusing`,
    );
  }
  const missing = hostCpus.filter((c) => !online.includes(c));
  if (missing.length > 0) {
    throw new InvalidConfig(
      `Invalid host-cpus ${q(settings.hostCpus)}: CPU ${formatCpuList(missing)} is not online (the host has ${formatCpuList(online)}); ` +
        `list only CPUs the host has, refusing`,
    );
  }
  if (sameCpus(hostCpus, online)) {
    throw new InvalidConfig(
      `Invalid host-cpus ${q(settings.hostCpus)}: that is every CPU the host has, so nothing would be kept for the VM; ` +
        `leave out the CPUs the VM is pinned to, refusing`,
    );
  }
  const systemd = needSystemd(context, 'isolate the host on its CPUs');
  const units = [];
  for (const u of ISOLATED_UNITS) {
    units.push({ name: u.name, iface: u.iface, allowedCpus: cpusFromDbus(await systemd.unitProperty(u.name, u.iface, 'AllowedCPUs')) });
  }
  const record: CpuIsolationRecord = { kind: 'cpu-isolation', hostCpus, units };
  return {
    record,
    describe: `restrict ${ISOLATED_UNITS.map((u) => u.name).join(', ')} to CPUs ${formatCpuList(hostCpus)}`,
    phase: 'after-detach',
    apply: () => applyAllowedCpus(systemd, record.units, () => hostCpus),
  };
}

/** Set each unit's AllowedCPUs and read it back; throw a sentence when systemd did not take it. */
async function applyAllowedCpus(
  systemd: SystemdManager,
  units: CpuIsolationRecord['units'],
  wanted: (u: CpuIsolationRecord['units'][number]) => readonly number[],
): Promise<void> {
  for (const u of units) {
    const cpus = wanted(u);
    await systemd.setRuntimeProperty(u.name, 'AllowedCPUs', 'ay', cpusToDbus(cpus));
    const got = cpusFromDbus(await systemd.unitProperty(u.name, u.iface, 'AllowedCPUs'));
    if (!sameCpus(got, cpus)) {
      throw new HostDependency(
        `Cannot set AllowedCPUs of ${q(u.name)} to ${q(formatCpuList(cpus) || '(all)')}: systemd reads back ${q(formatCpuList(got) || '(all)')}; ` +
          `check that the cpuset controller is available (cgroup v2), refusing`,
      );
    }
  }
}

/**
 * Put each unit's AllowedCPUs back as the record found it (an empty list
 * resets the property). Idempotent: it sets values, it does not subtract.
 */
export async function undoCpuIsolation(record: HostChangeRecord, context: HostContext): Promise<void> {
  const r = checkedRecord(
    RECORD_SCHEMA,
    record,
    "the host's units' AllowedCPUs: reset them with 'systemctl set-property --runtime system.slice AllowedCPUs=' (and user.slice, init.scope)",
  );
  const systemd = needSystemd(context, `give ${r.units.map((u) => u.name).join(', ')} their CPUs back`);
  await applyAllowedCpus(systemd, r.units, (u) => u.allowedCpus);
}
