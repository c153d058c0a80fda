/**
 * vfio-hookd-agent end to end, with real components only: the real daemon on
 * a private system bus (simulated host), driven through its lifecycle by real
 * HandleHook calls; a real `systemd --user` for the test user with its own
 * session bus (test/helpers/user-manager.ts); the agent installed from
 * units/vfio-hookd-agent.service.in and started by that manager as the test
 * user (Type=notify: `systemctl --user start` returns after READY=1). The
 * agent is not root, so its following the VM's state proves that
 * PropertiesChanged from the daemon reaches a non-root client through the
 * shipped bus policy (it never polls).
 *
 * The shipped looking-glass-client@ and scream-receiver@ units are used with
 * a drop-in that runs `sleep infinity` instead of the real programs.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import dbus from 'dbus-next';
import { REPO, startDaemon, startPrivateBus, type DaemonProcess, type PrivateBus } from '../helpers/private-bus.js';
import { startUserManager, type UserManager } from '../helpers/user-manager.js';
import { machinePath } from '../../lib/bus/object-path.js';

const execFileAsync = promisify(execFile);

const WIN10_XML = await fs.readFile(path.join(REPO, 'test', 'fixtures', 'domains', 'win10.xml'), 'utf8');
const LG = 'looking-glass-client@looking-glass.service';
const SCREAM = 'scream-receiver@scream.service';
const BROKEN = 'broken-client.service';
const BROKEN_ONESHOT = 'broken-oneshot.service';
const MISSING = 'missing-client.service';
const WAIT_MS = 30_000;

function daemonConfig(units: string[] | null, user: string | null = 'vfiohookd-test'): string {
  // Shared-memory files need an owner: without a user, the VM has only devices.
  const shm =
    user === null
      ? ''
      : `
[vm.win10.looking-glass]
size = "32M"
group = "64055"
[vm.win10.scream]
size = "2M"
`;
  return `
[vm.win10]
devices = ["0000:0b:00.0"]
${user !== null ? `user = "${user}"` : ''}
${units !== null ? `units = [${units.map((u) => `"${u}"`).join(', ')}]` : ''}
${shm}`;
}

/** systemd unit-file quoting of one argument: % and $ doubled. */
const unitArg = (s: string): string => s.replaceAll('%', '%%').replaceAll('$', '$$');

async function userUnits(): Promise<Record<string, string>> {
  const sleeper = '[Service]\nExecStart=\nExecStart=/bin/sleep infinity\n';
  return {
    'looking-glass-client@.service': await fs.readFile(path.join(REPO, 'units', 'looking-glass-client@.service'), 'utf8'),
    'looking-glass-client@.service.d/test.conf': sleeper,
    'scream-receiver@.service': await fs.readFile(path.join(REPO, 'units', 'scream-receiver@.service'), 'utf8'),
    'scream-receiver@.service.d/test.conf': sleeper,
    // Type=simple: the start job is 'done' (forked), then the unit fails: seen through ActiveState.
    [BROKEN]: '[Unit]\nDescription=A client that fails at once\n[Service]\nExecStart=/bin/false\n',
    // Type=oneshot: the start job itself ends with result 'failed'.
    [BROKEN_ONESHOT]: '[Service]\nType=oneshot\nExecStart=/bin/false\n',
  };
}

