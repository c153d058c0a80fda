/**
 * A simulated sysfs write is one transition, as in the kernel: a process
 * killed at any instant inside it leaves, for the next process that opens
 * the folder, exactly the state before the write or the state after it.
 *
 * How: a child process (sim-write-child.ts) makes the write with
 * VFIO_HOOKD_SIM_KILL_AT_FILE_OP=N, which makes the simulator SIGKILL it
 * right before its Nth file operation; the test tries N = 1, 2, ... until
 * the child lives through the write, so every file operation of the write
 * (the record's own included) is a kill point. After each kill the test
 * opens the host again (which rolls a left-over write forward) and compares
 * a dump of the whole folder (every file's content, every link's text) with
 * the dumps of the states before and after the write.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SimKernel } from '../../lib/sim/index.js';
import { InvalidConfig } from '../../lib/errors.js';
import { KernelWriteError } from '../../lib/pci/kernel-port.js';
import { makeSim } from '../helpers/sim.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'sim-write-child.ts');
const GPU = '0000:0b:00.0';
const AUDIO = '0000:0b:00.1';
const NIC = '0000:05:00.0';
const KILL_AT_FILE_OP = 'VFIO_HOOKD_SIM_KILL_AT_FILE_OP';
const KILL_AFTER_WRITES = 'VFIO_HOOKD_SIM_KILL_AFTER_WRITES';
/** More kill points than any write has: a write that never completes is a bug, not a slow test. */
const MAX_POINTS = 200;

/** A sysfs write: attribute relative to the sysfs root, and the data. */
type Write = readonly [attribute: string, data: string];

const overrideAttr = (a: string): string => `bus/pci/devices/${a}/driver_override`;
const unbind = (driver: string, a: string): Write => [`bus/pci/drivers/${driver}/unbind`, a];
const bind = (driver: string, a: string): Write => [`bus/pci/drivers/${driver}/bind`, a];
const probe = (a: string): Write => ['bus/pci/drivers_probe', a];
const setOverride = (a: string, driver: string): Write => [overrideAttr(a), driver];
const clearOverride = (a: string): Write => [overrideAttr(a), '\n'];

// The two cores of the CI machine are shared: at most two children at once over the whole file.
let running = 0;
const queue: (() => void)[] = [];
async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>((resolve) => queue.push(resolve));
  running += 1;
  try {
    return await fn();
  } finally {
    running -= 1;
    queue.shift()?.();
  }
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run sim-write-child.ts on `dir` with these writes and crash switches. */
function child(dir: string, writes: readonly Write[], env: Record<string, string> = {}): Promise<ChildResult> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VFIO_HOOKD_SIM_')));
  return limited(
    () =>
      new Promise((resolve, reject) => {
        execFile(
          process.execPath,
          ['--import=tsx', CHILD, dir, ...writes.flat()],
          { env: { ...base, ...env }, timeout: 30_000 },
          (error, stdout, stderr) => {
            if (error && error.signal === null && typeof error.code !== 'number') return reject(error);
            resolve({
              code: error ? (typeof error.code === 'number' ? error.code : null) : 0,
              signal: error?.signal ?? null,
              stdout,
              stderr,
            });
          },
        );
      }),
  );
}

/** Every entry of the folder, sorted: `path -> link text`, `path = file content`, `path/` for a folder. */
async function dump(dir: string): Promise<string> {
  const lines: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const name of (await fs.readdir(path.join(dir, rel))).sort()) {
      const entry = path.join(rel, name);
      const full = path.join(dir, entry);
      const stat = await fs.lstat(full);
      if (stat.isSymbolicLink()) lines.push(`${entry} -> ${await fs.readlink(full)}`);
      else if (stat.isDirectory()) {
        lines.push(`${entry}/`);
        await walk(entry);
      } else lines.push(`${entry} = ${JSON.stringify(await fs.readFile(full, 'utf8'))}`);
    }
  }
  await walk('');
  return lines.join('\n');
}

