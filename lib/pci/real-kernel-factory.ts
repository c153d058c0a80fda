/**
 * The one way out of lib/ to the real kernel adapter, so that `_internal/`
 * stays unexported while service/ can still build the real thing.
 */
import type { HostRoots } from '../roots.js';
import { DEFAULT_ROOTS } from '../roots.js';
import type { KernelPort } from './kernel-port.js';
import { RealKernel } from './_internal/real-kernel.js';

/** A KernelPort on the real sysfs/proc/dev (or other roots, e.g. `--sysfs-root`). */
export function openRealKernel(roots: HostRoots = DEFAULT_ROOTS): KernelPort {
  return new RealKernel(roots);
}
