/**
 * The real KernelPort on a temp folder used as its sysfs root (what
 * `--sysfs-root` does): writes go through the writer child process, a write
 * that hangs is abandoned on its signal, and nothing is ever written outside
 * the root. This machine's own sysfs is never named here.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { UnsafePath } from '../../lib/errors.js';
import { KernelWriteError, KernelWriteTimeout, type KernelPort } from '../../lib/pci/kernel-port.js';
import { openRealKernel } from '../../lib/pci/real-kernel-factory.js';
import { rootsUnder } from '../../lib/roots.js';
import { tempDir } from '../helpers/temp-dir.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Fixture {
  top: string;
  sys: string;
  kernel: KernelPort;
}

/** A temp folder laid out as roots, with the real adapter on it; closed and removed in teardown. */
async function open(t: ExecutionContext): Promise<Fixture> {
  const top = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-real-'));
  const roots = rootsUnder(top);
  await fs.mkdir(path.join(roots.sysfs, 'bus', 'pci', 'devices', '0000:0b:00.0'), { recursive: true });
  const kernel = openRealKernel(roots);
  t.teardown(async () => {
    await kernel.close();
    await fs.rm(top, { recursive: true, force: true });
  });
  return { top, sys: roots.sysfs, kernel };
}

function attr(f: Fixture, name: string): string {
  return path.join(f.sys, 'bus', 'pci', 'devices', '0000:0b:00.0', name);
}

const never = (): AbortSignal => new AbortController().signal;

/** Every entry under `dir`, relative, sorted, links not followed: to show a write created nothing. */
async function tree(dir: string, relative = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(path.join(dir, relative), { withFileTypes: true })) {
    const rel = path.join(relative, entry.name);
    out.push(rel);
    if (entry.isDirectory()) out.push(...(await tree(dir, rel)));
  }
  return out.sort();
}

/**
 * Direct children of this process, from /proc (read only). Tests that look
 * at them are serial: ava runs serial tests before the concurrent ones, so no
 * other test's writer is about at the same time.
 */
async function childPids(): Promise<Set<number>> {
  const pids = new Set<number>();
  const taskDir = `/proc/${process.pid}/task`;
  for (const tid of await fs.readdir(taskDir).catch(() => [] as string[])) {
    const text = await fs.readFile(path.join(taskDir, tid, 'children'), 'utf8').catch(() => '');
    for (const word of text.split(/\s+/)) if (/^\d+$/.test(word)) pids.add(Number(word));
  }
  return pids;
}

/**
 * The writer child started since `before`: a `node` running sysfs-writer-child.cjs.
 * Polled: the adapter starts it inside, and nothing outside it signals a new child.
 */
async function writerPid(before: ReadonlySet<number>): Promise<number> {
  for (let i = 0; i < 400; i++) {
    for (const pid of await childPids()) {
      if (before.has(pid)) continue;
      const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.split('\0').some((arg) => arg.endsWith('/sysfs-writer-child.cjs'))) return pid;
    }
    await sleep(5);
  }
  throw new Error('no writer child process appeared');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

