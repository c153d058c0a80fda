/**
 * What the daemon journals about each event, as plain data: wording,
 * priority, `MESSAGE_ID` and fields. start-daemon.ts hands the entries to the
 * journal as they are; test/unit/outcome-journal.test.ts pins them. The ids
 * themselves live in lib/systemd/message-ids.ts.
 */
import type { BootHoldResult, HookOutcome } from '../lifecycle/lifecycle.js';
import type { HookEvent } from '../lifecycle/hook-event.js';
import type { OperationResult } from '../lifecycle/device-ledger.js';
import { describeOwner, type Owner } from '../pci/owner.js';
import { LogPriority, MessageId, type JournalFields, type Priority } from '../systemd/index.js';
import { bootHoldFailure, type Caller } from './daemon-backend.js';
import { ManagerMember } from '../bus/names.js';

export interface JournalEntry {
  readonly priority: Priority;
  readonly message: string;
  readonly fields: JournalFields;
}

/** A hook that acted: each device moved, each shm file made or put right, each warning, then the outcome's sentence. */
export function hookOutcomeEntries(event: HookEvent, outcome: HookOutcome): JournalEntry[] {
  const base = { VFIO_DOMAIN: event.domainName, VFIO_HOOK: `${event.operation} ${event.subOperation}` };
  const entries: JournalEntry[] = [];
  for (const address of outcome.detached) {
    entries.push(
      info(`Device '${address}' detached to vfio-pci for VM '${event.domainName}'`, {
        ...base,
        PCI_ADDRESS: address,
        MESSAGE_ID: MessageId.DEVICE_DETACHED,
      }),
    );
  }
  for (const address of outcome.reattached) entries.push(reattachedEntry(address, event.domainName, base));
  for (const shm of outcome.shm) {
    if (shm.action === 'unchanged') continue;
    const created = shm.action === 'created';
    entries.push(
      info(created ? `Shared-memory file '${shm.path}' created` : `Shared-memory file '${shm.path}' repaired: ${shm.changes.join(', ')}`, {
        ...base,
        SHM_PATH: shm.path,
        MESSAGE_ID: created ? MessageId.SHM_FILE_CREATED : MessageId.SHM_FILE_REPAIRED,
      }),
    );
  }
  for (const change of outcome.hostChanges ?? []) {
    entries.push(info(`VM '${event.domainName}': ${change}`, { ...base, VFIO_HOST_CHANGE: change }));
  }
  for (const warning of outcome.warnings) entries.push({ priority: LogPriority.warning, message: warning, fields: base });
  entries.push(info(outcome.message, base));
  return entries;
}

/** A hook refused (bad arguments, or its stage failed): the VM does not start, or its release did not finish. */
export function hookRefusedEntry(domainName: string, operation: string, subOperation: string, error: unknown): JournalEntry {
  return {
    priority: LogPriority.err,
    message: `Hook '${operation} ${subOperation}' for VM '${domainName}' refused: ${(error as Error).message}`,
    fields: { VFIO_DOMAIN: domainName, VFIO_HOOK: `${operation} ${subOperation}`, MESSAGE_ID: MessageId.HOOK_REFUSED },
  };
}

/** A `DetachDevice` or `ReattachDevice` call, done (`error` null) or refused, with its caller. */
export function manualChangeEntry(
  what: 'detach' | 'reattach',
  caller: Caller,
  owner: Owner,
  result: OperationResult | null,
  error: unknown,
): JournalEntry {
  const devices = result ? result.plan.devices.map((d) => d.address).join(', ') : '';
  const fields = { MESSAGE_ID: MessageId.MANUAL_CHANGE, CALLER_UID: String(caller.uid), ...(devices ? { PCI_ADDRESS: devices } : {}) };
  if (error !== null) {
    const member = what === 'detach' ? ManagerMember.DetachDevice : ManagerMember.ReattachDevice;
    return {
      priority: LogPriority.warning,
      message: `${member} by '${caller.name}' (uid ${caller.uid}) refused: ${(error as Error).message}`,
      fields,
    };
  }
  if (what === 'detach') {
    return info(
      `Detached by hand by '${caller.name}' (uid ${caller.uid})${owner.kind === 'vm' ? ` for ${describeOwner(owner)}` : ''}: ${devices}`,
      fields,
    );
  }
  return info(`Given back by hand by '${caller.name}' (uid ${caller.uid}): ${devices || 'nothing to do'}`, fields);
}

