/**
 * Which permission modes a shared-memory file may have.
 *
 * A Looking Glass file carries the guest's screen, a Scream file the
 * guest's sound.
 * Anyone who can write one can draw on the guest's screen or talk into its
 * audio, so:
 *
 * - write for others is refused;
 * - any execute bit is refused: nothing executes a shm file, and an
 *   execute bit only widens what the file allows (a mapping with PROT_EXEC);
 * - read for others is accepted, because QEMU itself creates a missing file
 *   0644 and some setups rely on it, but it is warned about: every user on
 *   the host can then watch (or listen to) the guest.
 *
 * Group write stays allowed: the group is QEMU's, which must write the file.
 * The configuration (lib/config) and ensureShmFile both apply these rules.
 */

/** `0o660` -> `'0660'`. */
function formatMode(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** The mode to suggest instead: the owner's and group's read and write bits kept, nothing else. */
function saferMode(mode: number): number {
  const kept = mode & 0o660;
  return kept === 0 ? 0o600 : kept;
}

/**
 * Why `mode` is refused for a shared-memory file, with the fix, or `null`
 * when it is allowed. Lower case, for the caller's `Invalid mode '...': `.
 */
export function shmModeProblem(mode: number): string | null {
  const reasons: string[] = [];
  if ((mode & 0o002) !== 0) reasons.push("other users could write to it, and so into the guest's screen or sound");
  if ((mode & 0o111) !== 0) reasons.push('execute bits mean nothing on a shared memory file and only widen what it allows');
  if (reasons.length === 0) return null;
  return `${reasons.join('; ')}; use '${formatMode(saferMode(mode))}'`;
}

/**
 * The warning for an allowed but readable-by-everyone mode, ending in
 * `, ignoring`, or `null`.
 *
 * @param carries what the file holds, for the message: `"the guest's screen"`.
 */
export function shmModeWarning(mode: number, carries: string): string | null {
  if ((mode & 0o004) === 0) return null;
  return (
    `mode '${formatMode(mode)}' lets every user on the host read the shared memory file (${carries}); ` +
    `use '${formatMode(saferMode(mode))}' unless that is intended, ignoring`
  );
}
