/**
 * A simulated sysfs write as one transition, as the kernel makes it.
 *
 * A real kernel finishes a sysfs write or does not make it at all when the
 * writing process is killed: the kernel does not die with the process. The
 * simulated kernel lives in the writing process, and one simulated write is
 * several file operations (a `driver` link, the driver's back link, DRM
 * nodes, `/dev/vfio/<group>`), so a writer killed between two of them would
 * leave a state no kernel can be in. To rule that out, a write is a
 * transition with a write-ahead record:
 *
 * 1. The write decides, from the folder as it is, every file operation it
 *    will make (`FileOp`, plain data: make this file, this link, this folder,
 *    remove that). Deciding changes nothing.
 * 2. It writes that list to `pending-write.json.tmp` and renames it to
 *    `pending-write.json`. The rename is the instant the write happens:
 *    killed before it, the write never happened; after it, it did.
 * 3. It applies the operations, then removes the record.
 *
 * Every open of the simulated host (`openSimHost`, so `SimKernel.open`, so
 * the next daemon or CLI on the folder), and every later write, first rolls
 * a left-over record forward: applies its operations again and removes it.
 * Each operation sets a path to a value or removes it, and replaying the
 * whole list from the start gives the same result from any point it was cut
 * at, so a record can be rolled forward any number of times, even when the
 * roll forward itself is killed. A left-over temporary record is a write
 * that never happened and is removed.
 *
 * Nothing is fsynced, on purpose: what the simulation guards against is a
 * killed process, and what a process wrote survives it in the page cache.
 * A machine crash does not matter, as real sysfs does not survive a reboot
 * either. All of this runs under the host's write lock (sim-lock.ts).
 *
 * Fault injection, for tests of the simulation itself:
 * `VFIO_HOOKD_SIM_KILL_AT_FILE_OP=N` makes this process SIGKILL itself right
 * before the Nth file operation of its simulated writes (counted from 1,
 * over the process's life; the record's own operations and any roll forward
 * count too, building a host does not).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { InvalidArgs, InvalidConfig, UnsafePath, q } from '../errors.js';
import { isWithin } from '../roots.js';

/** One change to the folder. Paths are absolute when planned, relative to the host folder in the record. */
export type FileOp =
  /** Make a folder and its parents. */
  | { readonly op: 'mkdir'; readonly path: string }
  /** Make a file with this content (and its folder). */
  | { readonly op: 'write'; readonly path: string; readonly content: string }
  /** Make a symlink whose text is `target` (and its folder), replacing what is there. */
  | { readonly op: 'link'; readonly path: string; readonly target: string }
  /** Remove a file, link or folder tree, if there. */
  | { readonly op: 'remove'; readonly path: string };

/** The write a record is for, for the reader of a left-over record. */
interface SimWrite {
  /** The attribute written, relative to the host folder. */
  readonly file: string;
  readonly data: string;
}

const PENDING_WRITE_FILE = 'pending-write.json';
const PENDING_TEMP_FILE = `${PENDING_WRITE_FILE}.tmp`;
export const KILL_AT_FILE_OP_ENV = 'VFIO_HOOKD_SIM_KILL_AT_FILE_OP';

/** A link op whose text is `target` relative to the link's folder, as sysfs makes its links. */
export function relLinkOp(linkPath: string, target: string): FileOp {
  return { op: 'link', path: linkPath, target: path.relative(path.dirname(linkPath), target) };
}

/** A positive count from the environment, or null when unset. */
export function envCount(name: string): number | null {
  const text = process.env[name];
  if (text === undefined || text === '') return null;
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new InvalidArgs(`Invalid ${name} ${q(text)}: expected a positive whole number`);
  return Number(text);
}

let fileOps = 0;

/** Run one file operation of a simulated write: the place a fault-injection kill lands. */
async function step<T>(operation: () => Promise<T>): Promise<T> {
  fileOps += 1;
  if (fileOps === envCount(KILL_AT_FILE_OP_ENV)) process.kill(process.pid, 'SIGKILL');
  return operation();
}

type Step = <T>(operation: () => Promise<T>) => Promise<T>;
const uncounted: Step = (operation) => operation();