interface World {
  readonly bus: PrivateBus;
  readonly daemon: DaemonProcess;
  readonly um: UserManager;
  readonly logFile: string;
  hook(operation: string, subOperation: string): Promise<void>;
  /** Run the VM through prepare, start, started. */
  run(): Promise<void>;
  startAgent(): Promise<void>;
  agentProperty(name: string): Promise<unknown>;
  /** Resolves when `test` holds for the Agent object's properties (read now, then on each PropertiesChanged). */
  waitForAgent(test: (props: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>>;
  isActive(unit: string): Promise<string>;
  agentLog(): Promise<string>;
  /** Resolves when the daemon's Machine 'win10' has this State (read now, then on each PropertiesChanged). */
  waitForState(state: string): Promise<void>;
}

async function world(t: ExecutionContext, config: string, agentToml?: string): Promise<World> {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config });
  const um = await startUserManager(t, await userUnits());
  const logFile = path.join(um.home, 'agent.log');
  const template = await fs.readFile(path.join(REPO, 'units', 'vfio-hookd-agent.service.in'), 'utf8');
  const execStart = [
    process.execPath,
    '--import',
    'tsx',
    path.join(REPO, 'service', 'vfio-hookd-agent.ts'),
    `--system-bus-address=${bus.address}`,
  ];
  await um.writeUnits({
    'vfio-hookd-agent.service': template.replaceAll('@NODE@', process.execPath).replaceAll('@LIBDIR@', REPO),
    // The shipped unit runs the built file; the test runs the source (tsx) on the private system bus, logs to
    // a file, and does not restart. The session bus is found as in a real session ($XDG_RUNTIME_DIR/bus).
    'vfio-hookd-agent.service.d/test.conf': `[Service]\nExecStart=\nExecStart=${execStart.map(unitArg).join(' ')}\nWorkingDirectory=${REPO}\nStandardOutput=append:${logFile}\nStandardError=append:${logFile}\nRestart=no\n`,
    ...(agentToml !== undefined ? { '../../vfio-hookd/agent.toml': agentToml } : {}),
  });

  const system = dbus.sessionBus({ busAddress: bus.address });
  t.teardown(() => system.disconnect());
  const manager = (await system.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const hook = async (operation: string, subOperation: string): Promise<void> => {
    await (manager['HandleHook'] as (...a: string[]) => Promise<void>)('win10', operation, subOperation, '-', WIN10_XML);
  };

  const session = dbus.sessionBus({ busAddress: um.sessionBusAddress });
  t.teardown(() => session.disconnect());
  const agentProps = async (): Promise<dbus.ClientInterface> =>
    (await session.getProxyObject('org.vfiohookd1.Agent', '/org/vfiohookd1/agent')).getInterface('org.freedesktop.DBus.Properties');
  const getAll = async (props: dbus.ClientInterface): Promise<Record<string, unknown>> => {
    const all = (await (props['GetAll'] as (i: string) => Promise<Record<string, { value: unknown }>>)('org.vfiohookd1.Agent')) ?? {};
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.value]));
  };

  return {
    bus,
    daemon,
    um,
    logFile,
    hook,
    async run() {
      await hook('prepare', 'begin');
      await hook('start', 'begin');
      await hook('started', 'begin');
    },
    async startAgent() {
      const started = await um.systemctl('start', 'vfio-hookd-agent.service');
      if (started.code !== 0)
        throw new Error(`the agent did not start: ${started.stderr}\n${await fs.readFile(logFile, 'utf8').catch(() => '')}`);
    },
    async agentProperty(name) {
      return (await getAll(await agentProps()))[name];
    },
    async waitForAgent(test, what) {
      const props = await agentProps();
      return new Promise((resolve, reject) => {
        let current: Record<string, unknown> = {};
        const timer = setTimeout(() => {
          props.off('PropertiesChanged', onChange);
          reject(new Error(`agent: no ${what} in ${WAIT_MS} ms; last ${JSON.stringify(current)}`));
        }, WAIT_MS);
        const check = (): void => {
          if (!test(current)) return;
          clearTimeout(timer);
          props.off('PropertiesChanged', onChange);
          resolve(current);
        };
        function onChange(_iface: string, changed: Record<string, { value: unknown }>): void {
          for (const [k, v] of Object.entries(changed)) current[k] = v.value;
          check();
        }
        // Subscribed first, then read: no change falls in between.
        props.on('PropertiesChanged', onChange);
        getAll(props).then((all) => {
          current = { ...all, ...current };
          check();
        }, reject);
      });
    },
    async isActive(unit) {
      return (await um.systemctl('is-active', unit)).stdout;
    },
    agentLog: () => fs.readFile(logFile, 'utf8').catch(() => ''),
    async waitForState(state) {
      const props = (await system.getProxyObject('org.vfiohookd1', machinePath('win10'))).getInterface('org.freedesktop.DBus.Properties');
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`State never became ${state}`)), WAIT_MS);
        const done = (): void => {
          clearTimeout(timer);
          props.off('PropertiesChanged', onChange);
          resolve();
        };
        function onChange(_iface: string, changed: Record<string, { value: unknown }>): void {
          if (changed['State']?.value === state) done();
        }
        props.on('PropertiesChanged', onChange);
        (props['Get'] as (i: string, p: string) => Promise<{ value: unknown }>)('org.vfiohookd1.Machine', 'State').then((v) => {
          if (v.value === state) done();
        }, reject);
      });
    },
  };
}

