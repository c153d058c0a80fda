/**
 * After a detach for a VM: the functions of a card the guest gets that the
 * guest itself does not get. They sit on vfio-pci, lost to the host and
 * unused by the guest, usually because the domain XML names the GPU but not
 * its HDMI audio. Pure: the caller (the lifecycle) journals the warnings and
 * passes them to the hook's stderr.
 *
 * Only functions of a slot (a card) the XML gives a device of are named.
 * Devices that came along only because they share an IOMMU group with the
 * card (another slot: a chipset SATA controller behind the same bridge) are
 * left out: they are held so that VFIO can hand out the group, nobody is
 * expected to give them to the guest, and the plan's reasons already say why
 * they moved.
 */
import { slotOf } from './address.js';
import { isAudio, isDisplay, isUsbController } from './class-code.js';
import { q } from '../errors.js';
import type { Plan } from './plan.js';

export interface UnassignedFunction {
  readonly address: string;
  /** One sentence: `'0000:0b:00.1' is on vfio-pci but not given to 'win10': add a <hostdev> or the guest has no HDMI audio`. */
  readonly message: string;
}

/**
 * @param plan the detach plan that ran (a reattach plan gives nothing).
 * @param given the normalised source addresses of the domain's PCI
 *   `<hostdev>`s (lib/domain DomainHostdev.address).
 * @param vm the domain's name, for the message.
 * @returns one warning per function, in address order.
 */
export function unassignedFunctions(plan: Pick<Plan, 'kind' | 'devices'>, given: Iterable<string>, vm: string): UnassignedFunction[] {
  if (plan.kind !== 'detach') return [];
  const givenSet = new Set(given);
  const slots = new Set([...givenSet].map(slotOf));
  const graphicsSlots = new Set(plan.devices.filter((d) => isDisplay(d.classCode)).map((d) => slotOf(d.address)));
  return plan.devices
    .filter((d) => d.target !== null && slots.has(slotOf(d.address)) && !givenSet.has(d.address))
    .map((d) => {
      const card = graphicsSlots.has(slotOf(d.address));
      const loss =
        card && isAudio(d.classCode)
          ? 'the guest has no HDMI audio'
          : card && isUsbController(d.classCode)
            ? 'the guest has no USB-C ports of the card'
            : 'neither the guest nor the host can use it';
      return {
        address: d.address,
        message: `${q(d.address)} is on vfio-pci but not given to ${q(vm)}: add a <hostdev> or ${loss}`,
      };
    })
    .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}
