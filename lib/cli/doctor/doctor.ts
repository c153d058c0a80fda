/**
 * `vfio-hookctl doctor [VM...]`: every mistake of a passthrough setup that
 * can be found before `virsh start`, read-only, as any user. The checks are
 * grouped as the setup is built: the IOMMU, vfio-pci, libvirt's hook, the
 * daemon and its configuration, then each configured VM (vm-checks.ts).
 */
import fs from 'node:fs';
import { emptyConfig, loadConfigFile, type Config } from '../../config/index.js';
import { closestName } from '../../names/index.js';
import { readHost, type HostSnapshot } from '../../pci/host-snapshot.js';
import type { KernelPort } from '../../pci/kernel-port.js';
import { StateFile, type ClaimRecord } from '../../state/state-file.js';
import { readDaemonStatus } from '../status-view.js';
import { fail, ok, skip, warn, type Check } from './check.js';
import { HostView } from './host-view.js';
import { hookChecks, iommuChecks, vfioChecks } from './system-checks.js';
import { vmChecks } from './vm-checks.js';
import type { AccountLookupOptions } from '../../shm/index.js';

export interface DoctorOptions {
  /** The system's `/` (etc/, usr/, var/ under it). */
  readonly root: string;
  /** The kernel's view (its roots are sysfs, proc, dev, shm and run). */
  readonly port: KernelPort;
  readonly configPath: string;
  /** The bus the daemon is on; undefined: the system bus. */
  readonly busAddress: string | undefined;
  /** Ask this libvirt for the domains (`virsh --connect`); null: read libvirt's saved definitions under root. */
  readonly connect: string | null;
  /** The VMs to check; [] for every configured one. */
  readonly vms: readonly string[];
  readonly accounts?: AccountLookupOptions;
}

export async function runDoctor(options: DoctorOptions): Promise<Check[]> {
  const host = new HostView(options.root, options.port.roots);
  const checks: Check[] = [];
  checks.push(...(await iommuChecks(host)));
  checks.push(...(await vfioChecks(host)));
  checks.push(...(await hookChecks(host)));
  checks.push(...(await daemonChecks(host, options.busAddress)));

  const { check: configCheck, config } = await configChecks(options.configPath);
  checks.push(configCheck);

  let snapshot: HostSnapshot | null = null;
  try {
    snapshot = await readHost(options.port);
  } catch {
    snapshot = null;
  }
  let claims: ReadonlyMap<string, ClaimRecord> = new Map();
  try {
    claims = (await new StateFile(options.port.roots.run).load()).claims;
  } catch {
    // A damaged or unreadable state file: the daemon sets it aside at start; the dry run plans without claims.
  }

  const names = options.vms.length > 0 ? options.vms : [...config.vms.keys()];
  if (names.length === 0 && configCheck.status === 'ok')
    checks.push(
      warn('vm', 'VMs', 'the configuration names no VM, so vfio-hookd prepares none', `add a [vm.NAME] table to ${options.configPath}`),
    );
  for (const name of names) {
    const vm = config.vms.get(name);
    if (vm === undefined) {
      const near = closestName(name, config.vms.keys());
      checks.push(
        fail(
          `vm.${name}`,
          `${name}`,
          `not in the configuration${near === null ? '' : ` (did you mean '${near}'?)`}`,
          `add [vm.${name}] to ${options.configPath}, or name a configured VM`,
        ),
      );
      continue;
    }
    checks.push(...(await vmChecks({ host, config, snapshot, claims, connect: options.connect, accounts: options.accounts ?? {} }, vm)));
  }
  return checks;
}

async function daemonChecks(host: HostView, busAddress: string | undefined): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    const status = await readDaemonStatus(busAddress);
    checks.push(ok('daemon.running', 'vfio-hookd', `running, version ${status.version}, configuration ${status.configFile}`));
    if (status.configError !== '')
      checks.push(
        fail('daemon.config', "the daemon's configuration", status.configError, `fix the file, then systemctl reload vfio-hookd`),
      );
  } catch (error) {
    checks.push(
      fail(
        'daemon.running',
        'vfio-hookd',
        `not running (${(error as Error).message})`,
        'systemctl enable --now vfio-hookd; VMs with passthrough devices do not start without it',
      ),
    );
  }
  const activation = [
    '/usr/share/dbus-1/system-services/org.libvirt.service',
    '/run/current-system/sw/share/dbus-1/system-services/org.libvirt.service',
  ];
  const present = await Promise.all(activation.map((a) => host.stat(host.sys(a))));
  checks.push(
    present.some((p) => p !== null)
      ? ok('daemon.libvirt-dbus', 'libvirt-dbus', 'installed: vfio-hookd hears of VMs that start without its hook')
      : warn(
          'daemon.libvirt-dbus',
          'libvirt-dbus',
          'not installed: a VM started while the hook was missing goes unnoticed, and devices of VMs that stopped while vfio-hookd was down stay claimed',
          'install libvirt-dbus',
        ),
  );
  return checks;
}

async function configChecks(configPath: string): Promise<{ check: Check; config: Config }> {
  try {
    fs.accessSync(configPath, fs.constants.R_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      return {
        check: warn(
          'config',
          'configuration',
          `${configPath} does not exist: no VM is managed`,
          'copy the example (vfio-hookd.toml.example) there',
        ),
        config: emptyConfig(),
      };
    return { check: skip('config', 'configuration', `cannot read ${configPath} (${code})`, 'run it as root'), config: emptyConfig() };
  }
  try {
    const config = await loadConfigFile(configPath);
    const warnings = config.warnings.length === 0 ? '' : `; ${config.warnings.length} warning(s): ${config.warnings.join('; ')}`;
    return { check: ok('config', 'configuration', `${configPath} loads: ${config.vms.size} VM(s)${warnings}`), config };
  } catch (error) {
    return {
      check: fail('config', 'configuration', (error as Error).message, 'fix each place named, then systemctl reload vfio-hookd'),
      config: emptyConfig(),
    };
  }
}
