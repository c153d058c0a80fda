/**
 * What the daemon journals for each event: priority, wording, MESSAGE_ID and
 * fields, as lib/daemon/outcome-journal.ts returns them (the ids are written
 * out: operators' saved queries match on them).
 */
import test from 'ava';
import type { OperationResult } from '../../lib/lifecycle/device-ledger.js';
import type { HookEvent } from '../../lib/lifecycle/hook-event.js';
import type { HookOutcome } from '../../lib/lifecycle/lifecycle.js';
import type { EnsureShmFileResult } from '../../lib/shm/shm-file.js';
import { manualOwner, vmOwner } from '../../lib/pci/owner.js';
import {
  hookNotReceivedEntry,
  hookOutcomeEntries,
  hookRefusedEntry,
  manualChangeEntry,
  recoveredEntries,
  staleReleasedEntry,
  goneReleasedEntries,
  goneKeptEntry,
} from '../../lib/daemon/outcome-journal.js';

const prepare: HookEvent = { domainName: 'win10', operation: 'prepare', subOperation: 'begin', extra: '-' };
const base = { VFIO_DOMAIN: 'win10', VFIO_HOOK: 'prepare begin' };

function shm(path: string, action: EnsureShmFileResult['action'], changes: string[] = []): EnsureShmFileResult {
  return { path, action, changes } as unknown as EnsureShmFileResult;
}

function outcome(parts: Partial<HookOutcome>): HookOutcome {
  return { stage: 'prepare', message: 'done', shm: [], detached: [], reattached: [], warnings: [], ...parts };
}

function detached(addresses: string[]): OperationResult {
  return { plan: { devices: addresses.map((address) => ({ address })) }, moved: addresses } as unknown as OperationResult;
}

test('a prepare journals each device detached, each shm file made or repaired, each warning, then its sentence', (t) => {
  const entries = hookOutcomeEntries(
    prepare,
    outcome({
      message: "VM 'win10' prepared: 2 device(s) on vfio-pci",
      detached: ['0000:0b:00.0', '0000:0b:00.1'],
      shm: [
        shm('/dev/shm/looking-glass', 'created'),
        shm('/dev/shm/scream', 'repaired', ['mode 0644 -> 0660', 'size 2M -> 4M']),
        shm('/dev/shm/other', 'unchanged'),
      ],
      warnings: ['something odd, ignoring'],
    }),
  );
  t.deepEqual(entries, [
    {
      priority: 6,
      message: "Device '0000:0b:00.0' detached to vfio-pci for VM 'win10'",
      fields: { ...base, PCI_ADDRESS: '0000:0b:00.0', MESSAGE_ID: 'ce36bd27e095466893c6c5c1d213d083' },
    },
    {
      priority: 6,
      message: "Device '0000:0b:00.1' detached to vfio-pci for VM 'win10'",
      fields: { ...base, PCI_ADDRESS: '0000:0b:00.1', MESSAGE_ID: 'ce36bd27e095466893c6c5c1d213d083' },
    },
    {
      priority: 6,
      message: "Shared-memory file '/dev/shm/looking-glass' created",
      fields: { ...base, SHM_PATH: '/dev/shm/looking-glass', MESSAGE_ID: '984660317c004f6089f13da7ca558791' },
    },
    {
      priority: 6,
      message: "Shared-memory file '/dev/shm/scream' repaired: mode 0644 -> 0660, size 2M -> 4M",
      fields: { ...base, SHM_PATH: '/dev/shm/scream', MESSAGE_ID: '938d6c286a404cdd8fb98e349cdc72bd' },
    },
    { priority: 4, message: 'something odd, ignoring', fields: base },
    { priority: 6, message: "VM 'win10' prepared: 2 device(s) on vfio-pci", fields: base },
  ]);
});

test('a release journals each device given back under its own MESSAGE_ID', (t) => {
  const release: HookEvent = { domainName: 'win10', operation: 'release', subOperation: 'end', extra: '-' };
  const entries = hookOutcomeEntries(release, outcome({ stage: 'release', message: 'released', reattached: ['0000:0b:00.0'] }));
  const fields = { VFIO_DOMAIN: 'win10', VFIO_HOOK: 'release end' };
  t.deepEqual(entries, [
    {
      priority: 6,
      message: "Device '0000:0b:00.0' given back to its driver after VM 'win10'",
      fields: { ...fields, PCI_ADDRESS: '0000:0b:00.0', MESSAGE_ID: 'abf8a78b57ae4f48a8daed05920aab29' },
    },
    { priority: 6, message: 'released', fields },
  ]);
});