async function tempDir(t: ExecutionContext, prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A copy of a host folder, links copied as links (their relative texts stay right). */
async function copyHost(t: ExecutionContext, from: string): Promise<string> {
  const top = await tempDir(t, 'vfio-hookd-sim-copy-');
  const to = path.join(top, 'host');
  await fs.cp(from, to, { recursive: true, verbatimSymlinks: true });
  return to;
}

async function writeAll(kernel: SimKernel, writes: readonly Write[]): Promise<void> {
  for (const [attribute, data] of writes) await kernel.write(path.join(kernel.roots.sysfs, attribute), data, new AbortController().signal);
}

/** Each write in turn, a refused one (KernelWriteError) included, as sim-write-child.ts makes them. */
async function writeEach(kernel: SimKernel, writes: readonly Write[]): Promise<void> {
  for (const write of writes) {
    await writeAll(kernel, [write]).catch((error: unknown) => {
      if (!(error instanceof KernelWriteError)) throw error;
    });
  }
}

/** What a reader of the device sees: its driver link, the drivers linking back to it, its DRM and VFIO nodes. */
async function deviceView(dir: string, address: string): Promise<Record<string, unknown>> {
  const sys = path.join(dir, 'sys');
  const link = await fs.readlink(path.join(sys, 'bus/pci/devices', address, 'driver')).catch(() => null);
  const drivers = await fs.readdir(path.join(sys, 'bus/pci/drivers'));
  const backLinks: string[] = [];
  for (const d of drivers)
    if (
      await fs.lstat(path.join(sys, 'bus/pci/drivers', d, address)).then(
        () => true,
        () => false,
      )
    )
      backLinks.push(d);
  const has = (rel: string): Promise<boolean> =>
    fs.lstat(path.join(dir, rel)).then(
      () => true,
      () => false,
    );
  return {
    driver: link === null ? null : path.basename(link),
    backLinks,
    override: (await fs.readFile(path.join(sys, 'bus/pci/devices', address, 'driver_override'), 'utf8')).trim(),
    card1: await has('dev/dri/card1'),
    renderD129: await has('sys/class/drm/renderD129'),
    vfio25: await has('dev/vfio/25'),
    pending: await has('pending-write.json'),
  };
}

interface Outcome {
  /** 'before' or 'after' for each kill point, in order. */
  points: ('before' | 'after')[];
  before: string;
  after: string;
}

/**
 * Kill a child at every file operation of `write` on a copy of `dir`, reopen,
 * and check the folder is exactly as before or as after the write.
 */
async function killAtEveryFileOp(t: ExecutionContext, dir: string, write: Write): Promise<Outcome> {
  const before = await dump(dir);
  const afterDir = await copyHost(t, dir);
  await writeAll(await SimKernel.open(afterDir), [write]);
  const after = await dump(afterDir);
  t.not(after, before, 'the write changes something');
  const points: ('before' | 'after')[] = [];
  for (let n = 1; n <= MAX_POINTS; n++) {
    const pointDir = await copyHost(t, dir);
    const result = await child(pointDir, [write], { [KILL_AT_FILE_OP]: String(n) });
    if (result.signal === null) {
      t.is(result.code, 0, result.stderr);
      t.is(result.stdout, 'ok\n');
      t.is(await dump(pointDir), after, 'a child that lives through the write leaves the after-state');
      await fs.rm(path.dirname(pointDir), { recursive: true, force: true });
      return { points, before, after };
    }
    t.is(result.signal, 'SIGKILL');
    await SimKernel.open(pointDir);
    const seen = await dump(pointDir);
    if (seen === before) points.push('before');
    else if (seen === after) points.push('after');
    else {
      t.fail(`killed before file operation ${n}: the folder is neither the before- nor the after-state`);
      t.deepEqual(seen.split('\n'), after.split('\n'), 'compared with the after-state');
      return { points, before, after };
    }
    await fs.rm(path.dirname(pointDir), { recursive: true, force: true });
  }
  t.fail(`the write was not complete after ${MAX_POINTS} kill points`);
  return { points, before, after };
}

interface Case {
  title: string;
  /** Raw writes, in this process, that bring the reference host to the state the write starts from. */
  setup: readonly Write[];
  write: Write;
  /** The device the write is about, and what a reader sees of it before and after. */
  device: string;
  before: Record<string, unknown>;
  after: Record<string, unknown>;
}

const onHost = { driver: 'amdgpu', backLinks: ['amdgpu'], card1: true, renderD129: true, vfio25: false, pending: false };
const driverless = { driver: null, backLinks: [], card1: false, renderD129: false, vfio25: false, pending: false };
const onVfio = { driver: 'vfio-pci', backLinks: ['vfio-pci'], card1: false, renderD129: false, vfio25: true, pending: false };
const toVfioOverride = [setOverride(GPU, 'vfio-pci')];

const CASES: Case[] = [
  {
    title: 'setting driver_override',
    setup: [],
    write: setOverride(GPU, 'vfio-pci'),
    device: GPU,
    before: { ...onHost, override: '(null)' },
    after: { ...onHost, override: 'vfio-pci' },
  },
  {
    title: 'clearing driver_override',
    setup: toVfioOverride,
    write: clearOverride(GPU),
    device: GPU,
    before: { ...onHost, override: 'vfio-pci' },
    after: { ...onHost, override: '(null)' },
  },
  {
    title: 'unbind from the host driver (its DRM nodes go)',
    setup: toVfioOverride,
    write: unbind('amdgpu', GPU),
    device: GPU,
    before: { ...onHost, override: 'vfio-pci' },
    after: { ...driverless, override: 'vfio-pci' },
  },
  {
    title: 'drivers_probe to vfio-pci (/dev/vfio/25 appears)',
    setup: [...toVfioOverride, unbind('amdgpu', GPU)],
    write: probe(GPU),
    device: GPU,
    before: { ...driverless, override: 'vfio-pci' },
    after: { ...onVfio, override: 'vfio-pci' },
  },
  {
    title: 'unbind from vfio-pci (/dev/vfio/25 goes with the last vfio device of the group)',
    setup: [...toVfioOverride, unbind('amdgpu', GPU), probe(GPU), clearOverride(GPU)],
    write: unbind('vfio-pci', GPU),
    device: GPU,
    before: { ...onVfio, override: '(null)' },
    after: { ...driverless, override: '(null)' },
  },
  {
    title: 'drivers_probe to the host driver (its DRM nodes come back)',
    setup: [unbind('amdgpu', GPU)],
    write: probe(GPU),
    device: GPU,
    before: { ...driverless, override: '(null)' },
    after: { ...onHost, override: '(null)' },
  },
  {
    title: 'bind to vfio-pci',
    setup: [...toVfioOverride, unbind('amdgpu', GPU)],
    write: bind('vfio-pci', GPU),
    device: GPU,
    before: { ...driverless, override: 'vfio-pci' },
    after: { ...onVfio, override: 'vfio-pci' },
  },
  {
    title: 'bind to the host driver',
    setup: [unbind('amdgpu', GPU)],
    write: bind('amdgpu', GPU),
    device: GPU,
    before: { ...driverless, override: '(null)' },
    after: { ...onHost, override: '(null)' },
  },
  {
    title: 'unbind of a network card from its host driver (its interface goes)',
    setup: [],
    write: unbind('igb', NIC),
    device: NIC,
    before: { driver: 'igb', backLinks: ['igb'] },
    after: { driver: null, backLinks: [] },
  },
];

for (const c of CASES) {
  test(`a process killed at any file operation of ${c.title} leaves the state before or after it, never a mix`, async (t) => {
    const sim = await makeSim(t, 'reference-host');
    await writeAll(sim.kernel, c.setup);
    const pick = (view: Record<string, unknown>): Record<string, unknown> =>
      Object.fromEntries(Object.keys(c.before).map((k) => [k, view[k]]));
    t.deepEqual(pick(await deviceView(sim.dir, c.device)), c.before, 'the state the write starts from');
    const { points, before, after } = await killAtEveryFileOp(t, sim.dir, c.write);
    t.log(
      `${points.length} kill points: ${points.filter((p) => p === 'before').length} before, ${points.filter((p) => p === 'after').length} after`,
    );
    // The record's rename is the instant of the write: every kill before it is before, every kill after it after.
    t.regex(points.join(' '), /^(before )+after( after)*$/);
    // Dumps are the folder; check they are the device states the case names too.
    const beforeDir = await copyHost(t, sim.dir);
    t.is(await dump(beforeDir), before);
    t.deepEqual(pick(await deviceView(beforeDir, c.device)), c.before);
    await writeAll(await SimKernel.open(beforeDir), [c.write]);
    t.is(await dump(beforeDir), after);
    t.deepEqual(pick(await deviceView(beforeDir, c.device)), c.after);
  });
}

test('a process killed while rolling a killed write forward leaves, after the next open, the state after the write', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  await writeAll(sim.kernel, [unbind('amdgpu', GPU)]);
  const write = probe(GPU);
  const afterDir = await copyHost(t, sim.dir);
  await writeAll(await SimKernel.open(afterDir), [write]);
  const after = await dump(afterDir);
  // Killed halfway through the write's file operations: the record is published, some operations are done.
  const killed = await copyHost(t, sim.dir);
  const first = await child(killed, [write], { [KILL_AT_FILE_OP]: '8' });
  t.is(first.signal, 'SIGKILL');
  t.true(
    await fs.lstat(path.join(killed, 'pending-write.json')).then(
      () => true,
      () => false,
    ),
    'the write is left half done',
  );
  let points = 0;
  for (let n = 1; n <= MAX_POINTS; n++) {
    const pointDir = await copyHost(t, killed);
    const result = await child(pointDir, [], { [KILL_AT_FILE_OP]: String(n) });
    if (result.signal === null) {
      t.is(result.code, 0, result.stderr);
      t.is(await dump(pointDir), after);
      break;
    }
    points += 1;
    await SimKernel.open(pointDir);
    t.is(await dump(pointDir), after, `killed before file operation ${n} of the roll forward`);
  }
  t.true(points > 8, `the roll forward replays every operation (${points} kill points)`);
});

