/**
 * After each test nothing it started is left (cockpit's `_check_settled`;
 * docs/architecture.md, "Test tiers"). Two checks, both cheap:
 *
 * - Per test: the helpers `track()` what they start or make for a test (a
 *   child process, a temp folder). After the test's teardowns have run, each
 *   must be gone, or the test fails with a sentence naming what is left. Tests
 *   of one file run concurrently, so only this bookkeeping can tell whose a
 *   process is.
 * - Per test file: ava loads this module into every worker (package.json's
 *   ava `require`), and `settleWorker` fails the file when, after its last test, the worker still has a child process (/proc) or
 *   anything that keeps its event loop alive which it did not have before the
 *   first test (a timer, a socket, a file watcher). Such a thing makes ava
 *   report "Failed to exit" and exit 1 with every test passed, which its TAP
 *   reporter does not show.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { ExecutionContext } from 'ava';

/** What is left of one tracked thing ("dbus-daemon (pid 12) still runs"), or null once it is gone. */
export type Leftover = () => string | null | Promise<string | null>;

type Teardownable = Pick<ExecutionContext, 'teardown'>;

const tracked = new WeakMap<Teardownable, Leftover[]>();

/** Check `leftover` after every teardown of `t` has run; the test fails if it names something. */
export function track(t: Teardownable, leftover: Leftover): void {
  let list = tracked.get(t);
  if (list === undefined) {
    const mine: Leftover[] = [];
    tracked.set(t, mine);
    list = mine;
    // Registered before the teardowns that stop what it checks, so it runs
    // after them: teardowns run last-first.
    t.teardown(async () => {
      const left = (await Promise.all(mine.map(async (f) => f()))).filter((s): s is string => s !== null);
      if (left.length > 0) throw new Error(`The test left ${left.join(', ')} after its teardown; stop or remove it in a teardown`);
    });
  }
  list.push(leftover);
}

/** Track a child process of the test: it must have exited once the test's teardowns have run. */
export function trackChild<C extends ChildProcess>(t: Teardownable, child: C, what: string): C {
  track(t, () =>
    // A child that never started (ENOENT) has no pid and nothing to stop.
    child.pid === undefined || child.exitCode !== null || child.signalCode !== null ? null : `${what} (pid ${child.pid}) running`,
  );
  return child;
}

/** Track a temp folder of the test: it must be gone once the test's teardowns have run. */
export function trackDir(t: Teardownable, dir: string): void {
  track(t, () =>
    fs.lstat(dir).then(
      () => `the temp folder '${dir}'`,
      () => null,
    ),
  );
}

/** The pids of this worker's child processes. */
async function childPids(): Promise<string[]> {
  try {
    // Each thread's children (libuv forks from the main thread, but be sure).
    const tasks = await fs.readdir('/proc/self/task');
    const lists = await Promise.all(tasks.map((tid) => fs.readFile(`/proc/self/task/${tid}/children`, 'utf8').catch(() => '')));
    return lists.flatMap((l) => l.split(' ').filter((p) => p !== ''));
  } catch {
    // No /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN off): every process's stat, field 4 the ppid.
    const all = (await fs.readdir('/proc')).filter((n) => /^[0-9]+$/.test(n));
    const stats = await Promise.all(all.map((pid) => fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')));
    return all.filter((_, i) => Number(stats[i]!.slice(stats[i]!.lastIndexOf(')') + 2).split(' ')[1]) === process.pid);
  }
}

/** Each child process not in `before`, as "pid 12 'sleep 3'". */
async function newChildren(before: ReadonlySet<string>): Promise<string[]> {
  const found = await Promise.all(
    (await childPids())
      .filter((pid) => !before.has(pid))
      .map(async (pid) => ({
        pid,
        cmdline: (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean),
        // The state letter after the parenthesised comm: 'Z' is a zombie, gone already, which keeps nothing alive.
        state: /\) (\S)/.exec(await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ') X'))?.[1] ?? 'X',
      })),
  );
  return (
    found
      // Exited (a zombie: the esbuild service tsx started in a worker thread, whose loop
      // is gone and never reaps it) or already reaped ('X'): nothing is left running.
      .filter(({ state }) => state !== 'Z' && state !== 'X')
      // tsx's esbuild service: started on the first compile (which may come in
      // a test's dynamic import), unreferenced, ends with the worker.
      .filter(({ cmdline }) => !(cmdline[0]?.endsWith('/esbuild') && cmdline.some((a) => a.startsWith('--service='))))
      .map(({ pid, cmdline }) => `pid ${pid} '${cmdline.join(' ')}'`)
  );
}

/** How many of each kind of resource keep the event loop alive ('Timeout', 'PipeWrap', ...). */
function resources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

/** What keeps the loop alive now beyond `before`, e.g. "1 Timeout". */
function extraResources(before: Map<string, number>): string[] {
  const extra: string[] = [];
  for (const [kind, n] of resources()) if (n > (before.get(kind) ?? 0)) extra.push(`${n - (before.get(kind) ?? 0)} ${kind}`);
  return extra;
}

/**
 * The per-file check, run in every ava worker: package.json's ava `require`
 * loads this module there and calls this function before the test file
 * loads. Not an `after.always` hook: hooks must be declared in the same turn
 * as the test file's own, which a file with a top-level await cannot share.
 * ava calls the completion handler once the worker has reported every result;
 * failing then makes the worker exit 1, which ava reports as "exited with a
 * non-zero exit code" in TAP too, after the sentence below on stderr.
 */
export default async function settleWorker(): Promise<void> {
  const baseline = resources();
  const children0 = new Set(await childPids());
  // Imported here, not at the top: the benchmarks import the helpers from plain
  // node, where importing ava ends the process.
  const { default: test, registerCompletionHandler } = await import('ava');
  const file = path.relative(process.cwd(), fileURLToPath(test.meta.file));
  registerCompletionHandler(() => {
    void leftInWorker(file, baseline, children0).then((left) => {
      if (left === null) return;
      process.stderr.write(`\nsettled: ${left}\n`);
      process.exit(1);
    });
  });
}

/** What the worker still has after its last test, as one sentence, or null. */
async function leftInWorker(file: string, baseline: Map<string, number>, children0: ReadonlySet<string>): Promise<string | null> {
  // The resources first: reading /proc makes requests of its own.
  let extra = extraResources(baseline);
  let children = await newChildren(children0);
  // A handle closed in the last teardown goes away on a later turn of the
  // event loop; there is no event for that, so look again a few turns on,
  // and once more after a bounded wait. Only a failing check pays this.
  for (let turn = 0; turn < 20 && (children.length > 0 || extra.length > 0); turn++) {
    await new Promise((resolve) => setImmediate(resolve));
    if (turn === 19) await new Promise((resolve) => setTimeout(resolve, 1000));
    extra = extraResources(baseline);
    children = await newChildren(children0);
  }
  const left = [
    ...(children.length > 0 ? [`child processes ${children.join(', ')}`] : []),
    ...(extra.length > 0 ? [`${extra.join(', ')} keeping the event loop alive (process.getActiveResourcesInfo())`] : []),
  ];
  return left.length === 0
    ? null
    : `${file}: its tests left ${left.join(' and ')} after the last one, so its worker would not exit; stop it in a teardown`;
}
