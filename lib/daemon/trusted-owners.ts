/**
 * Which uids may already own a shared-memory file the daemon is asked to
 * use: root, and QEMU's user (QEMU creates a missing file itself, so the
 * file may be its own). `[daemon] qemu-user` names that user; unset, every
 * name distributions use is tried ('libvirt-qemu' on Debian, 'qemu' on
 * Fedora, 'qemu-libvirtd' on NixOS) and those that do not resolve are
 * skipped quietly.
 */
import { DEFAULT_QEMU_USERS } from '../config/index.js';

interface TrustedOwners {
  readonly uids: readonly number[];
  /** A configured qemu-user that does not resolve (each ends in ', ignoring'). */
  readonly warnings: readonly string[];
}

export async function trustedShmOwners(
  qemuUser: string | null,
  resolveUids: (users: readonly string[]) => Promise<ReadonlyMap<string, number>>,
): Promise<TrustedOwners> {
  // One lookup for all the names (one getent child, not one each: a fork of the daemon each, at its start).
  const users = qemuUser !== null ? [qemuUser] : DEFAULT_QEMU_USERS;
  let found: ReadonlyMap<string, number>;
  try {
    found = await resolveUids(users);
  } catch {
    found = new Map();
  }
  const uids = [0, ...users.flatMap((user) => (found.has(user) ? [found.get(user)!] : []))];
  const warnings =
    qemuUser !== null && !found.has(qemuUser) ? [`[daemon] qemu-user '${qemuUser}' does not resolve to a user, ignoring`] : [];
  return { uids, warnings };
}
