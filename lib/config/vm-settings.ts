/**
 * One VM's settings, from a `[vm.NAME]` table or from the domain's metadata:
 * the schema, then the rules that span keys, then the defaults.
 */

import * as v from 'valibot';

import { q } from '../errors.js';
import { formatSize, lookingGlassSize, shmModeWarning } from '../shm/index.js';
import type { ConfigProblem } from './problems.js';
import { problemsFromIssues } from './problems.js';
import {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_HUGEPAGE_SIZE,
  DEFAULT_LOOKING_GLASS_NAME,
  DEFAULT_SCREAM_NAME,
  DEFAULT_SCREAM_SIZE,
  DEFAULT_SHM_MODE,
  VM_TABLE_SCHEMA,
  type VmTableSpec,
} from './schema.js';
import type { PathSegment } from './toml-locator.js';
import { parseHugepages } from '../host/hugepages.js';
import { lowerFirst } from './toml-schema.js';
import type { LookingGlassSettings, ScreamSettings, VmSettings } from './types.js';

export interface VmTableResult {
  /** The settings, or `null` when there were problems. */
  readonly settings: VmSettings | null;
  readonly problems: readonly ConfigProblem[];
  /** Accepted but probably unwise values (a shm mode readable by others); each message ends in ', ignoring'. */
  readonly warnings: readonly ConfigProblem[];
}

/**
 * Validate one VM's settings and apply the defaults.
 *
 * @param name the libvirt domain name (already checked by the caller).
 * @param input the `[vm.NAME]` table, or the metadata's settings.
 * @param base where the table sits, for problem paths: `['vm', NAME]` in the
 *   file, `[]` in metadata.
 */
export function validateVmTable(name: string, input: unknown, base: readonly PathSegment[]): VmTableResult {
  const result = v.safeParse(VM_TABLE_SCHEMA, input);
  if (!result.success) return { settings: null, problems: problemsFromIssues(result.issues, base), warnings: [] };
  const spec = result.output;
  const problems: ConfigProblem[] = [];
  const at = (path: readonly PathSegment[], message: string): void => {
    problems.push({ path: [...base, ...path], at: 'value', message });
  };

  checkDuplicates(spec.devices ?? [], 'devices', 'device', at);
  checkDuplicates(spec.units ?? [], 'units', 'unit', at);
  if (spec.hold === 'boot' && (spec.devices ?? []).length === 0) {
    at(['hold'], 'hold = "boot" needs devices listed here: vfio-hookd takes them at its start, before any domain XML is read');
  }

  checkDuplicates(spec['stop-units'] ?? [], 'stop-units', 'unit', at);
  const onBusy = spec['on-busy'] ?? 'refuse';
  if (onBusy === 'stop-units' && (spec['stop-units'] ?? []).length === 0) {
    at(['on-busy'], 'on-busy = "stop-units" needs the units to stop: stop-units = ["nvidia-persistenced.service"]');
  }
  if (onBusy !== 'stop-units' && (spec['stop-units'] ?? []).length > 0) {
    at(['stop-units'], `stop-units is only used with on-busy = "stop-units" (on-busy is ${q(onBusy)}); set it, or remove stop-units`);
  }
  if (spec['busy-timeout'] !== undefined && onBusy !== 'release') {
    at(['busy-timeout'], `busy-timeout is only used with on-busy = "release" (on-busy is ${q(onBusy)}); set it, or remove busy-timeout`);
  }
  if (spec['single-gpu'] === true && spec.hold === 'boot') {
    at(
      ['single-gpu'],
      'single-gpu = true hands the card over at each VM start, but with hold = "boot" the host never has it; remove one of them',
    );
  }

  if (spec['hugepage-size'] !== undefined && spec.hugepages === undefined) {
    at(
      ['hugepage-size'],
      'hugepage-size is the size of the pages of hugepages; set hugepages = "8G" (the VM\'s memory), or remove hugepage-size',
    );
  }
  if (spec.hugepages !== undefined) {
    try {
      parseHugepages({ total: spec.hugepages, pageSize: spec['hugepage-size'] ?? DEFAULT_HUGEPAGE_SIZE });
    } catch (error) {
      at(['hugepages'], lowerFirst((error as Error).message.replace(/, refusing$/, '')));
    }
  }
  for (const [index, { address }] of (spec['reset-method'] ?? []).entries()) {
    if (!(spec.devices ?? []).includes(address)) {
      at(
        ['reset-method'],
        `reset-method names ${q(address)}, which is not in this VM's devices; add it to devices (its reset method is set while the VM holds it), or remove it`,
      );
    }
    const first = (spec['reset-method'] ?? []).findIndex((r) => r.address === address);
    if (first !== index) at(['reset-method'], `reset-method names ${q(address)} twice (as two spellings of one address); name it once`);
  }

  const lookingGlass = lookingGlassSettings(spec, at);
  const scream: ScreamSettings | null =
    spec.scream === undefined
      ? null
      : {
          name: spec.scream.name ?? DEFAULT_SCREAM_NAME,
          sizeBytes: spec.scream.size ?? DEFAULT_SCREAM_SIZE,
          group: spec.scream.group ?? null,
          mode: spec.scream.mode ?? DEFAULT_SHM_MODE,
        };
  if (lookingGlass !== null && scream !== null && lookingGlass.name === scream.name) {
    // Without a `name` key in the text, the locator falls back to the scream table.
    at(['scream', 'name'], `Looking Glass and Scream would share the shm file ${q(scream.name)}; give them different names`);
  }

  if (problems.length > 0) return { settings: null, problems, warnings: [] };
  const warnings: ConfigProblem[] = [];
  for (const [key, file] of [
    ['looking-glass', lookingGlass],
    ['scream', scream],
  ] as const) {
    const warning = file === null ? null : shmModeWarning(file.mode, SHM_CARRIES[key]);
    // Pointed at the mode key; a default mode is never readable by others, so the key is there.
    if (warning !== null) warnings.push({ path: [...base, key, 'mode'], at: 'value', message: warning });
  }
  return {
    settings: {
      name,
      devices: spec.devices ?? [],
      user: spec.user ?? null,
      force: spec.force ?? false,
      removeShmOnStop: spec['remove-shm-on-stop'] ?? false,
      hold: spec.hold ?? 'vm',
      lookingGlass,
      scream,
      units: spec.units ?? [],
      onBusy,
      stopUnits: spec['stop-units'] ?? [],
      busyTimeoutMs: spec['busy-timeout'] ?? DEFAULT_BUSY_TIMEOUT_MS,
      singleGpu: spec['single-gpu'] ?? false,
      hostCpus: spec['host-cpus'] ?? null,
      hugepages: spec.hugepages === undefined ? null : { total: spec.hugepages, pageSize: spec['hugepage-size'] ?? DEFAULT_HUGEPAGE_SIZE },
      resetMethods: spec['reset-method'] ?? [],
    },
    problems,
    warnings,
  };
}

