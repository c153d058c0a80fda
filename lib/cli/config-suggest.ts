/**
 * `vfio-hookctl config suggest VM`: from the domain libvirt has, the
 * `[vm.VM]` table vfio-hookd needs (its PCI hostdevs by address, its shm
 * sizes from `<shmem>`, a user to fill in) and the changes its XML needs
 * (`managed='no'` on every PCI hostdev, so libvirt does not detach them
 * itself, racing the daemon). Prints them; writes nothing unless `--write`
 * is given, and then only appends the table, checked by the daemon's own
 * parser first, to a file that does not have it yet.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseConfig } from '../config/index.js';
import { parseDomainXml, type DomainInfo } from '../domain/index.js';
import { InvalidArgs, InvalidConfig, q } from '../errors.js';
import type { HostView } from './doctor/host-view.js';
import { readDomain } from './domain-source.js';

const MiB = 1024 * 1024;

export interface Suggestion {
  readonly vm: string;
  /** Where the XML came from. */
  readonly from: string;
  /** The TOML table to add. */
  readonly table: string;
  /** Changes the XML needs, one sentence each ([] when none). */
  readonly xmlChanges: string[];
}

/** A TOML table key: bare when it can be. */
function key(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
}

function size(bytes: number): string {
  return bytes % MiB === 0 ? `"${bytes / MiB}M"` : `${bytes}`;
}

export function suggestTable(info: DomainInfo, from: string, user: string | null): Suggestion {
  const vm = info.name;
  const lines = [`[vm.${key(vm)}]`];
  const addresses = info.hostdevs.map((h) => h.address);
  lines.push(`devices = [${addresses.map((a) => JSON.stringify(a)).join(', ')}]`);
  lines.push(user === null ? '# user = "you"  # who owns the shm files and runs the units' : `user = ${JSON.stringify(user)}`);
  // Scream's file is the one named for it; Looking Glass's the one named for it, else the other <shmem> (its name is free).
  const scream = info.shmems.find((s) => /scream/i.test(s.name));
  const others = info.shmems.filter((s) => s !== scream);
  const lg = others.find((s) => /looking-?glass/i.test(s.name)) ?? others[0];
  if (lg !== undefined) {
    lines.push('', `[vm.${key(vm)}.looking-glass]`);
    if (lg.name !== 'looking-glass') lines.push(`name = ${JSON.stringify(lg.name)}`);
    lines.push(`size = ${lg.sizeBytes === null ? '"32M"  # the XML gives none; 32M fits 1920x1080' : size(lg.sizeBytes)}`);
  }
  if (scream !== undefined) {
    lines.push('', `[vm.${key(vm)}.scream]`);
    if (scream.name !== 'scream') lines.push(`name = ${JSON.stringify(scream.name)}`);
    if (scream.sizeBytes !== null) lines.push(`size = ${size(scream.sizeBytes)}`);
  }
  const xmlChanges = info.hostdevs
    .filter((h) => h.managed)
    .map((h) => `<hostdev> ${h.address}: set managed='no' (libvirt would detach it itself, racing vfio-hookd)`);
  if (addresses.length === 0 && info.shmems.length === 0)
    xmlChanges.push(
      `the domain has no PCI <hostdev> and no <shmem>: vfio-hookd has nothing to do for it; add the GPU's functions as <hostdev mode='subsystem' type='pci' managed='no'>`,
    );
  return { vm, from, table: lines.join('\n') + '\n', xmlChanges };
}

export async function suggest(host: HostView, connect: string | null, vm: string, user: string | null): Promise<Suggestion> {
  const got = await readDomain(host, connect, vm);
  if ('error' in got)
    throw new InvalidArgs(`Cannot read the domain ${q(vm)}: ${got.error}; name libvirt with --connect qemu:///system, or run as root`);
  return suggestTable(parseDomainXml(got.xml), got.from, user);
}

export function formatSuggestion(s: Suggestion, configPath: string): string {
  const out = [`# [vm.${key(s.vm)}] for ${configPath}, from ${s.from}:`, '', s.table.trimEnd(), ''];
  if (s.xmlChanges.length > 0) out.push(`# Change in the domain XML (virsh edit ${s.vm}):`, ...s.xmlChanges.map((c) => `#   ${c}`), '');
  out.push(`# Add it with: vfio-hookctl config suggest ${s.vm} --write`);
  return out.join('\n') + '\n';
}

/**
 * Append the table to `configPath`, refusing when the file already has the
 * VM or the result would not load; the file keeps its owner and mode, and
 * is replaced by rename, so the daemon's watcher sees one change.
 */
export async function appendTable(configPath: string, s: Suggestion): Promise<void> {
  const before = await fs.readFile(configPath, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const current = before === '' ? null : parseConfig(before, configPath);
  if (current?.vms.has(s.vm)) throw new InvalidArgs(`${q(configPath)} already has [vm.${key(s.vm)}]; edit it there, refusing`);
  const next = `${before}${before === '' || before.endsWith('\n\n') ? '' : before.endsWith('\n') ? '\n' : '\n\n'}# Suggested by vfio-hookctl config suggest from ${s.from}\n${s.table}`;
  try {
    parseConfig(next, configPath);
  } catch (error) {
    throw new InvalidConfig(`The suggested table would not load: ${(error as Error).message}; nothing written`);
  }
  const st = await fs.stat(configPath).catch(() => null);
  await fs.mkdir(path.dirname(configPath), { recursive: true });
  const temp = path.join(path.dirname(configPath), `.${path.basename(configPath)}.suggest-${process.pid}`);
  try {
    await fs.writeFile(temp, next, { mode: st?.mode ?? 0o644, flag: 'wx' });
    if (st !== null) await fs.chown(temp, st.uid, st.gid);
    await fs.rename(temp, configPath);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}
