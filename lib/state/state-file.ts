/**
 * What vfio-hookd has done, so that what was done decides what is undone:
 *
 * - `claims`: each device it moved to vfio-pci, for whom (a typed owner),
 *   and the driver and override it had before (or that the truth is unknown);
 *   `hold: 'boot'` on those taken at the daemon's start and never given back
 *   at release;
 * - `machines`: per VM, what its prepare did (the shm files it made or
 *   repaired, with size, owner, group and mode; the user and units; the
 *   devices asked for; the host changes it made, each saved before it was
 *   made: units stopped, consoles unbound, ...). `started`, `stopped` and `release` act on this
 *   record, never on today's configuration;
 * - `pending`: the write-ahead record of a device operation in progress:
 *   written before its first sysfs write, cleared with its last. A restart
 *   that finds one finishes or undoes it (lib/lifecycle/recovery.ts).
 *
 * Kept in `<run>/vfio-hookd/state.json`, written atomically: a temp file in
 * the same folder, fsync, rename over the old one, fsync the folder. A reader
 * sees the old state or the new one, never half of either. Version 1 files
 * (claims only, owners as bare names) are read and upgraded.
 *
 * A damaged file (empty, truncated, not JSON, a future version, a symlink, a
 * directory, a claim that does not validate) is never echoed to anyone and
 * never stops the daemon: `loadOrSetAside` moves it aside and the caller
 * rebuilds what sysfs can tell.
 */
import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { DamagedState, q } from '../errors.js';
import { isPciAddress } from '../pci/address.js';
import { manualOwner, vmOwner, type Owner } from '../pci/owner.js';

const STATE_VERSION = 2;
/** Largest state file read: far beyond any real one (a claim is ~200 bytes). */
const STATE_MAX_BYTES = 4 * 1024 * 1024;

const Address = v.pipe(v.string(), v.check(isPciAddress, 'expected a PCI address'));

const OwnerSchema = v.variant('kind', [
  v.object({ kind: v.literal('vm'), name: v.pipe(v.string(), v.minLength(1)) }),
  v.object({ kind: v.literal('manual'), user: v.pipe(v.string(), v.minLength(1)) }),
  v.object({ kind: v.literal('unknown') }),
]);

const ClaimSchema = v.object({
  owner: OwnerSchema,
  /** The driver it had before; null when it was driverless. Meaningless when `originalKnown` is false. */
  originalDriver: v.nullable(v.string()),
  /** The `driver_override` it had before. */
  originalOverride: v.nullable(v.string()),
  /** False when nobody knows the driver it had: reattach lets the kernel choose. */
  originalKnown: v.boolean(),
  group: v.nullable(v.number()),
  since: v.string(),
  /**
   * 'boot': taken for its VM at the daemon's start (`hold = "boot"`), kept on
   * vfio-pci at the VM's release and by recovery; given back only by hand.
   * Absent: held while the VM runs. Decides alone: today's configuration
   * never changes what a claim says.
   */
  hold: v.optional(v.literal('boot')),
});

const ShmRecordSchema = v.object({
  name: v.string(),
  path: v.string(),
  sizeBytes: v.number(),
  uid: v.number(),
  gid: v.number(),
  mode: v.number(),
  /** What the prepare did to it. */
  action: v.picklist(['created', 'repaired', 'unchanged']),
});

/**
 * One change to the host around the VM (lib/host/host-change.ts), saved
 * before it is applied: `record` is what its kind's undo needs. The record's
 * own fields are checked by that undo (lib/host/undo.ts); here only that it
 * is an object with a kind, so a damaged entry makes the file damaged, as
 * any other unexpected value does.
 */
const HostChangeEntrySchema = v.object({
  phase: v.picklist(['before-detach', 'after-detach']),
  describe: v.string(),
  record: v.looseObject({ kind: v.pipe(v.string(), v.minLength(1)) }),
});

