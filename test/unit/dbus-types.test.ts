/** Machine properties in both directions: what the daemon encodes, the agent and the CLI decode. */
import test from 'ava';
import {
  decodeMachineProperties,
  decodeMachineState,
  decodeMachineTuple,
  machineProperties,
  machineTuple,
  type MachineRow,
} from '../../lib/bus/dbus-types.js';

const row: MachineRow = {
  name: 'win10',
  state: 'running',
  devices: ['0000:0b:00.0'],
  shmFiles: ['looking-glass'],
  lastMessage: 'started',
  user: 'alice',
  units: ['looking-glass-client.service'],
  step: 'unbinding 0000:0b:00.0 from amdgpu',
  stepSinceUsec: 1_764_000_000_000_000n,
  stateSinceUsec: 1_763_999_999_000_000n,
  shmDetails: [{ name: 'looking-glass', sizeBytes: 33554432, uid: 1000, gid: 64055, mode: 0o660 }],
  returnDrivers: [
    { address: '0000:0b:00.0', driver: 'amdgpu' },
    { address: '0000:0b:00.1', driver: null },
  ],
  heldAtBoot: ['0000:0b:00.0'],
  hostChanges: [{ kind: 'hugepages', phase: 'before-detach', describe: 'reserve 4096 2 MiB pages (nr_hugepages 0 -> 4096)' }],
};

test('Machine properties decode to what was encoded', (t) => {
  t.deepEqual(decodeMachineProperties(machineProperties(row)), row);
});

test('a ListMachines row decodes to name, state and path', (t) => {
  t.deepEqual(decodeMachineTuple(machineTuple(row)), { name: 'win10', state: 'running', path: '/org/vfiohookd1/machine/win10' });
});

test('absent properties, ones of another type and unknown states are left out', (t) => {
  t.deepEqual(decodeMachineProperties({ Name: 'win10', State: 'hibernating', Devices: [1, 2], User: 7 }), { name: 'win10' });
  t.deepEqual(decodeMachineProperties({}), {});
});

test('every state the daemon sets is known, and nothing else', (t) => {
  for (const state of ['defined', 'preparing', 'prepared', 'running', 'stopped', 'releasing', 'released', 'failed'] as const)
    t.is(decodeMachineState(state), state);
  for (const other of ['', 'Running', 'paused', 3, null]) t.is(decodeMachineState(other), null);
});
