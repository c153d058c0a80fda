/**
 * Who holds a claimed device. Owners are typed, never bare strings: a VM
 * called `dbus` or `vfio-hookctl` must not share claims with a detach made by
 * hand, and a device found on vfio-pci with nobody's record is neither.
 *
 * - `vm`: a libvirt domain, by name (the hook's prepare, or `--for NAME`);
 * - `manual`: a detach by hand (`vfio-hookctl detach`, `DetachDevice`), by the
 *   user who asked;
 * - `unknown`: found on vfio-pci with a `vfio-pci` override and no record
 *   (a state file that was lost or damaged, a crash of an older version,
 *   a binding made at boot). Anybody may give it back; a VM may adopt it.
 */
import { q } from '../errors.js';

export type Owner =
  { readonly kind: 'vm'; readonly name: string } | { readonly kind: 'manual'; readonly user: string } | { readonly kind: 'unknown' };

export function vmOwner(name: string): Owner {
  return { kind: 'vm', name };
}

export function manualOwner(user: string): Owner {
  return { kind: 'manual', user };
}

export const UNKNOWN_OWNER: Owner = { kind: 'unknown' };

/**
 * One string per owner, unambiguous whatever a VM is called: `vm:win10`,
 * `manual:alex`, `unknown`. Used for comparisons and the Device objects'
 * `Owner` property.
 */
export function ownerKey(owner: Owner): string {
  switch (owner.kind) {
    case 'vm':
      return `vm:${owner.name}`;
    case 'manual':
      return `manual:${owner.user}`;
    case 'unknown':
      return 'unknown';
  }
}

export function sameOwner(a: Owner, b: Owner): boolean {
  return ownerKey(a) === ownerKey(b);
}

/** The owner in a sentence: `VM 'win10'`, `a detach by hand by 'alex'`, `nobody known`. */
export function describeOwner(owner: Owner): string {
  switch (owner.kind) {
    case 'vm':
      return `VM ${q(owner.name)}`;
    case 'manual':
      return `a detach by hand by ${q(owner.user)}`;
    case 'unknown':
      return 'an unknown owner (it was found on vfio-pci with no record of who took it)';
  }
}

/** How to make an owner let go of `address`, for the end of a refusal. */
export function howToRelease(owner: Owner, address: string): string {
  switch (owner.kind) {
    case 'vm':
      return `shut that VM down first (virsh shutdown ${q(owner.name)})`;
    case 'manual':
    case 'unknown':
      return `give it back with 'vfio-hookctl reattach ${address}'`;
  }
}
