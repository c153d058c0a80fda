/**
 * `MESSAGE_ID`s of the events an operator searches for
 * (`journalctl MESSAGE_ID=ce36bd27e095466893c6c5c1d213d083` lists every
 * device detach). All of them live here, and only here.
 *
 * Each id was made once with `systemd-id128 new` (systemd 252) when this file
 * was written, and must never change: operators' saved queries and alerts
 * match on it. A new event gets a new id from `systemd-id128 new`; an id is
 * never reused for another meaning. 32 lowercase hex characters, as
 * journald expects.
 */
export const MessageId = {
  /** A device was unbound from its host driver and bound to vfio-pci (prepare). */
  DEVICE_DETACHED: 'ce36bd27e095466893c6c5c1d213d083',
  /** A device was given back to the driver it had before (release). */
  DEVICE_REATTACHED: 'abf8a78b57ae4f48a8daed05920aab29',
  /** A shared-memory file (Looking Glass, Scream) was created with its size, owner and mode. */
  SHM_FILE_CREATED: '984660317c004f6089f13da7ca558791',
  /** An existing shared-memory file had the wrong size, owner or mode and was put right. */
  SHM_FILE_REPAIRED: '938d6c286a404cdd8fb98e349cdc72bd',
  /** A user unit (looking-glass-client, Scream receiver) failed to start or stop. */
  UNIT_FAILED: '042dc43f9fc34d12974860ce9e24e8c2',
  /** A hook call was refused (busy device, group not viable, unsafe path, ...): the VM does not start. */
  HOOK_REFUSED: '30f0d6cf7b8648f5a3fbd751c80e18ff',
  /** A managed VM started without its prepare hook reaching us (daemon down, or hook not installed). */
  HOOK_NOT_RECEIVED: '35724d19505e4ab482eaf63456eadfd1',
  /** A failed step was undone: the devices and files this step touched are back as they were. */
  ROLLBACK_DONE: '8f434d6819904c98a9adfd9a0586e93f',
  /** A VM that held devices stopped while vfio-hookd was down; released from its record at start. */
  STALE_RELEASED: '74a64f6328dd407e8f6386af23fba335',
  /** A VM's QEMU was gone at vfio-hookd's stop with no release from libvirt; released from its record then. */
  GONE_RELEASED: 'dd5b096cb7714dbf954720038fa76c41',
  /** A device was detached or given back by hand (DetachDevice/ReattachDevice), with the caller. */
  MANUAL_CHANGE: 'dcfab31185fa4f15b714caa65ce20ad6',
  /** The state file was damaged (or an operation unfinished) at start, and was recovered from sysfs. */
  STATE_RECOVERED: 'a58203931ded49e59f63cf9e7e99316a',
  /** The devices of a `hold = "boot"` VM could not be taken at the daemon's start: the host keeps them. */
  BOOT_HOLD_FAILED: '00d934400b914cc0a79b89eb460ff137',
} as const;
