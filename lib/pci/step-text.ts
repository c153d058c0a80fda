/**
 * A plan step in words, two ways: what is being done while it runs
 * ("unbinding 0000:0b:00.0 from amdgpu": the daemon's progress, `monitor`,
 * `STATUS=`), and what a step does, for a plan printed by the CLI.
 */
import type { Step } from './plan.js';

/** The step as it runs: `unbinding 0000:0b:00.0 from amdgpu`. */
export function describeStep(step: Step): string {
  switch (step.op) {
    case 'set-override':
      return `setting driver_override of ${step.address} to ${step.driver}`;
    case 'clear-override':
      return `clearing driver_override of ${step.address}`;
    case 'unbind':
      return `unbinding ${step.address} from ${step.driver}`;
    case 'probe':
      return `probing ${step.address} (expecting ${step.expect ?? 'any host driver'})`;
    case 'await-vfio-node':
      return `waiting for /dev/vfio/${step.group}`;
    case 'check-viable':
      return `checking IOMMU group ${step.group} is viable`;
  }
}

/** The step in a printed plan: `0000:0b:00.0: unbind from amdgpu`. */
export function stepLine(step: Step): string {
  switch (step.op) {
    case 'set-override':
      return `${step.address}: driver_override <- ${step.driver}`;
    case 'clear-override':
      return `${step.address}: driver_override <- (clear)`;
    case 'unbind':
      return `${step.address}: unbind from ${step.driver}`;
    case 'probe':
      return `${step.address}: drivers_probe, expect ${step.expect ?? 'any host driver'}`;
    case 'await-vfio-node':
      return `wait for /dev/vfio/${step.group}`;
    case 'check-viable':
      return `check IOMMU group ${step.group} is viable`;
  }
}