const MachineSchema = v.object({
  /** `preparing` until its prepare finished; `prepared` after. */
  stage: v.picklist(['preparing', 'prepared']),
  devices: v.array(Address),
  user: v.nullable(v.string()),
  units: v.array(v.string()),
  removeShmOnStop: v.boolean(),
  shm: v.array(ShmRecordSchema),
  since: v.string(),
  /** The host changes its prepare made (or began), in the order made; absent in files from before they existed. */
  hostChanges: v.optional(v.array(HostChangeEntrySchema)),
});

const DeviceBeforeSchema = v.object({
  address: Address,
  driver: v.nullable(v.string()),
  override: v.nullable(v.string()),
  group: v.nullable(v.number()),
});

const PendingSchema = v.object({
  kind: v.picklist(['detach', 'reattach']),
  owner: OwnerSchema,
  /** Every device the operation may touch, as it was before the first write. */
  devices: v.array(DeviceBeforeSchema),
  since: v.string(),
});

const StateSchema = v.object({
  version: v.literal(STATE_VERSION),
  claims: v.record(Address, ClaimSchema),
  machines: v.optional(v.record(v.string(), MachineSchema), {}),
  pending: v.optional(v.nullable(PendingSchema), null),
});

const V1ClaimSchema = v.object({
  owner: v.pipe(v.string(), v.minLength(1)),
  originalDriver: v.nullable(v.string()),
  originalOverride: v.nullable(v.string()),
  group: v.nullable(v.number()),
  since: v.string(),
});
const V1StateSchema = v.object({ version: v.literal(1), claims: v.record(Address, V1ClaimSchema) });

export type ClaimRecord = v.InferOutput<typeof ClaimSchema>;
export type ShmRecord = v.InferOutput<typeof ShmRecordSchema>;
export type MachineRecord = v.InferOutput<typeof MachineSchema>;
export type HostChangeEntry = v.InferOutput<typeof HostChangeEntrySchema>;
export type DeviceBefore = v.InferOutput<typeof DeviceBeforeSchema>;
export type PendingOperation = v.InferOutput<typeof PendingSchema>;

export interface State {
  readonly claims: ReadonlyMap<string, ClaimRecord>;
  readonly machines: ReadonlyMap<string, MachineRecord>;
  readonly pending: PendingOperation | null;
}

export const EMPTY_STATE: State = { claims: new Map(), machines: new Map(), pending: null };

/** Version 1 called manual detaches 'dbus' (DetachDevice) and 'vfio-hookctl' (the CLI). */
function ownerFromV1(name: string): Owner {
  return name === 'dbus' || name === 'vfio-hookctl' ? manualOwner('root') : vmOwner(name);
}

export class StateFile {
  readonly path: string;
  readonly #dir: string;

