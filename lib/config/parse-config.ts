/**
 * /etc/vfio-hookd/vfio-hookd.toml from text to a validated Config.
 *
 * Two kinds of error, both InvalidConfig and both with `source:line:column`:
 * a TOML syntax error (smol-toml's position and reason), or every schema
 * problem of the file at once, a line each, positioned by TomlLocator.
 */

import * as v from 'valibot';

import { q } from '../errors.js';
import { vmNameProblem } from '../names/vm-name.js';
import type { ConfigProblem } from './problems.js';
import { fileProblemsError, formatFileProblems, problemsFromIssues } from './problems.js';
import { CONFIG_FILE_SCHEMA, DEFAULT_WRITE_TIMEOUT_MS } from './schema.js';
import { describeValue, isTable } from './toml-schema.js';
import { TomlLocator } from './toml-locator.js';
import { parseTomlText } from './toml-syntax.js';
import type { Config, VmSettings } from './types.js';
import { validateVmTable } from './vm-settings.js';

/** The configuration when there is no file: no VMs, default daemon settings. */
export function emptyConfig(): Config {
  return { daemon: { qemuUser: null, writeTimeoutMs: DEFAULT_WRITE_TIMEOUT_MS }, vms: new Map(), warnings: [] };
}

/**
 * Parse and validate a configuration text. Values that are accepted but
 * probably unwise come back in `warnings`, positioned like the errors.
 *
 * @param source names the text in messages, normally its path.
 * @throws InvalidConfig with `source:line:column` for every problem found.
 */
export function parseConfig(text: string, source: string): Config {
  const data = parseTomlText(text, source);
  const locator = new TomlLocator(text);
  const problems: ConfigProblem[] = [];
  const warnings: ConfigProblem[] = [];

  const top = v.safeParse(CONFIG_FILE_SCHEMA, data);
  if (!top.success) problems.push(...problemsFromIssues(top.issues, []));
  const daemon = top.success ? top.output.daemon : undefined;

  const vms = new Map<string, VmSettings>();
  const vmTables = data['vm'];
  if (vmTables !== undefined && !isTable(vmTables)) {
    problems.push({ path: ['vm'], at: 'value', message: `expected tables of VMs ([vm.NAME]), got ${describeValue(vmTables)}` });
  } else if (vmTables !== undefined) {
    for (const [name, table] of Object.entries(vmTables)) {
      const nameProblem = vmNameProblem(name);
      if (nameProblem !== null) {
        problems.push({ path: ['vm', name], at: 'key', message: `invalid VM name ${q(name)}: ${nameProblem}` });
        continue;
      }
      const result = validateVmTable(name, table, ['vm', name]);
      problems.push(...result.problems);
      warnings.push(...result.warnings);
      if (result.settings !== null) vms.set(name, result.settings);
    }
  }
  problems.push(...devicesInTwoVms(vms, locator));

  if (problems.length > 0) throw fileProblemsError(problems, source, locator);
  return {
    daemon: {
      qemuUser: daemon?.['qemu-user'] ?? null,
      writeTimeoutMs: daemon?.['write-timeout'] ?? DEFAULT_WRITE_TIMEOUT_MS,
    },
    vms,
    warnings: formatFileProblems(warnings, source, locator),
  };
}

/** One writer per device: a device listed by two VMs is reported at its second listing. */
function devicesInTwoVms(vms: ReadonlyMap<string, VmSettings>, locator: TomlLocator): ConfigProblem[] {
  const owner = new Map<string, { vm: string; index: number }>();
  const problems: ConfigProblem[] = [];
  for (const vm of vms.values()) {
    vm.devices.forEach((device, index) => {
      const first = owner.get(device);
      if (first === undefined) {
        owner.set(device, { vm: vm.name, index });
        return;
      }
      const { line } = locator.valuePosition(['vm', first.vm, 'devices', first.index]);
      problems.push({
        path: ['vm', vm.name, 'devices', index],
        at: 'value',
        message: `device ${q(device)} is also in VM ${q(first.vm)} (line ${line}); a device belongs to one VM, remove it from one of them`,
      });
    });
  }
  return problems;
}
