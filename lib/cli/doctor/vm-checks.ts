/**
 * The doctor's checks of one configured VM: its domain in libvirt (when
 * there is one to read), its accounts and shm files, the room for them, the
 * logind setting that would delete them, the dry run of its detach, the
 * agent that starts its units, the identical card beside its own, and its
 * host tuning (tuning-checks.ts).
 *
 * Everything here only reads. The domain comes from libvirt when the CLI may
 * ask it (virsh dumpxml), else from libvirt's own saved definition
 * (`/etc/libvirt/qemu/NAME.xml`, root only); the daemon never asks libvirt
 * during a hook, the doctor may.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Config, VmSettings } from '../../config/index.js';
import { DEFAULT_QEMU_USERS } from '../../config/index.js';
import { parseDomainXml, type DomainInfo } from '../../domain/index.js';
import { isDisplay } from '../../pci/class-code.js';
import type { HostSnapshot } from '../../pci/host-snapshot.js';
import { vmOwner } from '../../pci/owner.js';
import { planDetach } from '../../pci/plan.js';
import type { Claim } from '../../pci/plan.js';
import { resolvePrimaryGid, resolveGid, resolveUid, type AccountLookupOptions } from '../../shm/index.js';
import { fail, ok, skip, warn, type Check } from './check.js';
import { iniValue, type HostView } from './host-view.js';
import { readDomain } from '../domain-source.js';
import { tuningChecks } from './tuning-checks.js';

const exec = promisify(execFile);

export interface VmCheckContext {
  readonly host: HostView;
  readonly config: Config;
  /** The host's devices; null when they could not be read. */
  readonly snapshot: HostSnapshot | null;
  readonly claims: ReadonlyMap<string, Claim>;
  /** The libvirt URI to ask for domains (`virsh --connect`), or null to read only libvirt's saved definitions. */
  readonly connect: string | null;
  readonly accounts: AccountLookupOptions;
}

const MiB = 1024 * 1024;
const size = (bytes: number): string => (bytes % MiB === 0 ? `${bytes / MiB} MiB` : `${bytes} bytes`);

export async function vmChecks(ctx: VmCheckContext, vm: VmSettings): Promise<Check[]> {
  const id = (what: string): string => `vm.${vm.name}.${what}`;
  const subject = (what: string): string => `${vm.name}: ${what}`;
  const checks: Check[] = [];
  checks.push(...(await domainChecks(ctx, vm, id, subject)));
  checks.push(...(await accountChecks(ctx, vm, id, subject)));
  checks.push(await shmRoom(ctx, vm, id, subject));
  const removeIpc = await removeIpcCheck(ctx, vm, id, subject);
  if (removeIpc !== null) checks.push(removeIpc);
  checks.push(planCheck(ctx, vm, id, subject));
  checks.push(...twinChecks(ctx, vm, id, subject));
  if (vm.units.length > 0) checks.push(await agentCheck(ctx, vm, id, subject));
  checks.push(...(await tuningChecks(ctx.host, vm, id, subject)));
  return checks;
}

type Namer = (what: string) => string;