/** Run `make`, and when its folder is missing, make the folder and run it again. */
async function inFolder(file: string, make: () => Promise<void>, run: Step): Promise<void> {
  try {
    await run(make);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    await run(() => fs.mkdir(path.dirname(file), { recursive: true }));
    await run(make);
  }
}

async function apply(ops: readonly FileOp[], run: Step): Promise<void> {
  for (const o of ops) {
    switch (o.op) {
      case 'mkdir':
        await run(() => fs.mkdir(o.path, { recursive: true }));
        break;
      case 'write':
        await inFolder(o.path, () => fs.writeFile(o.path, o.content), run);
        break;
      case 'link':
        await run(() => fs.rm(o.path, { force: true }));
        await inFolder(o.path, () => fs.symlink(o.target, o.path), run);
        break;
      case 'remove':
        await run(() => fs.rm(o.path, { recursive: true, force: true }));
        break;
    }
  }
}

/** Apply operations with no record and no fault points: building a host, which is not a kernel write. */
export function applyFileOps(ops: readonly FileOp[]): Promise<void> {
  return apply(ops, uncounted);
}

function relativeOp(dir: string, o: FileOp): FileOp {
  if (!isWithin(dir, o.path) || path.resolve(o.path) === path.resolve(dir)) {
    throw new UnsafePath(`Simulated write would change ${q(o.path)}, outside the simulated host ${q(dir)}, refusing`);
  }
  return { ...o, path: path.relative(dir, o.path) };
}

/**
 * Make `ops` as one transition: record them, apply them, drop the record.
 * The caller holds the host's write lock and has rolled forward what was
 * left over.
 */
export async function commitTransition(dir: string, write: SimWrite, ops: readonly FileOp[]): Promise<void> {
  if (ops.length === 0) return;
  // The pid and the write are for a person reading a left-over record; rolling forward needs only the ops.
  const record: PendingRecord = { version: 1, pid: process.pid, write, ops: ops.map((o) => relativeOp(dir, o)) };
  const temp = path.join(dir, PENDING_TEMP_FILE);
  const pending = path.join(dir, PENDING_WRITE_FILE);
  await step(() => fs.writeFile(temp, JSON.stringify(record, null, 1) + '\n'));
  await step(() => fs.rename(temp, pending));
  await apply(ops, step);
  await step(() => fs.rm(pending));
}

const RelPath = v.pipe(
  v.string(),
  v.check(
    (p) => p !== '' && p !== '.' && path.normalize(p) === p && !path.isAbsolute(p) && !p.split('/').includes('..'),
    'expected a path inside the host folder',
  ),
);
const RecordSchema = v.object({
  version: v.literal(1),
  pid: v.number(),
  write: v.object({ file: v.string(), data: v.string() }),
  ops: v.array(
    v.variant('op', [
      v.object({ op: v.literal('mkdir'), path: RelPath }),
      v.object({ op: v.literal('write'), path: RelPath, content: v.string() }),
      v.object({ op: v.literal('link'), path: RelPath, target: v.string() }),
      v.object({ op: v.literal('remove'), path: RelPath }),
    ]),
  ),
});
type PendingRecord = v.InferOutput<typeof RecordSchema>;

/**
 * Finish a write whose process died inside it, if any; drop a record that
 * was never published. The caller holds the host's write lock, so a record
 * found here has no live writer.
 */
export async function rollForward(dir: string): Promise<void> {
  const temp = path.join(dir, PENDING_TEMP_FILE);
  const pending = path.join(dir, PENDING_WRITE_FILE);
  if (
    await fs.lstat(temp).then(
      () => true,
      () => false,
    )
  )
    await step(() => fs.rm(temp, { force: true }));
  let text: string;
  try {
    text = await fs.readFile(pending, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const damaged = (cause: string): InvalidConfig =>
    new InvalidConfig(
      `Simulated host ${q(dir)} has a damaged ${q(PENDING_WRITE_FILE)}: ${cause}; remove the folder to build the host afresh`,
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw damaged((error as Error).message);
  }
  const parsed = v.safeParse(RecordSchema, json);
  if (!parsed.success) {
    throw damaged(parsed.issues.map((i) => `${v.getDotPath(i) ?? '(top)'}: ${i.message}`).join('; '));
  }
  await apply(
    parsed.output.ops.map((o) => ({ ...o, path: path.join(dir, o.path) })),
    step,
  );
  await step(() => fs.rm(pending));
}
