/**
 * A host built to show what a detach must not take, each piece as AMD boards
 * have it, put together on one (no single real board has all of them):
 * - the AMD IOMMU function 00:00.2 (class 0x0806) beside the host bridge
 *   00:00.0, same slot, its own group; the host bridge shares group 0 with
 *   the root port of the first slot and the RX 6800 in it (a root port
 *   without ACS, as some boards have);
 * - the RX 6800's four functions in three groups: the GPU in group 0, its
 *   HDMI audio (linked to the GPU, as the kernel links them) in group 2, its
 *   USB and USB-C (UCSI) controllers, not linked, in group 3;
 * - the chipset's two USB controllers in one slot (03:00.1 and 03:00.3) but
 *   different groups, the host's keyboard and mouse on the first, a gamepad
 *   for the guest on the second;
 * - the FCH's SMBus (bound to piix4_smbus), HD Audio and LPC bridge
 *   (driverless) in one group, as older AMD chipsets put them.
 */
import type { FixtureInput } from '../fixture.js';

export const chipsetHost: FixtureInput = {
  name: 'chipset-host',
  description:
    'AMD: IOMMU function beside the host bridge; RX 6800 in group 0 with the host bridge, its functions in groups 2 and 3; ' +
    'two chipset USB controllers in one slot, the keyboard and mouse on one; SMBus, LPC bridge and HD Audio in one group',
  drivers: {
    amdgpu: {},
    snd_hda_intel: {},
    xhci_hcd: {},
    piix4_smbus: {},
    pcieport: {},
    'vfio-pci': {},
    'pci-stub': {},
  },
  devices: [
    { address: '0000:00:00.0', vendor: '1022', device: '1480', class: '0x060000', group: 0, comment: 'Starship/Matisse Root Complex' },
    { address: '0000:00:00.2', vendor: '1022', device: '1481', class: '0x080600', group: 1, comment: 'Starship/Matisse IOMMU' },
    {
      address: '0000:00:01.1',
      vendor: '1022',
      device: '1483',
      class: '0x060400',
      group: 0,
      driver: 'pcieport',
      comment: 'GPP bridge without ACS',
    },
    {
      address: '0000:01:00.0',
      parent: '0000:00:01.1',
      vendor: '1002',
      device: '73bf',
      class: '0x030000',
      group: 0,
      driver: 'amdgpu',
      bootVga: false,
      resetMethod: ['bus'],
      drm: ['card0', 'renderD128'],
      consumers: ['0000:01:00.1'],
      comment: 'RX 6800 (guest)',
    },
    {
      address: '0000:01:00.1',
      parent: '0000:00:01.1',
      vendor: '1002',
      device: 'ab28',
      class: '0x040300',
      group: 2,
      driver: 'snd_hda_intel',
      comment: 'RX 6800 HDMI audio',
    },
    {
      address: '0000:01:00.2',
      parent: '0000:00:01.1',
      vendor: '1002',
      device: '73a6',
      class: '0x0c0330',
      group: 3,
      driver: 'xhci_hcd',
      comment: 'RX 6800 USB',
    },
    {
      address: '0000:01:00.3',
      parent: '0000:00:01.1',
      vendor: '1002',
      device: '73a4',
      class: '0x0c8000',
      group: 3,
      comment: 'RX 6800 USB-C (UCSI), no driver',
    },
    { address: '0000:00:08.1', vendor: '1022', device: '1484', class: '0x060400', group: 4, driver: 'pcieport' },
    {
      address: '0000:03:00.0',
      parent: '0000:00:08.1',
      vendor: '1022',
      device: '1485',
      class: '0x130000',
      group: 5,
      comment: 'Starship/Matisse Reserved SPP',
    },
    {
      address: '0000:03:00.1',
      parent: '0000:00:08.1',
      vendor: '1022',
      device: '149c',
      class: '0x0c0330',
      group: 6,
      driver: 'xhci_hcd',
      input: [
        { name: 'CHERRY USB keyboard', kind: 'keyboard' },
        { name: 'Logitech USB Optical Mouse', kind: 'mouse' },
      ],
      comment: "Matisse USB 3.0: the host's keyboard and mouse",
    },
    {
      address: '0000:03:00.3',
      parent: '0000:00:08.1',
      vendor: '1022',
      device: '149c',
      class: '0x0c0330',
      group: 7,
      driver: 'xhci_hcd',
      input: [{ name: 'Microsoft X-Box 360 pad', kind: 'gamepad' }],
      comment: "Matisse USB 3.0: the guest's gamepad",
    },
    { address: '0000:00:14.0', vendor: '1022', device: '790b', class: '0x0c0500', group: 8, driver: 'piix4_smbus', comment: 'FCH SMBus' },
    {
      address: '0000:00:14.2',
      vendor: '1022',
      device: '780d',
      class: '0x040300',
      group: 8,
      driver: 'snd_hda_intel',
      comment: 'FCH Azalia (HD Audio)',
    },
    { address: '0000:00:14.3', vendor: '1022', device: '790e', class: '0x060100', group: 8, comment: 'FCH LPC bridge' },
  ],
};