/** What each shm file holds, for the warnings about who can read it. */
const SHM_CARRIES = { 'looking-glass': "Looking Glass frames are the guest's screen", scream: "Scream carries the guest's sound" } as const;

/**
 * The warnings for a VM's effective settings (file and metadata merged, see
 * merge.ts), for the hook's outcome: `VM 'win10': looking-glass.mode: mode
 * '0664' lets every user ... , ignoring`. The file's own warnings are in
 * `Config.warnings` already, with their positions; this is for settings that
 * came from a domain's `<metadata>`, which is only read at hook time.
 */
export function vmSettingsWarnings(settings: VmSettings): string[] {
  const warnings: string[] = [];
  for (const [key, file] of [
    ['looking-glass', settings.lookingGlass],
    ['scream', settings.scream],
  ] as const) {
    const warning = file === null ? null : shmModeWarning(file.mode, SHM_CARRIES[key]);
    if (warning !== null) warnings.push(`VM ${q(settings.name)}: ${key}.mode: ${warning}`);
  }
  return warnings;
}

function checkDuplicates(
  values: readonly string[],
  key: string,
  what: string,
  at: (path: readonly PathSegment[], message: string) => void,
): void {
  const first = new Map<string, number>();
  values.forEach((value, index) => {
    const earlier = first.get(value);
    if (earlier === undefined) first.set(value, index);
    else at([key, index], `${what} ${q(value)} is listed twice (also ${key}[${earlier}]); list it once`);
  });
}

function lookingGlassSettings(spec: VmTableSpec, at: (path: readonly PathSegment[], message: string) => void): LookingGlassSettings | null {
  const lg = spec['looking-glass'];
  if (lg === undefined) return null;
  const hdr = lg.hdr ?? false;
  let sizeBytes: number;
  let resolution: string | null = null;
  if (lg.resolution !== undefined && lg.size !== undefined) {
    at(['looking-glass', 'size'], 'set either resolution or size, not both');
    return null;
  }
  if (lg.resolution !== undefined) {
    resolution = `${lg.resolution.width}x${lg.resolution.height}`;
    sizeBytes = lookingGlassSize(lg.resolution, { hdr });
  } else if (lg.size !== undefined) {
    if (lg.hdr !== undefined) {
      at(
        ['looking-glass', 'hdr'],
        `hdr only applies with resolution; with size = ${q(formatSize(lg.size))} the size is already final, remove hdr`,
      );
      return null;
    }
    sizeBytes = lg.size;
  } else {
    at(['looking-glass'], 'needs resolution (e.g. resolution = "2560x1440") or size (e.g. size = "64M")');
    return null;
  }
  return {
    name: lg.name ?? DEFAULT_LOOKING_GLASS_NAME,
    sizeBytes,
    resolution,
    hdr,
    group: lg.group ?? null,
    mode: lg.mode ?? DEFAULT_SHM_MODE,
    kvmfr: lg.kvmfr ?? 'auto',
  };
}