/** A VM that held devices but had stopped while the daemon was down, released at start. */
export function staleReleasedEntry(name: string, outcome: HookOutcome): JournalEntry {
  return {
    priority: LogPriority.notice,
    message: `VM '${name}' held devices but libvirt reports it not running (it stopped while vfio-hookd was down): ${outcome.message}`,
    fields: { VFIO_DOMAIN: name, MESSAGE_ID: MessageId.STALE_RELEASED },
  };
}

function reattachedEntry(address: string, vm: string, base: JournalFields): JournalEntry {
  return info(`Device '${address}' given back to its driver after VM '${vm}'`, {
    ...base,
    PCI_ADDRESS: address,
    MESSAGE_ID: MessageId.DEVICE_REATTACHED,
  });
}

/**
 * A VM released at the daemon's stop because its QEMU was gone with no
 * release from libvirt (DaemonBackend.releaseGone): each device given back,
 * each host change undone, each warning, then why, with its MESSAGE_ID.
 */
export function goneReleasedEntries(name: string, outcome: HookOutcome): JournalEntry[] {
  const base = { VFIO_DOMAIN: name, VFIO_HOOK: 'daemon stop' };
  return [
    ...outcome.reattached.map((address) => reattachedEntry(address, name, base)),
    ...(outcome.hostChanges ?? []).map((change) => info(`VM '${name}': ${change}`, { ...base, VFIO_HOST_CHANGE: change })),
    ...outcome.warnings.map((warning): JournalEntry => ({ priority: LogPriority.warning, message: warning, fields: base })),
    {
      priority: LogPriority.notice,
      message:
        `VM '${name}' ran, but no process holds its devices any more and libvirt's release never came ` +
        `(libvirtd stopped or was killed before it ran the release hook): released at vfio-hookd's stop: ${outcome.message}`,
      fields: { ...base, MESSAGE_ID: MessageId.GONE_RELEASED },
    },
  ];
}

/** A VM that ran and keeps its devices at the daemon's stop (its QEMU still holds them, or that cannot be told). */
export function goneKeptEntry(name: string, why: string): JournalEntry {
  return info(`VM '${name}' keeps its devices across vfio-hookd's stop: ${why}`, { VFIO_DOMAIN: name, VFIO_HOOK: 'daemon stop' });
}

/** A managed VM that libvirt started without its prepare hook reaching us (`warning` from DaemonBackend.domainStarted). */
export function hookNotReceivedEntry(name: string, warning: string): JournalEntry {
  return { priority: LogPriority.err, message: warning, fields: { VFIO_DOMAIN: name, MESSAGE_ID: MessageId.HOOK_NOT_RECEIVED } };
}

/**
 * The devices of a `hold = "boot"` VM taken at start: each device moved (as
 * a hook's detach is), then one sentence; or the error that kept them with
 * the host.
 */
export function bootHoldEntries(result: BootHoldResult): JournalEntry[] {
  const base = { VFIO_DOMAIN: result.name, VFIO_HOOK: 'daemon start' };
  if (result.error !== null) {
    return [{ priority: LogPriority.err, message: bootHoldFailure(result), fields: { ...base, MESSAGE_ID: MessageId.BOOT_HOLD_FAILED } }];
  }
  const entries = result.detached.map((address) =>
    info(`Device '${address}' detached to vfio-pci at start, held at boot for VM '${result.name}'`, {
      ...base,
      PCI_ADDRESS: address,
      MESSAGE_ID: MessageId.DEVICE_DETACHED,
    }),
  );
  const adopted =
    result.adopted.length === 0
      ? ''
      : `; ${result.adopted.map((a) => `'${a}'`).join(', ')} already on vfio-pci (the initrd?), adopted with the original driver unknown`;
  entries.push(
    info(
      `VM '${result.name}' holds ${result.held.map((a) => `'${a}'`).join(', ')} at boot: on vfio-pci until the host shuts down${adopted}`,
      base,
    ),
  );
  return entries;
}

/** What recovery at start put right in the state file, one entry a note. */
export function recoveredEntries(notes: readonly string[]): JournalEntry[] {
  return notes.map((note) => ({ priority: LogPriority.warning, message: note, fields: { MESSAGE_ID: MessageId.STATE_RECOVERED } }));
}

function info(message: string, fields: JournalFields): JournalEntry {
  return { priority: LogPriority.info, message, fields };
}