async function domainChecks(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Promise<Check[]> {
  const got = await readDomain(ctx.host, ctx.connect, vm.name);
  if ('error' in got) {
    return got.skip
      ? [skip(id('domain'), subject('libvirt domain'), got.error, `run as root, or name libvirt with --connect qemu:///system`)]
      : [
          fail(
            id('domain'),
            subject('libvirt domain'),
            got.error,
            `define it (virsh define), or rename [vm.${vm.name}] to the domain's name (virsh list --all)`,
          ),
        ];
  }
  let info: DomainInfo;
  try {
    info = parseDomainXml(got.xml);
  } catch (error) {
    return [
      fail(
        id('domain'),
        subject('libvirt domain'),
        `its XML from ${got.from} does not parse: ${(error as Error).message}`,
        'virsh edit it',
      ),
    ];
  }
  const checks: Check[] = [ok(id('domain'), subject('libvirt domain'), `defined (read from ${got.from})`)];
  const byAddress = new Map(info.hostdevs.map((h) => [h.address, h]));

  const managed = info.hostdevs.filter((h) => h.managed && vm.devices.includes(h.address));
  checks.push(
    managed.length === 0
      ? ok(id('managed'), subject("managed='no'"), 'no configured device is managed by libvirt')
      : fail(
          id('managed'),
          subject("managed='no'"),
          `${managed.map((h) => h.address).join(', ')} ${managed.length === 1 ? 'is' : 'are'} managed='yes': libvirt would detach ${managed.length === 1 ? 'it' : 'them'} itself, racing vfio-hookd`,
          `set managed='no' on ${managed.length === 1 ? 'that <hostdev>' : 'those <hostdev>s'} (virsh edit ${vm.name})`,
        ),
  );

  // Every function of each configured card: a GPU passed without its HDMI audio (or USB-C) leaves the VM a card it cannot fully drive.
  const missing = new Set<string>();
  for (const address of vm.devices) {
    if (!byAddress.has(address)) missing.add(address);
    const slot = address.slice(0, -2);
    for (const other of ctx.snapshot?.devices.keys() ?? [])
      if (other.startsWith(slot + '.') && !byAddress.has(other) && !ctx.snapshot!.devices.get(other)!.isBridge) missing.add(other);
  }
  checks.push(
    missing.size === 0
      ? ok(
          id('functions'),
          subject('functions in the XML'),
          `every function of the configured cards is a <hostdev> (${vm.devices.length} configured)`,
        )
      : warn(
          id('functions'),
          subject('functions in the XML'),
          `${[...missing].sort().join(', ')} ${missing.size === 1 ? 'is' : 'are'} detached for it but not in its XML: the guest does not get ${missing.size === 1 ? 'it' : 'them'}`,
          `add a <hostdev mode='subsystem' type='pci' managed='no'> for each (virsh edit ${vm.name})`,
        ),
  );

  const shm = [
    ...(vm.lookingGlass ? [{ what: 'Looking Glass', ...vm.lookingGlass }] : []),
    ...(vm.scream ? [{ what: 'Scream', ...vm.scream }] : []),
  ];
  const problems: string[] = [];
  for (const file of shm) {
    const shmem = info.shmems.find((s) => s.name === file.name);
    if (shmem === undefined) problems.push(`no <shmem name='${file.name}'> for ${file.what}`);
    else if (shmem.sizeBytes !== null && shmem.sizeBytes !== file.sizeBytes)
      problems.push(`<shmem name='${file.name}'> is ${size(shmem.sizeBytes)}, the configuration says ${size(file.sizeBytes)}`);
  }
  if (shm.length > 0)
    checks.push(
      problems.length === 0
        ? ok(id('shmem'), subject('<shmem> sizes'), 'every shm file of the configuration is a <shmem> of the same size')
        : fail(
            id('shmem'),
            subject('<shmem> sizes'),
            problems.join('; '),
            `make the XML's <shmem> and [vm.${vm.name}] agree (virsh edit ${vm.name})`,
          ),
    );
  return checks;
}

/** The user QEMU runs as: the configuration's `qemu-user`, else libvirt's qemu.conf `user`, else the distribution's that exists. */
async function qemuUser(ctx: VmCheckContext): Promise<string | null> {
  if (ctx.config.daemon.qemuUser !== null) return ctx.config.daemon.qemuUser;
  const conf = (await ctx.host.text(ctx.host.sys('/etc/libvirt/qemu.conf'))) ?? '';
  const m = /^\s*user\s*=\s*"([^"]+)"/m.exec(conf);
  if (m) return m[1]!.replace(/^\+/, '');
  for (const u of DEFAULT_QEMU_USERS) if ((await resolveUid(u, ctx.accounts).catch(() => null)) !== null) return u;
  return null;
}

async function groupsOf(user: string): Promise<number[] | null> {
  try {
    const { stdout } = await exec('id', ['-G', '--', user], { timeout: 5000 });
    return stdout.trim().split(/\s+/).map(Number);
  } catch {
    return null;
  }
}

