/**
 * Bus tier: progress while a stage runs, seen the three ways a user looks —
 * `vfio-hookctl monitor` (the daemon's signals, live), the Machine's `State`
 * and `Step` properties (`status`, `busctl`), and `STATUS=` (`systemctl
 * status`) — against the real daemon on a private bus. A slow prepare is a
 * simulated amdgpu whose unbind hangs until the write timeout: the steps
 * must arrive while it hangs, not after.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { REPO, startDaemon, startPrivateBus, tempDir, type PrivateBus } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, runHook } from '../helpers/hook.js';
import { BUILTIN_HOSTS } from '../../lib/sim/index.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const exec = promisify(execFile);

interface Monitor {
  /** Every line so far, parsed. */
  readonly events: Record<string, unknown>[];
  /** Resolves with the first event (past or future) for which `test` holds. */
  next(test: (e: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
  stop(): Promise<number | null>;
}

async function startMonitor(t: ExecutionContext, bus: PrivateBus): Promise<Monitor> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO, 'service', 'vfio-hookctl.ts'), 'monitor', '--json', '--bus-address', bus.address],
    {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: '' },
    },
  );
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const events: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    events.push(JSON.parse(line) as Record<string, unknown>);
    for (const w of [...waiters]) w();
  });
  const next = (test: (e: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = events.find(test);
        if (found === undefined) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      // A bound for a broken build, far above the work (the monitor starts in about a second).
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`monitor: no ${what} in 60 s; got ${JSON.stringify(events)}; stderr: ${stderr}`));
      }, 60_000);
      waiters.add(check);
      check();
    });
  await next((e) => e['kind'] === 'daemon', 'first line');
  return {
    events,
    next,
    stop: async () => {
      child.kill('SIGINT');
      return exited;
    },
  };
}

async function machineProperty(bus: PrivateBus, name: string): Promise<string> {
  const { stdout } = await exec('busctl', [
    '--address',
    bus.address,
    'get-property',
    'org.vfiohookd1',
    '/org/vfiohookd1/machine/win10',
    'org.vfiohookd1.Machine',
    name,
  ]);
  return stdout.trim();
}

test('a hung unbind is visible while it hangs: monitor prints the step, State is preparing, Step and STATUS= name it', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-fixture-');
  const fixture = structuredClone(BUILTIN_HOSTS.get('reference-host')!) as { drivers: Record<string, object> };
  fixture.drivers['amdgpu'] = { hangsOnUnbind: true };
  const fixturePath = path.join(dir, 'hanging-amdgpu.json');
  await fs.writeFile(fixturePath, JSON.stringify(fixture));
  // Long enough to look at everything while the unbind hangs; the prepare then fails and rolls back.
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { fixture: fixturePath, config: `[daemon]\nwrite-timeout = "20s"\n${WIN10_CONFIG}` });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  const monitor = await startMonitor(t, bus);
  t.like(monitor.events[0], { kind: 'daemon', running: true });

  const prepare = runHook(hook, ['win10', 'prepare', 'begin', '-'], WIN10_XML);
  const hung = await monitor.next((e) => e['kind'] === 'step' && e['step'] === 'unbinding 0000:0b:00.0 from amdgpu', 'the hanging step');
  t.like(hung, { vm: 'win10', stage: 'prepare' });
  t.false(
    monitor.events.some((e) => e['kind'] === 'hook'),
    'the step arrived before the hook finished',
  );
  await monitor.next((e) => e['kind'] === 'state' && e['state'] === 'preparing', 'state preparing');
  t.is(await machineProperty(bus, 'State'), 's "preparing"');
  t.is(await machineProperty(bus, 'Step'), 's "unbinding 0000:0b:00.0 from amdgpu"');
  t.regex(await machineProperty(bus, 'StepSinceUsec'), /^t [1-9]\d{15}$/);
  // STATUS= names the step, and its age keeps counting while it hangs (a ticker, not only at the step's start).
  const status = await daemon.notify.waitForMatch(/^STATUS=Preparing 'win10': unbinding 0000:0b:00\.0 from amdgpu, [1-9]\d* s$/);
  t.regex(status, /^STATUS=Preparing 'win10': unbinding 0000:0b:00\.0 from amdgpu, [1-9]\d* s$/);
  const steps = monitor.events.filter((e) => e['kind'] === 'step').map((e) => e['step']);
  t.deepEqual(steps.slice(0, 2), ['planning', 'setting driver_override of 0000:0b:00.1 to vfio-pci'], JSON.stringify(steps));

  const r = await prepare;
  t.is(r.code, 1);
  const done = await monitor.next((e) => e['kind'] === 'hook', 'the hook line');
  t.like(done, { vm: 'win10', operation: 'prepare', subOperation: 'begin', success: false });
  await monitor.next((e) => e['kind'] === 'state' && e['state'] === 'failed', 'state failed');
  t.is(await machineProperty(bus, 'Step'), 's ""');
  t.is(await monitor.stop(), 0);
});

test('a whole lifecycle, in order: each stage state, its steps, then its hook line', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  const monitor = await startMonitor(t, bus);
  for (const [op, sub] of [
    ['prepare', 'begin'],
    ['start', 'begin'],
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
  ] as const) {
    t.is((await runHook(hook, ['win10', op, sub, '-'], WIN10_XML)).code, 0, op);
    await monitor.next((e) => e['kind'] === 'hook' && e['operation'] === op, `hook ${op}`);
  }
  await monitor.next((e) => e['kind'] === 'state' && e['state'] === 'released', 'state released');
  const kinds = monitor.events.map((e) =>
    e['kind'] === 'hook' ? `hook ${e['operation']}` : e['kind'] === 'state' ? `state ${e['state']}` : e['kind'],
  );
  const at = (k: string): number => kinds.indexOf(k);
  t.true(at('state preparing') < at('step') && at('step') < at('hook prepare'), kinds.join(' | '));
  t.true(
    // A hook answers once the objects show its stage (DaemonBackend's `settled`): the state, then the hook line.
    at('hook prepare') < at('state releasing') && at('state releasing') < at('state released') && at('state released') < at('hook release'),
    kinds.join(' | '),
  );
  const releaseSteps = monitor.events.filter((e) => e['kind'] === 'step' && e['stage'] === 'release').map((e) => e['step']);
  t.true(releaseSteps.includes('probing 0000:0b:00.0 (expecting amdgpu)'), JSON.stringify(releaseSteps));
  t.is(await monitor.stop(), 0);
});

test('monitor without a daemon says so and keeps waiting; it follows the daemon once it starts', async (t) => {
  const bus = await startPrivateBus(t);
  const monitor = await startMonitor(t, bus);
  t.like(monitor.events[0], { kind: 'daemon', running: false });
  await startDaemon(t, bus, { config: WIN10_CONFIG });
  await monitor.next((e) => e['kind'] === 'daemon' && e['running'] === true, 'the daemon owning its name');
  t.is(await monitor.stop(), 0);
});
