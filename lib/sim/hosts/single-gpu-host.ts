/**
 * A single-GPU host: one RX 6700 XT that is the boot VGA, draws the console
 * and would go to the VM. Intel board, so the CPU root port shares the GPU's
 * IOMMU group (no ACS). The display manager is stopped (no holders), but the
 * frame-buffer console still runs on the card: the safety rail must say so.
 */
import type { FixtureInput } from '../fixture.js';

export const singleGpuHost: FixtureInput = {
  name: 'single-gpu-host',
  description: 'Core i7-12700K: one RX 6700 XT (boot VGA, console) in group 2 with its root port; NVMe root disk; NIC up',
  drivers: { amdgpu: {}, snd_hda_intel: {}, nvme: {}, e1000e: {}, xhci_hcd: {}, pcieport: {}, 'vfio-pci': {} },
  devices: [
    { address: '0000:00:00.0', vendor: '8086', device: '4668', class: '0x060000', group: 0 },
    { address: '0000:00:01.0', vendor: '8086', device: '460d', class: '0x060400', group: 2, driver: 'pcieport' },
    {
      address: '0000:01:00.0',
      parent: '0000:00:01.0',
      vendor: '1002',
      device: '73df',
      subsystemVendor: '1849',
      subsystemDevice: '5219',
      class: '0x030000',
      group: 2,
      driver: 'amdgpu',
      bootVga: true,
      resetMethod: ['bus'],
      drm: ['card0', 'renderD128'],
      fb: ['fb0'],
      consumers: ['0000:01:00.1'],
      comment: 'RX 6700 XT',
    },
    {
      address: '0000:01:00.1',
      parent: '0000:00:01.0',
      vendor: '1002',
      device: 'ab28',
      class: '0x040300',
      group: 2,
      driver: 'snd_hda_intel',
    },
    { address: '0000:00:14.0', vendor: '8086', device: '7ae0', class: '0x0c0330', group: 5, driver: 'xhci_hcd' },
    {
      address: '0000:00:1f.6',
      vendor: '8086',
      device: '1a1c',
      class: '0x020000',
      group: 9,
      driver: 'e1000e',
      net: [{ name: 'eno1', up: true }],
    },
    { address: '0000:00:1d.0', vendor: '8086', device: '7ab0', class: '0x060400', group: 8, driver: 'pcieport' },
    {
      address: '0000:02:00.0',
      parent: '0000:00:1d.0',
      vendor: '15b7',
      device: '5011',
      class: '0x010802',
      group: 10,
      driver: 'nvme',
      block: [
        {
          name: 'nvme0n1',
          dev: '259:0',
          partitions: [
            { name: 'nvme0n1p1', dev: '259:1' },
            { name: 'nvme0n1p2', dev: '259:2' },
          ],
        },
      ],
    },
  ],
  mounts: [
    { source: '/dev/nvme0n1p2', mountPoint: '/', fsType: 'btrfs', dev: '0:31' },
    { source: '/dev/nvme0n1p1', mountPoint: '/boot/efi', fsType: 'vfat', dev: '259:1' },
  ],
  consoles: [{ name: 'vtcon1', description: '(M) frame buffer device', bound: true }],
};
