/**
 * `vfio-hookd --check-config FILE`: the daemon's own loader and schema run
 * over a file, like `nginx -t`, for a build step (NixOS renders the TOML and
 * checks it before it is installed) or an administrator before a reload.
 * No bus, no sysfs, no state file, no root.
 *
 * Exit status and output:
 * - 0: the daemon would load it. Nothing on stdout; its warnings (a shm mode
 *   readable by others, the trust note below) on stderr, a line each;
 * - 1: it would not. Every problem on stderr, a line each, as
 *   `FILE:LINE:COLUMN: message`, in file order (the same lines the daemon
 *   journals when it refuses the file);
 * - 2: the file cannot be read at all (missing, a directory, no permission,
 *   over CONFIG_MAX_BYTES): one line `vfio-hookd: ...`.
 *
 * Trust (the owner and mode of the file and of the folders above it, see
 * load-config.ts) is reported but never fails the check. It is a property of
 * where the file is installed, not of what it says: a build sandbox cannot
 * make a root-owned file (the text is written by the build user, nixbld, and
 * the store's root-owned paths appear there as the overflow uid), and the
 * daemon judges the installed file again every time it reads it. So a trust
 * problem is one warning line, `FILE: warning: ...`, and the exit status is
 * that of the text.
 *
 * What needs the host is not checked: whether `user` and `group` accounts
 * exist and the devices are present are decided when a VM starts.
 */

import { InvalidConfig, q } from '../errors.js';
import { readConfigBytes } from './load-config.js';
import { parseConfig } from './parse-config.js';

export interface ConfigCheck {
  /** 0 good, 1 problems in the text, 2 unreadable. */
  readonly code: 0 | 1 | 2;
  /** Lines for stderr (problems, then nothing; or warnings), without newlines. */
  readonly stderr: readonly string[];
}

/** Check a configuration file as the daemon would load it; never throws for anything about the file. */
export async function checkConfigFile(path: string): Promise<ConfigCheck> {
  const warnings: string[] = [];
  let bytes: Buffer | null;
  try {
    bytes = await readConfigBytes(path, { onUntrusted: (problem) => warnings.push(`${path}: warning: ${trustNote(problem)}`) });
  } catch (error) {
    if (!(error instanceof InvalidConfig)) throw error;
    return { code: 2, stderr: [`vfio-hookd: ${error.message}`] };
  }
  if (bytes === null) {
    // The daemon takes a missing file for an empty configuration; a check of a file that is not there is a mistake.
    return { code: 2, stderr: [`vfio-hookd: Cannot read configuration ${q(path)}: no such file`] };
  }
  const text = decodeUtf8(bytes);
  if (typeof text !== 'string') {
    return { code: 1, stderr: [`${path}:${text.line}:${text.column}: not valid UTF-8 (TOML files are UTF-8)`, ...warnings] };
  }
  try {
    const config = parseConfig(text, path);
    return { code: 0, stderr: [...config.warnings, ...warnings] };
  } catch (error) {
    if (!(error instanceof InvalidConfig)) throw error;
    return { code: 1, stderr: [...error.message.split('\n'), ...warnings] };
  }
}

/** The trust refusal as a note: the same reasons and fix, without the daemon's ', refusing'. */
function trustNote(problem: InvalidConfig): string {
  return `${problem.message.replace(/, refusing$/, '')}; the daemon would refuse the file where it is now (a check of the text does not count this)`;
}

/**
 * The text, or where its first byte that is not UTF-8 sits (line and column
 * from 1, columns in UTF-16 code units like the parser's positions).
 */
function decodeUtf8(bytes: Buffer): string | { line: number; column: number } {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    // Grow a prefix until it is invalid (streaming: an unfinished sequence at its end is not yet an error).
    let end = 1;
    for (; end <= bytes.length; end++) {
      try {
        new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, end), { stream: true });
      } catch {
        break;
      }
    }
    // What came before the bad sequence: the valid prefix's whole characters (streaming keeps an unfinished one back).
    const before = new TextDecoder('utf-8').decode(bytes.subarray(0, end - 1), { stream: true });
    const lineStart = before.lastIndexOf('\n') + 1;
    return { line: before.split('\n').length, column: before.length - lineStart + 1 };
  }
}
