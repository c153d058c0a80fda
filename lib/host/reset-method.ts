/**
 * A device's reset methods while it is passed through (`reset-method`).
 *
 * `<sysfs>/bus/pci/devices/ADDR/reset_method` (Linux 5.15+,
 * Documentation/ABI/testing/sysfs-bus-pci) lists the reset methods the
 * kernel will try, in order; writing a space-separated subset keeps only
 * those, in that order, and `default` brings back every method the device
 * supports. The file is there only when the device has at least one method.
 * AMD cards that hang on a bus reset (the "reset bug") are the reason to
 * choose: `reset-method = "device_specific"` with vendor-reset, or an
 * order that tries the method that works first.
 *
 * Written before the detach (vfio-pci resets the device when it takes it and
 * when QEMU opens it), read back, and put back after the reattach from the
 * record: the list as it read before.
 *
 * The list is what the kernel probed when the device appeared, and a write
 * probes each method again: on 6.12 a GPU's `bus` listed before its HDA
 * function was added is refused with EINVAL once the HDA shares the bus
 * (the kernel tier's fact `reset-method-stale`). So apply can fail on a
 * listed method (a refusal, nothing changed), and undo, when the kernel
 * refuses the old list for that reason, writes `default`, the kernel's own
 * probe of today, which is the nearest to "as it was" that it will take.
 */
import * as v from 'valibot';

import { InvalidConfig, NoSuchDevice, q } from '../errors.js';
import { checkedRecord } from './host-change.js';
import { isPciAddress } from '../pci/address.js';
import { readFileOrNull } from '../pci/fs-reads.js';
import { pciDeviceEntry } from '../pci/sysfs-layout.js';
import type { HostChange, HostChangeRecord, HostContext } from './host-change.js';
import { REAL_TUNABLES, type TunableFiles } from './tunable-files.js';

/** The method names Linux knows (drivers/pci/pci.c, pci_reset_fn_methods[]). */
/** The record kind (lib/host/undo.ts finds the undo by it). */
export const RESET_METHOD_KIND = 'reset-method';

export const RESET_METHODS = ['device_specific', 'acpi', 'flr', 'af_flr', 'pm', 'bus', 'cxl_bus'] as const;
export type ResetMethod = (typeof RESET_METHODS)[number];

/** What undo trusts of a record read back from state.json: an address and words it may write to the device's file. */
const RECORD_SCHEMA = v.object({
  kind: v.literal('reset-method'),
  address: v.pipe(v.string(), v.check(isPciAddress)),
  before: v.array(v.picklist(RESET_METHODS)),
  methods: v.array(v.picklist(RESET_METHODS)),
});

export interface ResetMethodSettings {
  /** The device, `DDDD:BB:DD.F`. */
  readonly address: string;
  /** The configuration's `reset-method`: methods in the order to try, e.g. `"device_specific"` or `"flr bus"` (a list is accepted too). */
  readonly resetMethod: string | readonly string[];
}

export interface ResetMethodRecord extends HostChangeRecord {
  readonly kind: 'reset-method';
  readonly address: string;
  /** `reset_method` as it read before. */
  readonly before: readonly string[];
  /** What apply writes. */
  readonly methods: readonly string[];
}

export interface ResetMethodOptions {
  /** Default: the files themselves. */
  readonly files?: TunableFiles;
}

/**
 * The configured value as an ordered list of methods.
 *
 * @throws InvalidConfig for an empty list, an unknown name, or one named twice.
 */
export function parseResetMethod(value: string | readonly string[]): ResetMethod[] {
  const words =
    typeof value === 'string'
      ? value
          .trim()
          .split(/[\s,]+/)
          .filter(Boolean)
      : Array.isArray(value)
        ? [...value]
        : null;
  if (words === null || words.length === 0) {
    throw new InvalidConfig(`Invalid reset-method ${q(value)}: expected methods in the order to try, such as 'flr bus', refusing`);
  }
  const seen = new Set<string>();
  for (const w of words) {
    if (!(RESET_METHODS as readonly string[]).includes(w)) {
      throw new InvalidConfig(
        `Invalid reset-method ${q(value)}: ${q(w)} is not a reset method Linux knows (${RESET_METHODS.join(', ')}), refusing`,
      );
    }
    if (seen.has(w)) throw new InvalidConfig(`Invalid reset-method ${q(value)}: ${q(w)} is named twice, refusing`);
    seen.add(w);
  }
  return words as ResetMethod[];
}

function words(text: string): string[] {
  return text.trim().split(/\s+/).filter(Boolean);
}

