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
import { TomlError, parse } from 'smol-toml';
import { validateUnitName } from '../names/unit-name.js';

export interface AgentConfig {
  /** Units by VM name; every name checked with validateUnitName. */
  readonly vms: ReadonlyMap<string, readonly string[]>;
}

export const EMPTY_AGENT_CONFIG: AgentConfig = { vms: new Map() };

/** Where the file is for this process's user. */
export function defaultAgentConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const configHome = env['XDG_CONFIG_HOME'] && path.isAbsolute(env['XDG_CONFIG_HOME']) ? env['XDG_CONFIG_HOME'] : path.join(env['HOME'] ?? os.homedir(), '.config');
  return path.join(configHome, 'vfio-hookd', 'agent.toml');
}

/** Parse the text; throws an Error naming `source` (and line:column for TOML errors) on the first problem. */
export function parseAgentConfig(text: string, source: string): AgentConfig {
  let data: Record<string, unknown>;
  try {
    data = parse(text);
  } catch (error) {
    if (error instanceof TomlError) {
      throw new Error(`${source}:${error.line}:${error.column}: invalid TOML: ${error.message.replace(/^Invalid TOML document: /, '').split('\n')[0]}`);
    }
    throw error;
  }
  const vms = new Map<string, readonly string[]>();
  for (const [key, value] of Object.entries(data)) {
    if (key !== 'vm') throw new Error(`${source}: unknown table or key '${key}' (only [vm.NAME] tables are read)`);
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${source}: 'vm' must be a table of [vm.NAME] tables`);
    for (const [name, table] of Object.entries(value as Record<string, unknown>)) {
      if (!table || typeof table !== 'object' || Array.isArray(table)) throw new Error(`${source}: [vm.${name}] must be a table`);
      const units: string[] = [];
      for (const [field, fieldValue] of Object.entries(table as Record<string, unknown>)) {
        if (field !== 'units') throw new Error(`${source}: [vm.${name}]: unknown key '${field}' (only 'units')`);
        if (!Array.isArray(fieldValue) || fieldValue.some((u) => typeof u !== 'string')) {
          throw new Error(`${source}: [vm.${name}] units must be a list of unit names`);
        }
        for (const unit of fieldValue as string[]) {
          try {
            units.push(validateUnitName(unit));
          } catch (e) {
            throw new Error(`${source}: [vm.${name}] units: ${(e as Error).message}`);
          }
        }
      }
      vms.set(name, [...new Set(units)]);
    }
  }
  return { vms };
}

/** Read the file; a missing file is EMPTY_AGENT_CONFIG, any other problem throws. */
export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_AGENT_CONFIG;
    throw new Error(`Cannot read '${file}': ${(error as Error).message}`);
  }
  return parseAgentConfig(text, file);
}
