/**
 * Configuration problems: collected while validating, then formatted into one
 * InvalidConfig for the whole file (or the whole metadata), so a user fixes
 * every mistake in one go rather than one reload at a time.
 *
 * A problem points at a key path; where the text behind it is known (the
 * TOML file) the message carries `source:line:column`, from TomlLocator.
 */

import type { BaseIssue } from 'valibot';

import { InvalidConfig } from '../errors.js';
import { formatTomlPath, type PathSegment, type TomlLocator } from './toml-locator.js';

export interface ConfigProblem {
  /** Key path from the top of the file: `['vm', 'win10', 'looking-glass', 'mode']`. */
  readonly path: readonly PathSegment[];
  /** Point at the key itself (an unknown key) or at its value (a bad value, a missing key). */
  readonly at: 'key' | 'value';
  /** What is wrong, without the path: `invalid mode '0669': expected an octal mode like '0660'`. */
  readonly message: string;
}

/** valibot issues as problems, their paths under `base`. */
export function problemsFromIssues(issues: readonly BaseIssue<unknown>[], base: readonly PathSegment[]): ConfigProblem[] {
  return issues.map((issue) => {
    const items = issue.path ?? [];
    const path = [...base, ...items.map((item) => item.key as PathSegment)];
    const last = items[items.length - 1];
    const at = last !== undefined && 'origin' in last && last.origin === 'key' ? 'key' : 'value';
    return { path, at, message: issue.message };
  });
}

/**
 * One InvalidConfig for the problems of a file, a line each, in file order:
 * `/etc/vfio-hookd/vfio-hookd.toml:7:8: vm.win10.looking-glass.mode: invalid mode ...`.
 */
export function fileProblemsError(
  problems: readonly ConfigProblem[],
  source: string,
  locator: TomlLocator,
  showPath: (path: readonly PathSegment[]) => string = formatTomlPath,
): InvalidConfig {
  return new InvalidConfig(formatFileProblems(problems, source, locator, showPath).join('\n'));
}

/**
 * Problems (or warnings) of a file as lines `source:line:column: path: message`, in file order.
 *
 * @param showPath how a path is written; default `formatTomlPath` (`vm.win10.units[0]`).
 */
export function formatFileProblems(
  problems: readonly ConfigProblem[],
  source: string,
  locator: TomlLocator,
  showPath: (path: readonly PathSegment[]) => string = formatTomlPath,
): string[] {
  return problems
    .map((problem) => {
      const { line, column } = problem.at === 'key' ? locator.keyPosition(problem.path) : locator.valuePosition(problem.path);
      const where = problem.path.length === 0 ? '' : `${showPath(problem.path)}: `;
      return { line, column, text: `${source}:${line}:${column}: ${where}${problem.message}` };
    })
    .sort((a, b) => a.line - b.line || a.column - b.column)
    .map((l) => l.text);
}

/**
 * One InvalidConfig for problems in a domain's `<metadata>`, which has no
 * positions; paths are the config keys the metadata mirrors:
 * `Invalid vfio-hookd metadata in VM 'win10': looking-glass.mode: invalid mode ...`.
 */
export function metadataProblemsError(problems: readonly ConfigProblem[], prefix: string): InvalidConfig {
  return new InvalidConfig(
    problems.map((p) => `${prefix}: ${p.path.length === 0 ? '' : `${formatTomlPath(p.path)}: `}${p.message}`).join('\n'),
  );
}
