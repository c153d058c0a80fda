/**
 * The roots every path hangs off. Real defaults, injected everywhere: the
 * simulated host, the tests and `--sysfs-root` pass their own. No module in
 * lib/ names `/sys` or `/proc` except through one of these.
 */
import path from 'node:path';
import { UnsafePath, q } from './errors.js';

export interface HostRoots {
  /** sysfs mount. Default `/sys`. */
  readonly sysfs: string;
  /** procfs mount (processes, mountinfo, swaps). Default `/proc`. */
  readonly proc: string;
  /** device nodes. Default `/dev`. */
  readonly dev: string;
  /** shared-memory files (Looking Glass, Scream). Default `/dev/shm`. */
  readonly shm: string;
  /** runtime state (`<run>/vfio-hookd/state.json`). Default `/run`. */
  readonly run: string;
}

export const DEFAULT_ROOTS: HostRoots = Object.freeze({
  sysfs: '/sys',
  proc: '/proc',
  dev: '/dev',
  shm: '/dev/shm',
  run: '/run',
});

/** All five roots under one folder, as a simulated host lays them out. */
export function rootsUnder(top: string): HostRoots {
  return {
    sysfs: path.join(top, 'sys'),
    proc: path.join(top, 'proc'),
    dev: path.join(top, 'dev'),
    shm: path.join(top, 'dev', 'shm'),
    run: path.join(top, 'run'),
  };
}

/**
 * Join `parts` under `root` and refuse a result outside it. Parts come from
 * sysfs names and validated addresses, so an escape means a bug or a hostile
 * name; either way nothing is written there.
 */
export function under(root: string, ...parts: string[]): string {
  // The common case, without path.resolve and path.relative: a root in
  // resolved form and plain names (no '/', '.', '..' or ''), which cannot
  // leave it. The engine builds a path for every read it makes, a few
  // hundred a detach, and the kernel tier measured this JS at about half a
  // sysfs read's cost. The result is the string path.resolve would give.
  if (isResolvedRoot(root) && parts.every(isPlainName)) {
    return parts.length === 0 ? root : `${root === '/' ? '' : root}/${parts.join('/')}`;
  }
  const full = path.resolve(root, ...parts);
  if (!isWithin(root, full)) {
    throw new UnsafePath(`Path ${q(full)} is outside its root ${q(root)}, refusing`);
  }
  return full;
}

export function isWithin(root: string, candidate: string): boolean {
  const rel = path.relative(path.resolve(root), path.resolve(candidate));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** Roots seen in resolved form (absolute, normalised, no trailing '/'); a handful per process. */
const resolvedRoots = new Set<string>();

function isResolvedRoot(root: string): boolean {
  if (resolvedRoots.has(root)) return true;
  if (!path.isAbsolute(root) || path.resolve(root) !== root) return false;
  if (resolvedRoots.size >= 64) resolvedRoots.clear(); // tests make many temp roots; stay small
  resolvedRoots.add(root);
  return true;
}

function isPlainName(part: string): boolean {
  return part !== '' && part !== '.' && part !== '..' && !part.includes('/');
}