const has = (list: unknown, ...units: string[]): boolean => Array.isArray(list) && units.every((u) => list.includes(u));

test("the agent starts the VM's user units when it runs and stops them when it stops", async (t) => {
  const w = await world(t, daemonConfig([LG, SCREAM]));
  await w.startAgent();
  t.deepEqual(await w.agentProperty('ActiveUnits'), [], 'nothing runs before the VM');
  t.is(await w.isActive(LG), 'inactive');

  await w.hook('prepare', 'begin');
  await w.hook('start', 'begin');
  t.is(await w.isActive(LG), 'inactive', 'not before started');
  const t0 = Date.now();
  await w.hook('started', 'begin');
  await w.waitForAgent((p) => has(p['ActiveUnits'], LG, SCREAM), 'active units');
  t.log(`units active ${Date.now() - t0} ms after 'started begin'`);
  t.is(await w.isActive(LG), 'active');
  t.is(await w.isActive(SCREAM), 'active');
  t.deepEqual(await w.agentProperty('FailedUnits'), []);

  await w.hook('stopped', 'end');
  await w.waitForAgent((p) => Array.isArray(p['ActiveUnits']) && p['ActiveUnits'].length === 0, 'empty ActiveUnits');
  t.is(await w.isActive(LG), 'inactive');
  t.is(await w.isActive(SCREAM), 'inactive');
  await w.hook('release', 'end');
  t.regex(await w.agentLog(), /VM 'win10' is running: starting/);
});

test('a VM already running when the agent starts gets its units at once', async (t) => {
  const w = await world(t, daemonConfig([LG]));
  const running = w.waitForState('running');
  await w.run();
  await running;
  // Type=notify: the start job ends at READY=1, which comes after the first read was acted on.
  await w.startAgent();
  t.is(await w.isActive(LG), 'active');
  t.deepEqual(await w.agentProperty('ActiveUnits'), [LG]);
  await w.hook('stopped', 'end');
  await w.waitForAgent((p) => Array.isArray(p['ActiveUnits']) && p['ActiveUnits'].length === 0, 'empty ActiveUnits');
  t.is(await w.isActive(LG), 'inactive');
});

