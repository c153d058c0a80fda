/**
 * lib/names: the naming rules of the systems vfio-hookd talks to (libvirt
 * domain names, systemd unit names, passwd user and group names) and the
 * "did you mean" for a name or key that is nearly right. A leaf: lib/config,
 * lib/domain, lib/lifecycle, lib/agent and lib/daemon all check names with
 * it, and it imports none of them.
 */

export { closestName, didYouMean } from './did-you-mean.js';
export { validateAccountName } from './account-name.js';
export { validateUnitName } from './unit-name.js';
export { validateVmName, vmNameProblem } from './vm-name.js';
