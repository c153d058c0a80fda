/**
 * The agent's own, per-user configuration: `~/.config/vfio-hookd/agent.toml`
 * (`$XDG_CONFIG_HOME/vfio-hookd/agent.toml`).
 *
 * ```toml
 * [vm.win10]
 * units = ["looking-glass-client@looking-glass.service", "scream-receiver@scream.service"]
 * ```
 *
 * It names user units to run with a VM on top of the ones the daemon's
 * configuration gives (the Machine's `Units` property), and it claims a VM
 * whose Machine object names no user (`User` empty, or a daemon without the
 * `User` property). It never claims a VM the daemon gives to another user.
 *
 * The file is optional; a missing file is an empty configuration. A file
 * with an error is reported and ignored as a whole (no half-read file).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as v from 'valibot';

import { fileProblemsError, problemsFromIssues, type ConfigProblem } from '../config/problems.js';
import { formatTomlPath, TomlLocator, type PathSegment } from '../config/toml-locator.js';
import { describeValue, isTable, list, parsed, table } from '../config/toml-schema.js';
import { parseTomlText } from '../config/toml-syntax.js';
import { InvalidConfig, q } from '../errors.js';
import { didYouMean } from '../names/did-you-mean.js';
import { validateUnitName } from '../names/unit-name.js';
import { vmNameProblem } from '../names/vm-name.js';

export interface AgentConfig {
  /** Units by VM name; every name checked with validateUnitName. */
  readonly vms: ReadonlyMap<string, readonly string[]>;
}

export const EMPTY_AGENT_CONFIG: AgentConfig = { vms: new Map() };

/** `[vm.NAME]`: the units to start with the VM. */
const AGENT_VM_SCHEMA = table({
  units: v.optional(list(parsed(validateUnitName))),
});

/** Where the file is for this process's user. */
export function defaultAgentConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const configHome =
    env['XDG_CONFIG_HOME'] && path.isAbsolute(env['XDG_CONFIG_HOME'])
      ? env['XDG_CONFIG_HOME']
      : path.join(env['HOME'] ?? os.homedir(), '.config');
  return path.join(configHome, 'vfio-hookd', 'agent.toml');
}

/**
 * Parse and check the text, the way the daemon's configuration is: every
 * problem at once, a line each, `source:line:column: [vm.NAME] key: what`.
 * A unit listed twice is kept once.
 *
 * @throws InvalidConfig for a TOML syntax error or any problem in the file.
 */
export function parseAgentConfig(text: string, source: string): AgentConfig {
  const data = parseTomlText(text, source);
  const problems: ConfigProblem[] = [];
  const vms = new Map<string, readonly string[]>();
  for (const [key, value] of Object.entries(data)) {
    if (key !== 'vm') {
      problems.push({
        path: [key],
        at: 'key',
        message: `unknown table or key ${q(key)} (only [vm.NAME] tables are read)${didYouMean(key, ['vm'])}`,
      });
    } else if (!isTable(value)) {
      problems.push({ path: ['vm'], at: 'value', message: `expected tables of VMs ([vm.NAME]), got ${describeValue(value)}` });
    } else {
      for (const [name, vmTable] of Object.entries(value)) {
        const nameProblem = vmNameProblem(name);
        if (nameProblem !== null) {
          problems.push({ path: ['vm', name], at: 'key', message: `invalid VM name ${q(name)}: ${nameProblem}` });
          continue;
        }
        const result = v.safeParse(AGENT_VM_SCHEMA, vmTable);
        if (result.success) vms.set(name, [...new Set(result.output.units ?? [])]);
        else problems.push(...problemsFromIssues(result.issues, ['vm', name]));
      }
    }
  }
  if (problems.length > 0) throw fileProblemsError(problems, source, new TomlLocator(text), showAgentPath);
  return { vms };
}

/**
 * Paths as the file's headers read: `[vm.win10] units` (an element of it
 * too: the column points at the element), `[vm."Windows 10"]`, `vm`.
 */
function showAgentPath(path: readonly PathSegment[]): string {
  if (path[0] !== 'vm' || path.length < 2) return formatTomlPath(path);
  const header = `[${formatTomlPath(path.slice(0, 2))}]`;
  return path.length === 2 ? header : `${header} ${formatTomlPath(path.slice(2, 3))}`;
}

/**
 * Read the file; a missing file is EMPTY_AGENT_CONFIG.
 *
 * @throws InvalidConfig when it cannot be read, or as parseAgentConfig does.
 */
export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_AGENT_CONFIG;
    throw new InvalidConfig(`Cannot read ${q(file)}: ${(error as Error).message}`);
  }
  return parseAgentConfig(text, file);
}
