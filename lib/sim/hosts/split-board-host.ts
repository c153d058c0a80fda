/**
 * A badly split board (B450 with an old AGESA, no ACS on the chipset): the
 * GTX 1070 in the chipset slot shares IOMMU group 13 with the chipset's PCIe
 * switch and the onboard NIC, which is up. Detaching the GPU would take the
 * network away: the safety rail must refuse and name the interface.
 */
import type { FixtureInput } from '../fixture.js';

export const splitBoardHost: FixtureInput = {
  name: 'split-board-host',
  description: 'B450: GTX 1070 in group 13 with a PCIe switch and the Realtek NIC (up); RX 560 for the host',
  drivers: { nouveau: {}, amdgpu: {}, snd_hda_intel: {}, r8169: {}, ahci: {}, pcieport: {}, 'vfio-pci': {} },
  devices: [
    { address: '0000:00:00.0', vendor: '1022', device: '15d0', class: '0x060000', group: 0 },
    { address: '0000:00:01.1', vendor: '1022', device: '15d3', class: '0x060400', group: 2, driver: 'pcieport' },
    {
      address: '0000:01:00.0',
      parent: '0000:00:01.1',
      vendor: '1002',
      device: '67ff',
      class: '0x030000',
      group: 3,
      driver: 'amdgpu',
      bootVga: true,
      drm: ['card0', 'renderD128'],
      consumers: ['0000:01:00.1'],
      comment: 'RX 560 (host)',
    },
    { address: '0000:01:00.1', parent: '0000:00:01.1', vendor: '1002', device: 'aae0', class: '0x040300', group: 3, driver: 'snd_hda_intel' },
    { address: '0000:00:01.3', vendor: '1022', device: '15d3', class: '0x060400', group: 13, driver: 'pcieport' },
    { address: '0000:02:00.0', parent: '0000:00:01.3', vendor: '1022', device: '43d0', class: '0x010601', group: 13, driver: 'ahci', comment: 'chipset SATA (no disks)' },
    { address: '0000:02:00.2', parent: '0000:00:01.3', vendor: '1022', device: '43c7', class: '0x060400', group: 13, driver: 'pcieport', comment: 'chipset switch' },
    { address: '0000:03:01.0', parent: '0000:02:00.2', vendor: '1022', device: '43c7', class: '0x060400', group: 13, driver: 'pcieport' },
    { address: '0000:03:04.0', parent: '0000:02:00.2', vendor: '1022', device: '43c7', class: '0x060400', group: 13, driver: 'pcieport' },
    {
      address: '0000:04:00.0',
      parent: '0000:03:01.0',
      vendor: '10ec',
      device: '8168',
      class: '0x020000',
      group: 13,
      driver: 'r8169',
      net: [{ name: 'enp4s0', up: true }],
      comment: 'Realtek RTL8111',
    },
    {
      address: '0000:05:00.0',
      parent: '0000:03:04.0',
      vendor: '10de',
      device: '1b81',
      class: '0x030000',
      group: 13,
      driver: 'nouveau',
      bootVga: false,
      drm: ['card1', 'renderD129'],
      consumers: ['0000:05:00.1'],
      comment: 'GTX 1070 (guest)',
    },
    { address: '0000:05:00.1', parent: '0000:03:04.0', vendor: '10de', device: '10f0', class: '0x040300', group: 13, driver: 'snd_hda_intel' },
  ],
  processes: [{ pid: 777, comm: 'sway', fds: ['/dev/dri/card0'] }],
  mounts: [],
};
