/**
 * Card functions on vfio-pci that the domain XML does not give the guest:
 * one warning each, worded by what the guest then lacks; nothing for group
 * members of other slots, nothing for a reattach.
 */
import test from 'ava';
import { unassignedFunctions } from '../../lib/pci/unassigned-functions.js';
import type { Plan, PlannedDevice } from '../../lib/pci/plan.js';

function planned(address: string, classCode: number, reason = 'requested'): PlannedDevice {
  return { address, classCode, group: 1, driver: 'x', target: 'vfio-pci', reason, changes: true };
}

const RX590: PlannedDevice[] = [planned('0000:0b:00.1', 0x040300, "same card as '0000:0b:00.0'"), planned('0000:0b:00.0', 0x030000)];
const TURING: PlannedDevice[] = [
  planned('0000:01:00.1', 0x040300),
  planned('0000:01:00.0', 0x030000),
  planned('0000:01:00.2', 0x0c0330),
  planned('0000:01:00.3', 0x0c8000),
];
const SPLIT: PlannedDevice[] = [
  planned('0000:02:00.0', 0x010601, "IOMMU group 13 with '0000:05:00.0'"),
  planned('0000:04:00.0', 0x020000, "IOMMU group 13 with '0000:05:00.0'"),
  planned('0000:05:00.1', 0x040300),
  planned('0000:05:00.0', 0x030000),
];

const cases: [string, readonly PlannedDevice[], readonly string[], readonly { address: string; message: string }[]][] = [
  [
    'the GPU given without its HDMI audio: the guest has no HDMI audio',
    RX590,
    ['0000:0b:00.0'],
    [
      {
        address: '0000:0b:00.1',
        message: "'0000:0b:00.1' is on vfio-pci but not given to 'win10': add a <hostdev> or the guest has no HDMI audio",
      },
    ],
  ],
  ['the GPU and its audio both given: nothing to say', RX590, ['0000:0b:00.0', '0000:0b:00.1'], []],
  [
    'only the audio given: the GPU itself is named, generically',
    RX590,
    ['0000:0b:00.1'],
    [
      {
        address: '0000:0b:00.0',
        message: "'0000:0b:00.0' is on vfio-pci but not given to 'win10': add a <hostdev> or neither the guest nor the host can use it",
      },
    ],
  ],
  [
    'a four-function card with only the GPU given: audio, USB-C ports, and the UCSI controller',
    TURING,
    ['0000:01:00.0'],
    [
      {
        address: '0000:01:00.1',
        message: "'0000:01:00.1' is on vfio-pci but not given to 'win10': add a <hostdev> or the guest has no HDMI audio",
      },
      {
        address: '0000:01:00.2',
        message: "'0000:01:00.2' is on vfio-pci but not given to 'win10': add a <hostdev> or the guest has no USB-C ports of the card",
      },
      {
        address: '0000:01:00.3',
        message: "'0000:01:00.3' is on vfio-pci but not given to 'win10': add a <hostdev> or neither the guest nor the host can use it",
      },
    ],
  ],
  ['group members of other slots are held, not named', SPLIT, ['0000:05:00.0', '0000:05:00.1'], []],
  [
    'a group member of another slot is not named, the card function is',
    SPLIT,
    ['0000:05:00.0'],
    [
      {
        address: '0000:05:00.1',
        message: "'0000:05:00.1' is on vfio-pci but not given to 'win10': add a <hostdev> or the guest has no HDMI audio",
      },
    ],
  ],
  ['an XML that gives nothing of the card: nothing to say (no card to speak of)', RX590, [], []],
  ['an XML that gives another card only: nothing about this one', RX590, ['0000:0c:00.0'], []],
  [
    'a USB controller beside a given one, not on a graphics card: generic wording',
    [planned('0000:06:00.1', 0x0c0330), planned('0000:06:00.3', 0x0c0330, "IOMMU group 19 with '0000:06:00.1'")],
    ['0000:06:00.1'],
    [
      {
        address: '0000:06:00.3',
        message: "'0000:06:00.3' is on vfio-pci but not given to 'win10': add a <hostdev> or neither the guest nor the host can use it",
      },
    ],
  ],
  [
    'an audio function of a sound card (no display in the slot): generic wording',
    [planned('0000:07:00.0', 0x040300), planned('0000:07:00.1', 0x040300, "IOMMU group 30 with '0000:07:00.0'")],
    ['0000:07:00.0'],
    [
      {
        address: '0000:07:00.1',
        message: "'0000:07:00.1' is on vfio-pci but not given to 'win10': add a <hostdev> or neither the guest nor the host can use it",
      },
    ],
  ],
];

for (const [what, devices, given, expected] of cases) {
  test(`unassignedFunctions: ${what}`, (t) => {
    const plan: Pick<Plan, 'kind' | 'devices'> = { kind: 'detach', devices };
    t.deepEqual(unassignedFunctions(plan, given, 'win10'), expected);
  });
}

test('unassignedFunctions says nothing about a reattach plan', (t) => {
  const plan: Pick<Plan, 'kind' | 'devices'> = { kind: 'reattach', devices: RX590.map((d) => ({ ...d, target: 'amdgpu' })) };
  t.deepEqual(unassignedFunctions(plan, ['0000:0b:00.0'], 'win10'), []);
});

test('unassignedFunctions quotes an unusual VM name as every message does', (t) => {
  const plan: Pick<Plan, 'kind' | 'devices'> = { kind: 'detach', devices: RX590 };
  t.deepEqual(unassignedFunctions(plan, new Set(['0000:0b:00.0']), 'Windows 10\n'), [
    {
      address: '0000:0b:00.1',
      message: "'0000:0b:00.1' is on vfio-pci but not given to 'Windows 10\\x0a': add a <hostdev> or the guest has no HDMI audio",
    },
  ]);
});
