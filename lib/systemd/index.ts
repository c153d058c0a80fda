/**
 * lib/systemd: talking to the service manager (sd_notify) and to journald
 * (structured entries), plus the journal MESSAGE_IDs. The datagram adapter
 * stays in `_internal`.
 */

export { Notifier, statusLine } from './notify.js';

export { Journal } from './journal.js';
export type { JournalOptions } from './journal.js';
export {
  DEFAULT_IDENTIFIER,
  DEFAULT_MAX_ENTRY_BYTES,
  FIELD_NAME_MAX,
  LogPriority,
  MIN_MAX_ENTRY_BYTES,
  encodeEntry,
  formatStderr,
  isValidFieldName,
} from './journal-entry.js';
export type { JournalFields, Priority } from './journal-entry.js';

export { MessageId } from './message-ids.js';

export { DatagramError } from './datagram.js';
export type { DatagramSender } from './datagram.js';