test(`${KILL_AFTER_WRITES}=N kills the process right after its Nth write settles, whatever its outcome`, async (t) => {
  const sim = await makeSim(t, 'reference-host');
  // The first write is refused by the kernel (ENODEV): it counts as a write all the same.
  const writes: Write[] = [unbind('vfio-pci', GPU), setOverride(GPU, 'vfio-pci'), unbind('amdgpu', GPU), probe(GPU)];
  const states: string[] = [await dump(sim.dir)];
  for (let i = 1; i <= writes.length; i++) {
    const dir = await copyHost(t, sim.dir);
    await writeEach(await SimKernel.open(dir), writes.slice(0, i));
    states.push(await dump(dir));
  }
  t.is(states[1], states[0], 'the refused write changed nothing');
  for (let n = 1; n <= writes.length; n++) {
    const dir = await copyHost(t, sim.dir);
    const result = await child(dir, writes, { [KILL_AFTER_WRITES]: String(n) });
    t.is(result.signal, 'SIGKILL', `killed after write ${n}`);
    t.is(
      result.stdout,
      ['ENODEV', 'ok', 'ok', 'ok']
        .slice(0, n - 1)
        .map((s) => `${s}\n`)
        .join(''),
      'the caller never sees the result of the Nth write',
    );
    await SimKernel.open(dir);
    t.is(await dump(dir), states[n]!, `the state after write ${n}`);
  }
  const dir = await copyHost(t, sim.dir);
  const survivor = await child(dir, writes, { [KILL_AFTER_WRITES]: String(writes.length + 1) });
  t.is(survivor.signal, null, 'a process with fewer writes than N is not killed');
  t.is(survivor.stdout, 'ENODEV\nok\nok\nok\n');
  t.is(await dump(dir), states[writes.length]!);
});

