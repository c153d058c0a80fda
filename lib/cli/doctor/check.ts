/**
 * What `vfio-hookctl doctor` reports: one check, one line. A check is about
 * one thing (the IOMMU groups, the hook's busctl, a VM's shm room), says what
 * it found in a sentence, and, when the finding is a problem, how to fix it.
 *
 * Statuses: `ok`; `warn`, advice that does not stop a VM (`iommu=pt`, a
 * missing libvirt-dbus); `fail`, something that will stop or break a VM;
 * `skip`, what could not be checked here and why (not root, no libvirt).
 * The exit code: 1 when anything failed, else 2 when anything could not be
 * checked, else 0 (warnings included), as the issue that asked for it says.
 */

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  /** Stable, for --json and tests: `iommu.groups`, `vm.win10.shm-room`. */
  readonly id: string;
  /** What was checked, for people: `IOMMU groups`, `win10: room in /dev/shm`. */
  readonly subject: string;
  readonly status: CheckStatus;
  /** What was found, a sentence. */
  readonly finding: string;
  /** How to fix it (for warn and fail), or what to do to check it (skip); null for ok. */
  readonly fix: string | null;
}

export const ok = (id: string, subject: string, finding: string): Check => ({ id, subject, status: 'ok', finding, fix: null });
export const warn = (id: string, subject: string, finding: string, fix: string): Check => ({ id, subject, status: 'warn', finding, fix });
export const fail = (id: string, subject: string, finding: string, fix: string): Check => ({ id, subject, status: 'fail', finding, fix });
export const skip = (id: string, subject: string, finding: string, fix: string): Check => ({ id, subject, status: 'skip', finding, fix });

export function doctorExitCode(checks: readonly Check[]): 0 | 1 | 2 {
  if (checks.some((c) => c.status === 'fail')) return 1;
  if (checks.some((c) => c.status === 'skip')) return 2;
  return 0;
}

const LABEL: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

/** One line a check: `[ok  ] subject: finding` plus `; fix: ...` when there is one. */
export function formatChecks(checks: readonly Check[]): string {
  const lines = checks.map(
    (c) =>
      `[${LABEL[c.status]}] ${c.subject}: ${c.finding}${c.fix === null ? '' : `; ${c.status === 'skip' ? 'to check' : 'fix'}: ${c.fix}`}`,
  );
  const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length;
  lines.push(
    `${checks.length} checks: ${count('ok')} ok, ${count('warn')} warnings, ${count('fail')} problems, ${count('skip')} not checked`,
  );
  return lines.join('\n') + '\n';
}