/**
 * Plan the change: read the device's methods, check the wanted ones among
 * them. Nothing is changed.
 *
 * @throws NoSuchDevice when there is no such device.
 * @throws InvalidConfig for a bad value, a kernel without `reset_method`, or a method the device does not offer.
 */
export async function planResetMethod(
  settings: ResetMethodSettings,
  context: HostContext,
  options: ResetMethodOptions = {},
): Promise<HostChange<ResetMethodRecord>> {
  const files = options.files ?? REAL_TUNABLES;
  const methods = parseResetMethod(settings.resetMethod);
  if (!isPciAddress(settings.address)) throw new InvalidConfig(`Invalid PCI address ${q(settings.address)} for reset-method, refusing`);
  const file = pciDeviceEntry(context.roots, settings.address, 'reset_method');
  if ((await readFileOrNull(pciDeviceEntry(context.roots, settings.address, 'vendor'))) === null) {
    throw new NoSuchDevice(
      `Cannot set reset-method of ${q(settings.address)}: there is no such PCI device; check the address with 'vfio-hookctl devices', refusing`,
    );
  }
  const text = await files.read(file);
  if (text === null) {
    throw new InvalidConfig(
      `Cannot set reset-method of ${q(settings.address)}: the kernel has no reset_method for it (Linux older than 5.15, or the device has no reset method); ` +
        `remove reset-method, refusing`,
    );
  }
  const before = words(text);
  const missing = methods.filter((m) => !before.includes(m));
  if (missing.length > 0) {
    throw new InvalidConfig(
      `Invalid reset-method ${q(methods.join(' '))} for ${q(settings.address)}: the kernel offers ${q(before.join(' '))} for it, not ${q(missing.join(' '))}; ` +
        `choose among those (a module such as vendor-reset adds device_specific), refusing`,
    );
  }
  const record: ResetMethodRecord = { kind: 'reset-method', address: settings.address, before, methods };
  return {
    record,
    describe: `set reset_method of ${settings.address} to '${methods.join(' ')}' (was '${before.join(' ')}')`,
    phase: 'before-detach',
    apply: () => writeMethods(files, context, record.address, methods),
  };
}

/** Write the list; the errno name when the kernel refuses it (EINVAL: a method does not probe now), null when taken. */
async function tryWrite(files: TunableFiles, file: string, text: string): Promise<string | null> {
  try {
    await files.write(file, text);
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === undefined) throw error;
    return code;
  }
}

async function writeMethods(files: TunableFiles, context: HostContext, address: string, methods: readonly string[]): Promise<void> {
  const file = pciDeviceEntry(context.roots, address, 'reset_method');
  const code = await tryWrite(files, file, `${methods.join(' ')}\n`);
  if (code !== null) {
    throw new InvalidConfig(
      `Cannot set reset_method of ${q(address)} to ${q(methods.join(' '))}: the kernel refused it (${code})` +
        (code === 'EINVAL'
          ? ', as it does for a method that no longer works for the device (a bus reset once another function shares its bus)'
          : '') +
        `; choose another of its methods, refusing`,
    );
  }
  const got = words((await files.read(file)) ?? '');
  if (got.join(' ') !== methods.join(' ')) {
    throw new InvalidConfig(
      `Cannot set reset_method of ${q(address)} to ${q(methods.join(' '))}: it reads back ${q(got.join(' '))}, refusing`,
    );
  }
}

/**
 * Put the list back as the record found it. Idempotent. A device that is
 * gone (hot-unplugged) has nothing to restore: a new one starts from the
 * kernel's default.
 */
export async function undoResetMethod(record: HostChangeRecord, context: HostContext, options: ResetMethodOptions = {}): Promise<void> {
  const r = checkedRecord(RECORD_SCHEMA, record, "the device's reset_method: write 'default' to /sys/bus/pci/devices/ADDR/reset_method");
  const files = options.files ?? REAL_TUNABLES;
  const now = await files.read(pciDeviceEntry(context.roots, r.address, 'reset_method'));
  if (now === null || words(now).join(' ') === r.before.join(' ')) return;
  const file = pciDeviceEntry(context.roots, r.address, 'reset_method');
  // The old list no longer probes (see the file comment): the kernel's default is what it will take.
  const code = await tryWrite(files, file, `${r.before.join(' ')}\n`);
  if (code === 'EINVAL') await files.write(file, 'default\n');
  else if (code !== null) await writeMethods(files, context, r.address, r.before); // the refusal, said as apply says it
}
