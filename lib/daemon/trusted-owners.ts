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

export async function trustedShmOwners(qemuUser: string | null, resolveUid: (user: string) => Promise<number>): Promise<TrustedOwners> {
  const uids = [0];
  const warnings: string[] = [];
  // Looked up side by side (each is a getent child): the daemon's start waits for the slowest, not the sum.
  const users = qemuUser !== null ? [qemuUser] : DEFAULT_QEMU_USERS;
  const found = await Promise.allSettled(users.map((user) => resolveUid(user)));
  found.forEach((result, i) => {
    if (result.status === 'fulfilled') uids.push(result.value);
    else if (qemuUser !== null) warnings.push(`[daemon] qemu-user '${users[i]}' does not resolve to a user, ignoring`);
  });
  return { uids, warnings };
}