test("a VM released at the daemon's stop journals each device and host change under 'daemon stop', then why with GONE_RELEASED", (t) => {
  const released = outcome({
    stage: 'release',
    message: "VM 'win10' released: 1 device(s) given back",
    reattached: ['0000:0b:00.0'],
    hostChanges: ['consoles bound again'],
    warnings: ['Cannot remove x, ignoring'],
  });
  const fields = { VFIO_DOMAIN: 'win10', VFIO_HOOK: 'daemon stop' };
  t.deepEqual(goneReleasedEntries('win10', released), [
    {
      priority: 6,
      message: "Device '0000:0b:00.0' given back to its driver after VM 'win10'",
      fields: { ...fields, PCI_ADDRESS: '0000:0b:00.0', MESSAGE_ID: 'abf8a78b57ae4f48a8daed05920aab29' },
    },
    { priority: 6, message: "VM 'win10': consoles bound again", fields: { ...fields, VFIO_HOST_CHANGE: 'consoles bound again' } },
    { priority: 4, message: 'Cannot remove x, ignoring', fields },
    {
      priority: 5,
      message:
        "VM 'win10' ran, but no process holds its devices any more and libvirt's release never came (libvirtd stopped or was killed " +
        "before it ran the release hook): released at vfio-hookd's stop: VM 'win10' released: 1 device(s) given back",
      fields: { ...fields, MESSAGE_ID: 'dd5b096cb7714dbf954720038fa76c41' },
    },
  ]);
  t.deepEqual(goneKeptEntry('win10', 'its devices are still held by qemu'), {
    priority: 6,
    message: "VM 'win10' keeps its devices across vfio-hookd's stop: its devices are still held by qemu",
    fields,
  });
});

test('a refused hook is an error with HOOK_REFUSED', (t) => {
  t.deepEqual(hookRefusedEntry('win10', 'prepare', 'begin', new Error("Cannot detach '0000:0b:00.0': held by 'Xorg' (pid 1234)")), {
    priority: 3,
    message: "Hook 'prepare begin' for VM 'win10' refused: Cannot detach '0000:0b:00.0': held by 'Xorg' (pid 1234)",
    fields: { VFIO_DOMAIN: 'win10', VFIO_HOOK: 'prepare begin', MESSAGE_ID: '30f0d6cf7b8648f5a3fbd751c80e18ff' },
  });
});

test('a detach by hand names its caller, and the VM it was for', (t) => {
  const caller = { uid: 1000, name: 'alice' };
  t.deepEqual(manualChangeEntry('detach', caller, vmOwner('win10'), detached(['0000:0b:00.0', '0000:0b:00.1']), null), {
    priority: 6,
    message: "Detached by hand by 'alice' (uid 1000) for VM 'win10': 0000:0b:00.0, 0000:0b:00.1",
    fields: { MESSAGE_ID: 'dcfab31185fa4f15b714caa65ce20ad6', CALLER_UID: '1000', PCI_ADDRESS: '0000:0b:00.0, 0000:0b:00.1' },
  });
  t.deepEqual(manualChangeEntry('detach', caller, manualOwner('alice'), detached(['0000:0b:00.0']), null), {
    priority: 6,
    message: "Detached by hand by 'alice' (uid 1000): 0000:0b:00.0",
    fields: { MESSAGE_ID: 'dcfab31185fa4f15b714caa65ce20ad6', CALLER_UID: '1000', PCI_ADDRESS: '0000:0b:00.0' },
  });
});

test('a reattach by hand with nothing to give back says so, without PCI_ADDRESS', (t) => {
  t.deepEqual(manualChangeEntry('reattach', { uid: 0, name: 'root' }, manualOwner('root'), detached([]), null), {
    priority: 6,
    message: "Given back by hand by 'root' (uid 0): nothing to do",
    fields: { MESSAGE_ID: 'dcfab31185fa4f15b714caa65ce20ad6', CALLER_UID: '0' },
  });
});

test('a refused manual change is a warning naming the D-Bus method and the caller', (t) => {
  const error = new Error("Invalid PCI address '0b:00'");
  t.deepEqual(manualChangeEntry('detach', { uid: 1000, name: 'alice' }, manualOwner('alice'), null, error), {
    priority: 4,
    message: "DetachDevice by 'alice' (uid 1000) refused: Invalid PCI address '0b:00'",
    fields: { MESSAGE_ID: 'dcfab31185fa4f15b714caa65ce20ad6', CALLER_UID: '1000' },
  });
  t.is(
    manualChangeEntry('reattach', { uid: 1000, name: 'alice' }, manualOwner('alice'), null, error).message,
    "ReattachDevice by 'alice' (uid 1000) refused: Invalid PCI address '0b:00'",
  );
});

test('a VM released at start, a start without prepare, and recovery notes carry their MESSAGE_IDs', (t) => {
  t.deepEqual(staleReleasedEntry('win10', outcome({ stage: 'release', message: 'gave back 0000:0b:00.0' })), {
    priority: 5,
    message: "VM 'win10' held devices but libvirt reports it not running (it stopped while vfio-hookd was down): gave back 0000:0b:00.0",
    fields: { VFIO_DOMAIN: 'win10', MESSAGE_ID: '74a64f6328dd407e8f6386af23fba335' },
  });
  t.deepEqual(hookNotReceivedEntry('win10', "VM 'win10' started, but its prepare hook never reached vfio-hookd"), {
    priority: 3,
    message: "VM 'win10' started, but its prepare hook never reached vfio-hookd",
    fields: { VFIO_DOMAIN: 'win10', MESSAGE_ID: '35724d19505e4ab482eaf63456eadfd1' },
  });
  t.deepEqual(recoveredEntries(['one', 'two']), [
    { priority: 4, message: 'one', fields: { MESSAGE_ID: 'a58203931ded49e59f63cf9e7e99316a' } },
    { priority: 4, message: 'two', fields: { MESSAGE_ID: 'a58203931ded49e59f63cf9e7e99316a' } },
  ]);
});