async function accountChecks(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Promise<Check[]> {
  const checks: Check[] = [];
  if (vm.user === null) {
    if (vm.lookingGlass || vm.scream || vm.units.length > 0)
      checks.push(
        fail(
          id('user'),
          subject('user'),
          'no user is set, but it has shm files or units, which belong to a user',
          `set user = "NAME" in [vm.${vm.name}]`,
        ),
      );
    return checks;
  }
  const uid = await resolveUid(vm.user, ctx.accounts).catch((e: Error) => e);
  if (uid instanceof Error) {
    checks.push(fail(id('user'), subject('user'), uid.message, `create the user, or fix user = in [vm.${vm.name}]`));
    return checks;
  }
  checks.push(ok(id('user'), subject('user'), `'${vm.user}' is uid ${uid}`));
  const files = [
    ...(vm.lookingGlass ? [vm.lookingGlass] : []),
    ...(vm.scream ? [{ ...vm.scream, group: vm.scream.group ?? vm.lookingGlass?.group ?? null }] : []),
  ];
  if (files.length === 0) return checks;
  const qemu = await qemuUser(ctx);
  const qemuUid = qemu === null ? null : await resolveUid(qemu, ctx.accounts).catch(() => null);
  const qemuGroups = qemu === null ? null : await groupsOf(qemu);
  for (const file of files) {
    const what = `/dev/shm/${file.name}`;
    const gid =
      file.group === null
        ? await resolvePrimaryGid(vm.user, ctx.accounts).catch(() => null)
        : await resolveGid(file.group, ctx.accounts).catch((e: Error) => e);
    if (gid instanceof Error) {
      checks.push(fail(id(`group.${file.name}`), subject(`group of ${what}`), gid.message, `create the group, or fix group = for ${what}`));
      continue;
    }
    if (qemu === null || qemuUid === null || qemuGroups === null) {
      checks.push(
        skip(id(`access.${file.name}`), subject(`QEMU opens ${what}`), 'cannot tell which user QEMU runs as', 'set qemu-user in [daemon]'),
      );
      continue;
    }
    const existing = await fs.stat(path.join(ctx.host.roots.shm, file.name)).catch(() => null);
    // What the file is (if it exists and is the daemon's) or will be: owner the user, group the configured or the user's, the configured mode.
    const mode = existing?.mode ?? file.mode;
    const fileUid = existing?.uid ?? uid;
    const fileGid = existing?.gid ?? gid;
    const can =
      qemuUid === 0 ||
      (qemuUid === fileUid && (mode & 0o600) === 0o600) ||
      (fileGid !== null && qemuGroups.includes(fileGid) && (mode & 0o060) === 0o060) ||
      (mode & 0o006) === 0o006;
    checks.push(
      can
        ? ok(id(`access.${file.name}`), subject(`QEMU opens ${what}`), `QEMU runs as '${qemu}', which may read and write it`)
        : fail(
            id(`access.${file.name}`),
            subject(`QEMU opens ${what}`),
            `QEMU runs as '${qemu}', which may not read and write it (owner uid ${fileUid}, group ${fileGid ?? '?'}, mode ${(mode & 0o777).toString(8).padStart(4, '0')}): the VM fails to start`,
            `set group = "${qemu === 'libvirt-qemu' ? 'kvm' : qemu}" (a group ${qemu} is in) for it in [vm.${vm.name}], or add ${qemu} to group ${fileGid ?? 'of the file'}`,
          ),
    );
  }
  return checks;
}

async function shmRoom(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Promise<Check> {
  const files = [...(vm.lookingGlass ? [vm.lookingGlass] : []), ...(vm.scream ? [vm.scream] : [])];
  let needed = 0;
  for (const f of files) {
    const st = await fs.stat(path.join(ctx.host.roots.shm, f.name)).catch(() => null);
    needed += Math.max(0, f.sizeBytes - (st?.size ?? 0));
  }
  if (files.length === 0) return ok(id('shm-room'), subject('room in /dev/shm'), 'it has no shm files');
  const fsStat = await fs.statfs(ctx.host.roots.shm).catch(() => null);
  if (fsStat === null)
    return skip(id('shm-room'), subject('room in /dev/shm'), `cannot read the free space of ${ctx.host.roots.shm}`, 'run it as root');
  const free = fsStat.bavail * fsStat.bsize;
  return free >= needed
    ? ok(id('shm-room'), subject('room in /dev/shm'), `${size(needed)} still to create, ${Math.floor(free / MiB)} MiB free`)
    : fail(
        id('shm-room'),
        subject('room in /dev/shm'),
        `${size(needed)} still to create but only ${Math.floor(free / MiB)} MiB free in ${ctx.host.roots.shm}`,
        'free memory in /dev/shm, or make it larger (mount -o remount,size=... /dev/shm)',
      );
}

/** logind's RemoveIPC= (default yes) deletes a regular user's /dev/shm files when their last session ends. */
async function removeIpcCheck(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Promise<Check | null> {
  if (vm.user === null || (!vm.lookingGlass && !vm.scream)) return null;
  const uid = await resolveUid(vm.user, ctx.accounts).catch(() => null);
  if (uid === null) return null;
  const texts: string[] = [];
  const main = await ctx.host.text(ctx.host.sys('/etc/systemd/logind.conf'));
  if (main !== null) texts.push(main);
  for (const dir of ['/usr/lib/systemd/logind.conf.d', '/etc/systemd/logind.conf.d', '/run/systemd/logind.conf.d'])
    for (const name of (await ctx.host.list(ctx.host.sys(dir))) ?? [])
      if (name.endsWith('.conf')) texts.push((await ctx.host.text(ctx.host.sys(path.join(dir, name)))) ?? '');
  const value = (iniValue(texts, 'RemoveIPC') ?? 'yes').toLowerCase();
  const removes = ['yes', 'true', '1', 'on'].includes(value);
  // systemd spares root and system users (uid below SYS_UID_MAX, 999 on most distributions) and lingering users.
  const lingering = (await ctx.host.stat(ctx.host.sys(path.join('/var/lib/systemd/linger', vm.user)))) !== null;
  if (!removes) return ok(id('remove-ipc'), subject("logind's RemoveIPC"), `RemoveIPC=${value}: logind leaves the shm files alone`);
  if (uid < 1000) return ok(id('remove-ipc'), subject("logind's RemoveIPC"), `'${vm.user}' is a system user, which RemoveIPC spares`);
  if (lingering) return ok(id('remove-ipc'), subject("logind's RemoveIPC"), `'${vm.user}' lingers, so logind never removes their IPC`);
  return warn(
    id('remove-ipc'),
    subject("logind's RemoveIPC"),
    `RemoveIPC=yes: when '${vm.user}' logs out fully, logind deletes their /dev/shm files while the VM may still use them`,
    `set RemoveIPC=no in /etc/systemd/logind.conf.d/vfio-hookd.conf, or loginctl enable-linger ${vm.user}`,
  );
}

function planCheck(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Check {
  if (vm.devices.length === 0) return ok(id('plan'), subject('detach (dry run)'), 'no devices configured');
  if (ctx.snapshot === null) return skip(id('plan'), subject('detach (dry run)'), 'cannot read the host devices', 'run it as root');
  try {
    const plan = planDetach(ctx.snapshot, vm.devices, { owner: vmOwner(vm.name), claims: ctx.claims, force: vm.force });
    const moving = plan.devices.filter((d) => d.changes);
    return ok(
      id('plan'),
      subject('detach (dry run)'),
      moving.length === 0
        ? `nothing to move: ${plan.devices.map((d) => d.address).join(', ')} already on vfio-pci`
        : `would move ${moving.map((d) => `${d.address} (${d.driver ?? 'no driver'})`).join(', ')} to vfio-pci`,
    );
  } catch (error) {
    return fail(id('plan'), subject('detach (dry run)'), (error as Error).message, 'fix what the sentence names, then run doctor again');
  }
}

/** Identical cards (same vendor:device): say which one is the VM's and what the other is, since only the address tells them apart. */
function twinChecks(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Check[] {
  if (ctx.snapshot === null) return [];
  const checks: Check[] = [];
  for (const address of vm.devices) {
    const mine = ctx.snapshot.devices.get(address);
    if (mine === undefined || !isDisplay(mine.classCode)) continue;
    const twins = [...ctx.snapshot.devices.values()].filter(
      (d) => d.address !== address && d.vendorId === mine.vendorId && d.deviceId === mine.deviceId && !vm.devices.includes(d.address),
    );
    if (twins.length === 0) continue;
    const describe = (d: typeof mine): string =>
      `${d.address} (rev ${d.revision ?? '?'}, subsystem ${d.subsystemVendorId ?? '?'}:${d.subsystemDeviceId ?? '?'}${d.bootVga ? ', the boot VGA' : ''}, on ${d.driver ?? 'no driver'})`;
    checks.push(
      mine.bootVga
        ? warn(
            id(`twin.${address}`),
            subject(`identical card to ${address}`),
            `the VM's card ${describe(mine)} is the boot VGA, and ${twins.map(describe).join(', ')} ${twins.length === 1 ? 'is' : 'are'} the same model`,
            "check the address: the boot VGA is usually the host's display (lspci -nn -s ADDRESS)",
          )
        : ok(
            id(`twin.${address}`),
            subject(`identical card to ${address}`),
            `${twins.map(describe).join(', ')} ${twins.length === 1 ? 'is' : 'are'} the same model as the VM's ${describe(mine)}; the address names the VM's`,
          ),
    );
  }
  return checks;
}

async function agentCheck(ctx: VmCheckContext, vm: VmSettings, id: Namer, subject: Namer): Promise<Check> {
  const unit = 'vfio-hookd-agent.service';
  const places = ['/etc/systemd/user/default.target.wants', '/usr/lib/systemd/user/default.target.wants'];
  for (const p of places)
    if ((await ctx.host.lstat(ctx.host.sys(path.join(p, unit)))) !== null)
      return ok(id('agent'), subject('user agent'), `enabled for every user (${p})`);
  const home =
    vm.user === null
      ? null
      : /^[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:([^:]*):/m.exec(
          ((await ctx.host.text(ctx.host.sys('/etc/passwd'))) ?? '').split('\n').find((l) => l.startsWith(`${vm.user}:`)) ?? '',
        )?.[1];
  if (home) {
    const mine = path.join(home, '.config/systemd/user/default.target.wants', unit);
    if ((await ctx.host.lstat(ctx.host.sys(mine))) !== null)
      return ok(id('agent'), subject('user agent'), `enabled for '${vm.user}' (${mine})`);
  }
  return warn(
    id('agent'),
    subject('user agent'),
    `${unit} is not enabled, so its units (${vm.units.join(', ')}) are not started with the VM`,
    `systemctl --global enable ${unit} (or, as ${vm.user ?? 'the user'}: systemctl --user enable --now ${unit})`,
  );
}
