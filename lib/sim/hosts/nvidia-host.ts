/**
 * An NVIDIA Turing card with four functions in one IOMMU group: VGA, HDMI
 * audio, USB 3.1 (VirtualLink) and the USB-C UCSI serial bus controller. All
 * four must go to vfio-pci together. A second, Intel iGPU drives the host.
 */
import type { FixtureInput } from '../fixture.js';

export const nvidiaHost: FixtureInput = {
  name: 'nvidia-host',
  description: 'RTX 2080 (4 functions: VGA, audio, USB, UCSI) in group 1 for the guest; Intel iGPU for the host',
  drivers: { nvidia: {}, snd_hda_intel: {}, xhci_hcd: {}, 'nvidia-gpu': {}, i915: {}, nvme: {}, pcieport: {}, 'vfio-pci': {} },
  devices: [
    { address: '0000:00:00.0', vendor: '8086', device: '3e30', class: '0x060000', group: 0 },
    { address: '0000:00:01.0', vendor: '8086', device: '1901', class: '0x060400', group: 1, driver: 'pcieport' },
    {
      address: '0000:00:02.0',
      vendor: '8086',
      device: '3e98',
      class: '0x030000',
      group: 2,
      driver: 'i915',
      bootVga: true,
      drm: ['card0', 'renderD128'],
      fb: ['fb0'],
      comment: 'UHD 630 (host)',
    },
    {
      address: '0000:01:00.0',
      parent: '0000:00:01.0',
      vendor: '10de',
      device: '1e87',
      subsystemVendor: '1458',
      subsystemDevice: '37c2',
      class: '0x030000',
      group: 1,
      driver: 'nvidia',
      bootVga: false,
      resetMethod: ['bus'],
      drm: ['card1', 'renderD129'],
      consumers: ['0000:01:00.1'],
      comment: 'RTX 2080',
    },
    {
      address: '0000:01:00.1',
      parent: '0000:00:01.0',
      vendor: '10de',
      device: '10f8',
      class: '0x040300',
      group: 1,
      driver: 'snd_hda_intel',
    },
    { address: '0000:01:00.2', parent: '0000:00:01.0', vendor: '10de', device: '1ad8', class: '0x0c0330', group: 1, driver: 'xhci_hcd' },
    { address: '0000:01:00.3', parent: '0000:00:01.0', vendor: '10de', device: '1ad9', class: '0x0c8000', group: 1, driver: 'nvidia-gpu' },
    { address: '0000:00:1d.0', vendor: '8086', device: 'a330', class: '0x060400', group: 8, driver: 'pcieport' },
    {
      address: '0000:02:00.0',
      parent: '0000:00:1d.0',
      vendor: '144d',
      device: 'a80a',
      class: '0x010802',
      group: 9,
      driver: 'nvme',
      block: [{ name: 'nvme0n1', dev: '259:0', partitions: [{ name: 'nvme0n1p1', dev: '259:1' }] }],
    },
  ],
  processes: [{ pid: 901, comm: 'Xorg', fds: ['/dev/dri/card0', '/dev/dri/renderD128'] }],
  mounts: [{ source: '/dev/nvme0n1p1', mountPoint: '/', fsType: 'xfs', dev: '259:1' }],
};