/** Wait (bounded) for a process to be gone and reaped; polled, since it is the adapter's child and not ours to wait for. */
async function gone(pid: number, withinMs = 3000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

test('a write lands in the attribute, exactly as given', async (t) => {
  const f = await open(t);
  await fs.writeFile(attr(f, 'driver_override'), '');
  await f.kernel.write(attr(f, 'driver_override'), 'vfio-pci', never());
  t.is(await fs.readFile(attr(f, 'driver_override'), 'utf8'), 'vfio-pci');

  await fs.writeFile(attr(f, 'unbind'), '');
  await f.kernel.write(attr(f, 'unbind'), '0000:0b:00.0\n', never());
  t.is(await fs.readFile(attr(f, 'unbind'), 'utf8'), '0000:0b:00.0\n', 'the newline is written too');
});

test('successive writes reuse one writer and each lands', async (t) => {
  const f = await open(t);
  const files = ['a', 'b', 'c'].map((n) => attr(f, n));
  for (const file of files) await fs.writeFile(file, '');
  for (const [i, file] of files.entries()) await f.kernel.write(file, `value ${i}`, never());
  t.deepEqual(await Promise.all(files.map((file) => fs.readFile(file, 'utf8'))), ['value 0', 'value 1', 'value 2']);
});

test('many writes in flight at once, with multi-byte data over 64 KiB of requests, each lands and is answered', async (t) => {
  // The child reads its requests with blocking read(2)s of 64 KiB: a request cut between two reads,
  // inside a multi-byte character, must still arrive whole.
  const f = await open(t);
  const files = Array.from({ length: 400 }, (_, i) => attr(f, `attr-${i}`));
  for (const file of files) await fs.writeFile(file, '');
  const value = (i: number): string => `${i} ${'é€'.repeat(60 + (i % 7))}`;
  await Promise.all(files.map((file, i) => f.kernel.write(file, value(i), never())));
  const read = await Promise.all(files.map((file) => fs.readFile(file, 'utf8')));
  t.deepEqual(
    read,
    files.map((_, i) => value(i)),
  );
});

test('a write to a missing attribute fails with KernelWriteError ENOENT and creates nothing', async (t) => {
  const f = await open(t);
  const before = await tree(f.top);
  const missing = attr(f, 'no_such_attribute');
  const error = await t.throwsAsync(f.kernel.write(missing, 'vfio-pci', never()), { instanceOf: KernelWriteError });
  t.is(error.code, 'ENOENT');
  t.is(error.path, missing);
  t.regex(error.message, /^ENOENT: no such file or directory, open '.*no_such_attribute'$/);
  t.deepEqual(await tree(f.top), before);
  await t.throwsAsync(fs.lstat(missing), { code: 'ENOENT' });
});

test('a write under a missing folder fails with ENOENT and creates no folder', async (t) => {
  const f = await open(t);
  const before = await tree(f.top);
  const missing = path.join(f.sys, 'bus', 'pci', 'drivers', 'vfio-pci', 'bind');
  const error = await t.throwsAsync(f.kernel.write(missing, '0000:0b:00.0', never()), { instanceOf: KernelWriteError });
  t.is(error.code, 'ENOENT');
  t.deepEqual(await tree(f.top), before);
});

test('a write outside the sysfs root is refused with UnsafePath and nothing is written', async (t) => {
  const f = await open(t);
  const outside = path.join(f.top, 'run', 'victim');
  await fs.mkdir(path.dirname(outside), { recursive: true });
  await fs.writeFile(outside, 'untouched');
  const error = await t.throwsAsync(f.kernel.write(outside, 'vfio-pci', never()), { instanceOf: UnsafePath });
  t.is(error.message, `Write to '${outside}' is outside the sysfs root '${f.sys}', refusing`);
  t.is(await fs.readFile(outside, 'utf8'), 'untouched');
});

test('a write that climbs out of the sysfs root with .. is refused with UnsafePath and nothing is written', async (t) => {
  const f = await open(t);
  const outside = path.join(f.top, 'run', 'victim');
  await fs.mkdir(path.dirname(outside), { recursive: true });
  await fs.writeFile(outside, 'untouched');
  const climbing = `${f.sys}/bus/../../run/victim`;
  const error = await t.throwsAsync(f.kernel.write(climbing, 'vfio-pci', never()), { instanceOf: UnsafePath });
  t.is(error.message, `Write to '${climbing}' is outside the sysfs root '${f.sys}', refusing`);
  t.is(await fs.readFile(outside, 'utf8'), 'untouched');
});

test('a write to a sibling folder sharing the root name as prefix is refused', async (t) => {
  const f = await open(t);
  const sibling = `${f.sys}-other`;
  await fs.mkdir(sibling);
  await fs.writeFile(path.join(sibling, 'attr'), 'untouched');
  await t.throwsAsync(f.kernel.write(path.join(sibling, 'attr'), 'vfio-pci', never()), { instanceOf: UnsafePath });
  t.is(await fs.readFile(path.join(sibling, 'attr'), 'utf8'), 'untouched');
});

test('a write through a link inside the sysfs root that points outside it is refused with UnsafePath and nothing is written', async (t) => {
  // A --sysfs-root folder is ordinary files: a link in it may lead anywhere,
  // including the machine's own sysfs. The adapter must not follow it out.
  const f = await open(t);
  const outside = path.join(f.top, 'run', 'victim');
  await fs.mkdir(path.dirname(outside), { recursive: true });
  await fs.writeFile(outside, 'untouched');
  await fs.symlink(path.relative(path.dirname(attr(f, 'x')), outside), attr(f, 'escape'));
  const error = await t.throwsAsync(f.kernel.write(attr(f, 'escape'), 'vfio-pci', never()), { instanceOf: UnsafePath });
  t.regex(error?.message ?? '', /is outside the sysfs root .*, refusing$/);
  t.is(await fs.readFile(outside, 'utf8'), 'untouched');
});

test.serial('a write whose signal has already aborted is refused at once and starts no writer', async (t) => {
  const f = await open(t);
  await fs.writeFile(attr(f, 'driver_override'), '');
  const before = await childPids();
  const controller = new AbortController();
  controller.abort();
  const error = await t.throwsAsync(f.kernel.write(attr(f, 'driver_override'), 'vfio-pci', controller.signal), {
    instanceOf: KernelWriteTimeout,
  });
  t.is(error.path, attr(f, 'driver_override'));
  t.is(await fs.readFile(attr(f, 'driver_override'), 'utf8'), '');
  t.deepEqual(
    [...(await childPids())].filter((p) => !before.has(p)),
    [],
  );
});

test.serial(
  'a write that hangs rejects with KernelWriteTimeout when its signal aborts, and the next write gets a fresh writer',
  async (t) => {
    const f = await open(t);
    // open(O_WRONLY) on a FIFO with no reader blocks, as an unbind the driver never finishes.
    const fifo = attr(f, 'unbind');
    execFileSync('mkfifo', [fifo]);
    t.teardown(async () => {
      // Should the writer still be stuck, a reader frees it.
      const reader = await fs.open(fifo, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch(() => null);
      await reader?.close();
      await fs.rm(fifo, { force: true });
    });

    const before = await childPids();
    const controller = new AbortController();
    const started = Date.now();
    const pending = f.kernel.write(fifo, '0000:0b:00.0', controller.signal);
    const stuck = await writerPid(before);
    const timer = setTimeout(() => controller.abort(), 200);
    t.teardown(() => clearTimeout(timer));

    const error = await t.throwsAsync(pending, { instanceOf: KernelWriteTimeout });
    t.is(error.message, `write to '${fifo}' did not return`);
    t.is(error.path, fifo);
    t.true(Date.now() - started >= 150, 'it waited for the signal');
    t.true(await gone(stuck), `the stuck writer ${stuck} was killed`);

    const next = attr(f, 'driver_override');
    await fs.writeFile(next, '');
    const beforeNext = await childPids();
    await f.kernel.write(next, 'vfio-pci', never());
    t.is(await fs.readFile(next, 'utf8'), 'vfio-pci');
    const fresh = await writerPid(beforeNext);
    t.not(fresh, stuck);
    t.true(alive(fresh));
  },
);

test.serial('close() ends the writer process', async (t) => {
  const f = await open(t);
  await fs.writeFile(attr(f, 'driver_override'), '');
  const before = await childPids();
  await f.kernel.write(attr(f, 'driver_override'), 'vfio-pci', never());
  const pid = await writerPid(before);
  t.true(alive(pid));
  await f.kernel.close();
  t.true(await gone(pid, 1000), `writer ${pid} is gone after close()`);
  t.false((await childPids()).has(pid));
  await f.kernel.close(); // a second close is harmless
});

test.serial('close() with no write made starts nothing and returns', async (t) => {
  const f = await open(t);
  const before = await childPids();
  await f.kernel.close();
  t.deepEqual(
    [...(await childPids())].filter((p) => !before.has(p)),
    [],
  );
});

test('close() after a write lets a process that has nothing else to do finish', async (t) => {
  // What vfio-hookctl does with --sysfs-root: write, close, exit. The writer
  // is unref'd between writes, so close() must keep the loop alive itself
  // until the child has exited, or node gives up on the pending await.
  const top = await tempDir(t, 'vfio-hookd-real-');
  const roots = rootsUnder(top);
  await fs.mkdir(roots.sysfs, { recursive: true });
  await fs.writeFile(path.join(roots.sysfs, 'attr'), '');
  const script = `
    import { openRealKernel } from ${JSON.stringify(path.join(REPO, 'lib/pci/real-kernel-factory.ts'))};
    const roots = JSON.parse(process.argv[1]);
    const kernel = openRealKernel(roots);
    await kernel.write(roots.sysfs + '/attr', 'vfio-pci', new AbortController().signal);
    await kernel.close();
    process.stdout.write('closed\\n');
  `;
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script, JSON.stringify(roots)],
      { cwd: REPO, timeout: 20_000 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
  t.is(await fs.readFile(path.join(roots.sysfs, 'attr'), 'utf8'), 'vfio-pci');
  t.deepEqual(result, { code: 0, stdout: 'closed\n', stderr: '' });
});

// Serial: ava runs serial tests before the others, so no other test's writer is counted.
test.serial('prepareWrites starts the writer child before any write, once (the daemon calls it at its start)', async (t) => {
  const { kernel } = await open(t);
  const writers = async (): Promise<string[]> => {
    // The children of this process, by /proc: no event says a child was spawned, and none is needed, spawn() is synchronous.
    const tasks = await fs.readdir(`/proc/${process.pid}/task`);
    const pids = (await Promise.all(tasks.map((id) => fs.readFile(`/proc/${process.pid}/task/${id}/children`, 'utf8')))).join(' ');
    const cmdlines = await Promise.all(
      pids
        .split(/\s+/)
        .filter(Boolean)
        .map((pid) => fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')),
    );
    return cmdlines.filter((c) => c.includes('sysfs-writer-child.cjs'));
  };
  const before = (await writers()).length;
  kernel.prepareWrites?.();
  kernel.prepareWrites?.();
  t.is((await writers()).length, before + 1);
});