test('a unit that fails is reported once and not retried; the others run', async (t) => {
  const w = await world(t, daemonConfig([LG, BROKEN, BROKEN_ONESHOT, MISSING]));
  await w.startAgent();
  await w.run();
  const props = await w.waitForAgent(
    (p) => has(p['FailedUnits'], BROKEN, BROKEN_ONESHOT, MISSING) && has(p['ActiveUnits'], LG),
    'failed units',
  );
  t.deepEqual(props['FailedUnits'], [BROKEN, BROKEN_ONESHOT, MISSING].sort());
  const reasons = Object.fromEntries(
    (props['Failures'] as [string, string, string][]).map(([vm, unit, reason]) => [unit, `${vm}: ${reason}`]),
  );
  t.is(reasons[BROKEN], 'win10: failed after start');
  t.is(reasons[BROKEN_ONESHOT], 'win10: job failed');
  t.regex(reasons[MISSING] ?? '', /^win10: error: Unit missing-client\.service not found/);
  t.is(await w.isActive(BROKEN), 'failed');
  t.is(await w.isActive(LG), 'active');
  const invocation = (await w.um.systemctl('show', '-P', 'InvocationID', BROKEN)).stdout;
  // Give a retry loop time to show itself: the unit must not be started again.
  await new Promise((r) => setTimeout(r, 1500));
  t.is((await w.um.systemctl('show', '-P', 'InvocationID', BROKEN)).stdout, invocation, 'not started again');
  t.is((await w.agentLog()).match(/User unit 'broken-client\.service' of VM 'win10' failed/g)?.length, 1, 'reported once');
  t.regex(
    await w.agentLog(),
    /^<3>User unit 'broken-client\.service' of VM 'win10' failed \(failed after start\); not retried until the VM starts again \[.*UNIT=broken-client\.service/m,
  );

  // vfio-hookctl status shows them beside what the daemon knows (read from the user's agent).
  const status = await execFileAsync(
    process.execPath,
    [
      '--import',
      'tsx',
      'service/vfio-hookctl.ts',
      'status',
      '--bus-address',
      w.bus.address,
      '--session-bus-address',
      w.um.sessionBusAddress,
    ],
    { cwd: REPO },
  );
  t.regex(status.stdout, /^win10: running /m);
  t.regex(status.stdout, /^  failed unit: broken-client\.service: failed after start$/m);
  t.regex(status.stdout, /^  failed unit: missing-client\.service: error: Unit missing-client\.service not found/m);

  await w.hook('stopped', 'end');
  await w.waitForAgent((p) => Array.isArray(p['ActiveUnits']) && p['ActiveUnits'].length === 0, 'empty ActiveUnits');
  t.is(await w.isActive(LG), 'inactive');
});

// User '' and Units [] here; an older daemon without the two properties takes the same path (MachineView null).
test('a VM the daemon gives no user is claimed through agent.toml, with its units', async (t) => {
  const w = await world(t, daemonConfig(null, null), `[vm.win10]\nunits = ["${SCREAM}"]\n`);
  await w.startAgent();
  await w.run();
  await w.waitForAgent((p) => has(p['ActiveUnits'], SCREAM), 'active units');
  t.is(await w.isActive(SCREAM), 'active');
  t.is(await w.isActive(LG), 'inactive', 'only what agent.toml names');
  await w.hook('stopped', 'end');
  await w.waitForAgent((p) => Array.isArray(p['ActiveUnits']) && p['ActiveUnits'].length === 0, 'empty ActiveUnits');
  t.is(await w.isActive(SCREAM), 'inactive');
});

test('a VM of another user is left alone', async (t) => {
  const w = await world(t, daemonConfig([LG], 'root'), `[vm.win10]\nunits = ["${SCREAM}"]\n`);
  await w.startAgent();
  const running = w.waitForState('running');
  await w.run();
  await running;
  // The agent got the same signal (it follows every Machine) and did nothing; give it time to do something wrong.
  await new Promise((r) => setTimeout(r, 500));
  t.deepEqual(await w.agentProperty('ActiveUnits'), []);
  t.is(await w.isActive(LG), 'inactive');
  t.is(await w.isActive(SCREAM), 'inactive');
});

test('a restarted daemon is followed: units stay while it is away, and stop with the VM afterwards', async (t) => {
  const w = await world(t, daemonConfig([LG]));
  await w.startAgent();
  await w.run();
  await w.waitForAgent((p) => has(p['ActiveUnits'], LG), 'active units');
  w.daemon.child.kill('SIGTERM');
  await w.daemon.exited;
  await startDaemon(t, w.bus, { dir: w.daemon.dir });
  t.is(await w.isActive(LG), 'active', 'the units outlive a daemon restart');
  await w.hook('stopped', 'end');
  await w.waitForAgent((p) => Array.isArray(p['ActiveUnits']) && p['ActiveUnits'].length === 0, 'empty ActiveUnits');
  t.is(await w.isActive(LG), 'inactive');
  t.regex(await w.agentLog(), /vfio-hookd left the system bus/);
});
