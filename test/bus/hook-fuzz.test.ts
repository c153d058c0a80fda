/**
 * Fuzz of the hook path through the real hooks/qemu, run as libvirt runs it,
 * against the real daemon on a private bus (and without it): generated argv
 * and domain XML (test/helpers/hook-fuzz.ts says how, and what answer each
 * must get). Zero crashes: every run exits 0 or 1, prints nothing on stdout
 * and at most one stderr line, starting `vfio-hookd: `; zero inputs that
 * must be refused exiting 0, and the reverse. The seed is printed;
 * VFIO_HOOK_FUZZ_SEED replays one, VFIO_HOOK_FUZZ_RUNS changes the count.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startDaemon, startPrivateBus } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, leftovers, runHook, type HookRun } from '../helpers/hook.js';
import { fuzzCases, managedConfig, type FuzzCase } from '../helpers/hook-fuzz.js';

const SEED = Number(process.env['VFIO_HOOK_FUZZ_SEED'] ?? 0x5eed8);
const RUNS = Number(process.env['VFIO_HOOK_FUZZ_RUNS'] ?? 2000);
/** Hooks in flight at once: each is sh, cat, mktemp, busctl, rm, mostly waiting; bounded for a 2-core machine. */
const PARALLEL = 4;

/** Run `work` over `items`, at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: limit }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(lanes);
}

function describe(c: FuzzCase, r: HookRun): string {
  const args = JSON.stringify(c.args.map((a) => (a.length > 80 ? `${a.slice(0, 80)}…(${a.length})` : a)));
  return `#${c.index} ${args} (${c.why}): exit ${r.code}${r.signal ? ` signal ${r.signal}` : ''}, stdout ${JSON.stringify(r.stdout.slice(0, 100))}, stderr ${JSON.stringify(r.stderr.slice(0, 300))}`;
}

/** What is wrong with a run, or null: the shape every run must have, then the expected answer. */
function crash(r: HookRun): string | null {
  if (r.signal) return 'killed by a signal';
  if (r.code !== 0 && r.code !== 1) return 'an exit code other than 0 and 1';
  if (r.stdout !== '') return 'output on stdout';
  const lines = r.stderr.split('\n');
  if (lines.pop() !== '') return 'stderr does not end in a newline';
  if (lines.length > 1) return 'more than one stderr line';
  if (lines.some((l) => !l.startsWith('vfio-hookd: '))) return "a stderr line not starting 'vfio-hookd: '";
  return null;
}

/** The answer without the daemon's judgement: fail closed for a VM about to start with <hostdev> or <shmem>, else go on. */
function downProblem(c: FuzzCase, r: HookRun): string | null {
  if (c.closedWhenDown && r.code !== 1) return 'must fail closed, exited 0';
  if (!c.closedWhenDown && r.code !== 0) return 'must go on, exited 1';
  if (!r.stderr.startsWith('vfio-hookd: no answer from vfio-hookd (')) return 'not the no-answer line';
  return null;
}

test.serial(`daemon running: ${RUNS} generated inputs through the real hook, none crashes, none refused exits 0`, async (t) => {
  t.timeout(240_000);
  t.log(`seed ${SEED} (VFIO_HOOK_FUZZ_SEED replays it)`);
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: managedConfig() });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  const cases = fuzzCases(SEED, RUNS);
  const failures: string[] = [];
  let refused = 0;
  let unsendable = 0;
  await pool(cases, PARALLEL, async (c) => {
    const r = await runHook(hook, c.args, c.xml);
    const lines = r.stderr === '' ? 0 : r.stderr.split('\n').length - 1;
    const problem = c.unsendable
      ? (crash(r) ?? downProblem(c, r))
      : (crash(r) ??
        (c.refused && r.code !== 1 ? 'must be refused, exited 0' : null) ??
        (!c.refused && r.code !== 0 ? 'must be let through, was refused' : null) ??
        (c.refused && lines !== 1 ? 'a refusal without its line' : null) ??
        (r.stderr.includes('no answer from vfio-hookd') ? 'taken for an unreachable daemon' : null));
    if (c.refused && !c.unsendable) refused++;
    if (c.unsendable) unsendable++;
    if (problem !== null) failures.push(`${problem}: ${describe(c, r)}`);
  });
  t.log(`${cases.length} inputs, ${refused} to refuse, ${unsendable} busctl cannot send, ${failures.length} failures`);
  t.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${cases.length} inputs failed`);
  t.is(daemon.child.exitCode, null, 'the daemon is still running');
  t.deepEqual(await leftovers(hook), [], 'the hook removed every file it made');
  // Nothing managed was ever prepared: no device moved, no shm file made.
  for (const address of ['0000:0b:00.0', '0000:0b:00.1']) {
    const link = await fs.readlink(path.join(daemon.simDir, 'sys/bus/pci/devices', address, 'driver'));
    t.not(path.basename(link), 'vfio-pci', address);
  }
  t.deepEqual(await fs.readdir(path.join(daemon.simDir, 'dev/shm')), []);
});

test.serial(
  `daemon down: ${Math.ceil(RUNS / 2)} generated inputs, a VM about to start with <hostdev> or <shmem> fails closed, every other one goes on`,
  async (t) => {
    t.timeout(240_000);
    const seed = SEED + 1;
    t.log(`seed ${seed} (VFIO_HOOK_FUZZ_SEED + 1)`);
    const bus = await startPrivateBus(t);
    const hook = await installHook(t, bus.address);
    const cases = fuzzCases(seed, Math.ceil(RUNS / 2));
    const failures: string[] = [];
    let closed = 0;
    await pool(cases, PARALLEL, async (c) => {
      const r = await runHook(hook, c.args, c.xml);
      const problem = crash(r) ?? downProblem(c, r);
      if (c.closedWhenDown) closed++;
      if (problem !== null) failures.push(`${problem}: ${describe(c, r)}`);
    });
    t.log(`${cases.length} inputs, ${closed} to fail closed, ${failures.length} failures`);
    t.deepEqual(failures.slice(0, 10), [], `${failures.length} of ${cases.length} inputs failed`);
    t.deepEqual(await leftovers(hook), [], 'the hook removed every file it made');
  },
);