test('an invalid crash switch fails the write with InvalidArgs before anything changes', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const before = await dump(sim.dir);
  for (const [name, value] of [
    [KILL_AFTER_WRITES, 'two'],
    [KILL_AT_FILE_OP, '0'],
  ] as const) {
    const result = await child(sim.dir, [setOverride(GPU, 'vfio-pci')], { [name]: value });
    t.is(result.code, 1);
    t.is(result.stderr, `InvalidArgs: Invalid ${name} '${value}': expected a positive whole number\n`);
  }
  t.is(await dump(sim.dir), before);
});

test('writes from two processes at once are serialised: /dev/vfio/25 exists exactly while a device of group 25 is on vfio-pci', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const roundTrip = (a: string, host: string): Write[] => [
    setOverride(a, 'vfio-pci'),
    unbind(host, a),
    probe(a),
    clearOverride(a),
    unbind('vfio-pci', a),
    probe(a),
  ];
  const rounds = (a: string, host: string): Write[] => Array.from({ length: 8 }, () => roundTrip(a, host)).flat();
  // Each unbind from vfio-pci decides from the other function's links whether /dev/vfio/25 goes:
  // decided and applied apart, the two could each see the other still on vfio-pci and leave the node behind.
  // The GPU moves in a child process, the audio function in this one, at the same time.
  const [gpu] = await Promise.all([child(sim.dir, rounds(GPU, 'amdgpu')), writeAll(sim.kernel, rounds(AUDIO, 'snd_hda_intel'))]);
  t.is(gpu.code, 0, gpu.stderr);
  t.is(gpu.stdout, 'ok\n'.repeat(48));
  const fresh = await makeSim(t, 'reference-host');
  t.is(await dump(sim.dir), await dump(fresh.dir), 'both functions are back on their host drivers, as on a fresh host');
});

test('a damaged write record is refused at open with the file named', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const record = path.join(sim.dir, 'pending-write.json');
  await fs.writeFile(record, '{"version":1,');
  const notJson = await t.throwsAsync(SimKernel.open(sim.dir), { instanceOf: InvalidConfig });
  t.regex(
    notJson.message,
    /^Simulated host '.*' has a damaged 'pending-write\.json': .*JSON.*; remove the folder to build the host afresh$/,
  );
  await fs.writeFile(
    record,
    JSON.stringify({ version: 1, pid: 1, write: { file: 'x', data: '' }, ops: [{ op: 'remove', path: '../outside' }] }),
  );
  const escape = await t.throwsAsync(SimKernel.open(sim.dir), { instanceOf: InvalidConfig });
  t.is(
    escape.message,
    `Simulated host '${sim.dir}' has a damaged 'pending-write.json': ops.0.path: expected a path inside the host folder; remove the folder to build the host afresh`,
  );
  t.true(await fs.lstat(record).then(() => true), 'the record is left for a person to look at');
});