  /** `runRoot` is the injected `/run`; the file is `<runRoot>/vfio-hookd/state.json`. */
  constructor(runRoot: string) {
    this.#dir = path.join(runRoot, 'vfio-hookd');
    this.path = path.join(this.#dir, 'state.json');
  }

  /** The folder of the state file (and of its lock). */
  get dir(): string {
    return this.#dir;
  }

  /**
   * The recorded state; empty when there is none yet.
   *
   * @throws DamagedState when the file exists but cannot be trusted; its message never quotes the file's content.
   */
  async load(): Promise<State> {
    let handle: fs.FileHandle;
    try {
      // O_NOFOLLOW: a symlink here was not made by us (we rename real files into place).
      handle = await fs.open(this.path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return EMPTY_STATE;
      if (code === 'ELOOP') throw new DamagedState(`State file ${q(this.path)} is a symbolic link`);
      throw new DamagedState(`State file ${q(this.path)} cannot be opened (${code ?? (error as Error).message})`);
    }
    let text: string;
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw new DamagedState(`State file ${q(this.path)} is not a regular file`);
      if (stat.size > STATE_MAX_BYTES)
        throw new DamagedState(`State file ${q(this.path)} is ${stat.size} bytes, more than the ${STATE_MAX_BYTES} accepted`);
      text = await handle.readFile('utf8');
    } catch (error) {
      if (error instanceof DamagedState) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      throw new DamagedState(`State file ${q(this.path)} cannot be read (${code ?? 'error'})`);
    } finally {
      await handle.close();
    }
    return parseState(text, this.path);
  }

  /**
   * Load, or, when the file is damaged, move it aside (`state.json.damaged-<time>`)
   * and return an empty state with the reason. Never throws for a damaged file.
   */
  async loadOrSetAside(now: Date = new Date()): Promise<{ state: State; damaged: string | null }> {
    try {
      return { state: await this.load(), damaged: null };
    } catch (error) {
      if (!(error instanceof DamagedState)) throw error;
      const aside = `${this.path}.damaged-${now.toISOString().replace(/[:.]/g, '-')}`;
      try {
        await fs.rename(this.path, aside);
      } catch (renameError) {
        // A directory that is not empty, say: remove what cannot be moved.
        await fs.rm(this.path, { recursive: true, force: true });
        return {
          state: EMPTY_STATE,
          damaged: `${error.message}; it could not be moved aside (${(renameError as Error).message}) and was removed`,
        };
      }
      return { state: EMPTY_STATE, damaged: `${error.message}; moved aside to ${q(aside)}` };
    }
  }

  async save(state: State): Promise<void> {
    await fs.mkdir(this.#dir, { recursive: true, mode: 0o755 });
    const body = serialiseState(state);
    // Unique per save: two saves in the same millisecond must not collide.
    const temp = path.join(this.#dir, `.state.json.${process.pid}.${randomUUID()}`);
    const handle = await fs.open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(body);
      await handle.sync();
    } catch (error) {
      await handle.close();
      await fs.rm(temp, { force: true });
      throw error;
    }
    await handle.close();
    try {
      await fs.rename(temp, this.path);
    } catch (error) {
      await fs.rm(temp, { force: true });
      throw error;
    }
    const dirHandle = await fs.open(this.#dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }
}

function sortedObject<T>(map: ReadonlyMap<string, T>): Record<string, T> {
  return Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function serialiseState(state: State): string {
  return (
    JSON.stringify(
      { version: STATE_VERSION, claims: sortedObject(state.claims), machines: sortedObject(state.machines), pending: state.pending },
      null,
      2,
    ) + '\n'
  );
}

/** Parse a state file's text. @throws DamagedState, with the path and the reason but never the text. */
function parseState(text: string, file: string): State {
  if (text.trim() === '') throw new DamagedState(`State file ${q(file)} is empty`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new DamagedState(`State file ${q(file)} is not valid JSON (truncated or overwritten)`);
  }
  const version = typeof json === 'object' && json !== null && 'version' in json ? (json as { version: unknown }).version : undefined;
  if (version === 1) {
    const old = v.safeParse(V1StateSchema, json);
    if (!old.success) throw new DamagedState(`State file ${q(file)} (version 1) is not valid: ${problems(old.issues)}`);
    const claims = new Map<string, ClaimRecord>();
    for (const [address, c] of Object.entries(old.output.claims)) {
      claims.set(address, { ...c, owner: ownerFromV1(c.owner), originalKnown: c.originalDriver !== 'vfio-pci' });
    }
    return { claims, machines: new Map(), pending: null };
  }
  if (typeof version === 'number' && version > STATE_VERSION) {
    throw new DamagedState(`State file ${q(file)} is version ${version}, newer than this vfio-hookd (${STATE_VERSION}) understands`);
  }
  const result = v.safeParse(StateSchema, json);
  if (!result.success) throw new DamagedState(`State file ${q(file)} is not valid: ${problems(result.issues)}`);
  return {
    claims: new Map(Object.entries(result.output.claims)),
    machines: new Map(Object.entries(result.output.machines)),
    pending: result.output.pending,
  };
}

/** Where the schema failed, never what the file said there (it is not echoed). */
function problems(issues: readonly v.BaseIssue<unknown>[]): string {
  const paths = [...new Set(issues.map((i) => v.getDotPath(i) ?? '(top)'))];
  return `unexpected values at ${paths.slice(0, 5).map(q).join(', ')}${paths.length > 5 ? ` and ${paths.length - 5} more` : ''}`;
}
