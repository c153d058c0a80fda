/**
 * Notifier against a real AF_UNIX datagram socket of the test's own, bound in
 * a temp dir and named by NOTIFY_SOCKET in an injected environment: the exact
 * datagrams sd_notify would send, the watchdog pace, and the no-op and
 * failure paths. Every socket and timer is closed by the test that made it.
 */
import { join } from 'node:path';

import { tempDir as makeTempDir } from '../helpers/temp-dir.js';
import { DatagramReceiver } from '../helpers/datagram.js';
import test, { type ExecutionContext } from 'ava';

import { InvalidArgs } from '../../lib/errors.js';
import { DatagramError, Notifier, statusLine } from '../../lib/systemd/index.js';

const tempDir = (t: ExecutionContext): Promise<string> => makeTempDir(t, 'vfio-hookd-notify-');

interface Receiver {
  path: string;
  /** Every datagram so far, as text. */
  messages: string[];
  /** Resolves once `count` datagrams have arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<string[]>;
  close(): void;
}

/** A datagram socket bound at `dir/name`, closed in teardown. */
async function receiver(t: ExecutionContext, dir: string, name = 'notify.sock'): Promise<Receiver> {
  const rx = await DatagramReceiver.open(t, join(dir, name));
  return {
    path: rx.path,
    get messages() {
      return rx.texts;
    },
    waitFor: async (count, timeoutMs) => (await rx.waitForCount(count, timeoutMs)).map((b) => b.toString('utf8')),
    close: () => rx.close(),
  };
}

/**
 * An injected clock for the watchdog: intervals are kept, not run; `tick()`
 * runs every live one once, as elapsed time would. "Nothing happens after
 * stop()" is then a fact about the timer, not a wait that hopes.
 */
class FakeTimers {
  readonly live = new Set<{ callback: () => void; ms: number; unref(): unknown }>();
  readonly periods: number[] = [];
  setInterval = (callback: () => void, ms: number) => {
    const handle = { callback, ms, unref: () => handle };
    this.live.add(handle);
    this.periods.push(ms);
    return handle;
  };
  clearInterval = (handle: { unref(): unknown }) => {
    this.live.delete(handle as never);
  };
  tick(): void {
    for (const h of [...this.live]) h.callback();
  }
}

/** Ref'd timers in this process (unref'd ones are not listed). */
const refTimers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

// --- exact datagrams ---

const datagrams: Array<[string, (n: Notifier) => boolean, string]> = [
  ['ready without status', (n) => n.ready(), 'READY=1'],
  ['ready with status', (n) => n.ready('Watching 1 VM'), 'READY=1\nSTATUS=Watching 1 VM'],
  ['status', (n) => n.status('Detaching 0000:0b:00.0 for win10'), 'STATUS=Detaching 0000:0b:00.0 for win10'],
  [
    'status with newlines made one line',
    (n) => n.status('  Detaching\n0000:0b:00.0\r\nfor win10\n'),
    'STATUS=Detaching 0000:0b:00.0 for win10',
  ],
  ['stopping without status', (n) => n.stopping(), 'STOPPING=1'],
  ['stopping with status', (n) => n.stopping('Reattaching devices'), 'STOPPING=1\nSTATUS=Reattaching devices'],
  ['reloading', (n) => n.reloading(), 'RELOADING=1\nMONOTONIC_USEC=123456789'],
  [
    'reloading with status',
    (n) => n.reloading('Reloading configuration'),
    'RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=Reloading configuration',
  ],
  ['watchdog', (n) => n.watchdog(), 'WATCHDOG=1'],
  ['main pid', (n) => n.mainPid(4242), 'MAINPID=4242'],
  ['raw state', (n) => n.notify('EXTEND_TIMEOUT_USEC=5000000'), 'EXTEND_TIMEOUT_USEC=5000000'],
];

for (const [what, call, expected] of datagrams) {
  test(`sends the exact datagram for ${what}`, async (t) => {
    const rx = await receiver(t, await tempDir(t));
    const errors: Error[] = [];
    const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path }, { monotonicUsec: () => 123456789n, onError: (e) => errors.push(e) });

    t.true(call(notifier));
    t.deepEqual(await rx.waitFor(1), [expected]);
    t.deepEqual(errors, []);
  });
}

test('sends datagrams in the order they were made', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path });
  notifier.status('Starting');
  notifier.ready('Watching 0 VMs');
  notifier.stopping();
  t.deepEqual(await rx.waitFor(3), ['STATUS=Starting', 'READY=1\nSTATUS=Watching 0 VMs', 'STOPPING=1']);
});

test('MONOTONIC_USEC defaults to CLOCK_MONOTONIC in microseconds', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path });
  const before = process.hrtime.bigint() / 1000n;
  notifier.reloading();
  const after = process.hrtime.bigint() / 1000n;
  const [message] = await rx.waitFor(1);
  const match = /^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$/.exec(message ?? '');
  t.truthy(match, message);
  const usec = BigInt(match?.[1] ?? '0');
  t.true(usec >= before && usec <= after);
});

test('statusLine turns control characters into one space and trims', (t) => {
  t.is(statusLine('a\nb'), 'a b');
  t.is(statusLine('a\r\n\tb\u0000c\u007f'), 'a b c');
  t.is(statusLine('\n plain \n'), 'plain');
});

test('refuses an invalid MAINPID before sending anything', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path });
  for (const pid of [0, -1, 1.5, Number.NaN]) {
    const error = t.throws(() => notifier.mainPid(pid), { instanceOf: InvalidArgs });
    t.is(error?.message, `Invalid pid '${pid}', refusing`);
  }
  notifier.status('marker');
  t.deepEqual(await rx.waitFor(1), ['STATUS=marker']);
});

// --- watchdog ---

test.serial("pings WATCHDOG=1 at half WATCHDOG_USEC on an unref'd timer until stopped", async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000' }, { pid: 4242 });
  t.is(notifier.watchdogUsec, 200000);

  const timersBefore = refTimers();
  const stop = notifier.startWatchdog();
  t.teardown(stop);
  t.is(refTimers(), timersBefore, 'the watchdog timer must not keep the process alive');

  // One ping at once, then one every ~100 ms: three arrive well within 5 s.
  const seen = await rx.waitFor(3, 5000);
  t.true(
    seen.every((m) => m === 'WATCHDOG=1'),
    JSON.stringify(seen),
  );

  stop();
});

test('the watchdog interval is half WATCHDOG_USEC, and stop() clears it: no tick pings after', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const timers = new FakeTimers();
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000' }, { timers });
  const stop = notifier.startWatchdog();
  t.deepEqual(timers.periods, [100]);
  await rx.waitFor(1); // the ping at once
  timers.tick();
  timers.tick();
  await rx.waitFor(3);
  stop();
  t.is(timers.live.size, 0, 'the interval is cleared');
  timers.tick();
  notifier.status('marker');
  t.deepEqual(await rx.waitFor(4), ['WATCHDOG=1', 'WATCHDOG=1', 'WATCHDOG=1', 'STATUS=marker'], 'no ping between stop() and the marker');
});

test('close() stops the watchdog and later sends do nothing', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const timers = new FakeTimers();
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000' }, { timers });
  notifier.startWatchdog();
  await rx.waitFor(1);
  notifier.close();
  t.false(notifier.enabled);
  t.false(notifier.ready());
  t.is(timers.live.size, 0, 'the interval is cleared');
  t.false(notifier.watchdog(), 'a ping after close() sends nothing');
  t.deepEqual(rx.messages, ['WATCHDOG=1']);
});

test('starting the watchdog again replaces the previous timer', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const timers = new FakeTimers();
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000' }, { timers });
  const stopFirst = notifier.startWatchdog();
  const stopSecond = notifier.startWatchdog();
  t.is(timers.live.size, 1, 'the first interval was replaced');
  stopFirst(); // stale: must not stop the second timer
  t.is(timers.live.size, 1);
  timers.tick();
  await rx.waitFor(3);
  stopSecond();
  t.is(timers.live.size, 0);
});

test('WATCHDOG_PID of another process means no watchdog for us', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const timers = new FakeTimers();
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000', WATCHDOG_PID: '4243' }, { pid: 4242, timers });
  t.is(notifier.watchdogUsec, null);
  const stop = notifier.startWatchdog();
  t.is(timers.live.size, 0, 'no interval at all');
  notifier.status('marker');
  t.deepEqual(await rx.waitFor(1), ['STATUS=marker'], 'and no ping before it');
  stop();
});

test('WATCHDOG_PID equal to our pid keeps the watchdog', (t) => {
  const notifier = Notifier.fromEnv(
    { NOTIFY_SOCKET: '/nonexistent/notify', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '4242' },
    { pid: 4242 },
  );
  t.is(notifier.watchdogUsec, 30000000);
  t.is(Notifier.fromEnv({ NOTIFY_SOCKET: '/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: String(process.pid) }).watchdogUsec, 30000000);
});

test('an unset, zero or malformed WATCHDOG_USEC means no watchdog', (t) => {
  for (const value of [undefined, '', '0', '-5', '1e6', '12abc', ' 100']) {
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify' };
    if (value !== undefined) env['WATCHDOG_USEC'] = value;
    t.is(Notifier.fromEnv(env).watchdogUsec, null, String(value));
  }
});

// --- no socket, bad sockets ---

test('without NOTIFY_SOCKET every call is a no-op that reports nothing', (t) => {
  const errors: Error[] = [];
  for (const env of [{}, { NOTIFY_SOCKET: '' }, { WATCHDOG_USEC: '200000' }]) {
    const notifier = Notifier.fromEnv(env, { onError: (e) => errors.push(e) });
    t.false(notifier.enabled);
    t.is(notifier.socket, null);
    t.is(notifier.watchdogUsec, null);
    t.false(notifier.ready('x'));
    t.false(notifier.status('x'));
    t.false(notifier.stopping());
    t.false(notifier.reloading());
    t.false(notifier.watchdog());
    t.false(notifier.mainPid(1));
    const timers = refTimers();
    const stop = notifier.startWatchdog();
    t.is(refTimers(), timers);
    stop();
    notifier.close();
  }
  t.deepEqual(errors, []);
  const disabled = Notifier.disabled();
  t.false(disabled.enabled);
  t.false(disabled.ready());
});

test('an abstract NOTIFY_SOCKET is reported once and nothing is sent', (t) => {
  // unix-dgram copies the address with strncpy, so '@name' (NUL-prefixed on the wire) cannot be addressed.
  const errors: DatagramError[] = [];
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: '@/org/freedesktop/systemd1/notify/42' }, { onError: (e) => errors.push(e) });
  t.true(notifier.enabled);
  t.false(notifier.ready());
  t.false(notifier.status('still starting'));
  t.is(errors.length, 1);
  t.true(errors[0] instanceof DatagramError);
  t.is(errors[0]?.code, 'EINVAL');
  t.is(
    errors[0]?.message,
    "Cannot send 'READY=1' to NOTIFY_SOCKET '@/org/freedesktop/systemd1/notify/42': abstract socket names are not supported (unix-dgram cannot address them), ignoring",
  );
});

test('a relative or over-long NOTIFY_SOCKET is refused, not cut', (t) => {
  const errors: DatagramError[] = [];
  t.false(Notifier.fromEnv({ NOTIFY_SOCKET: 'run/notify' }, { onError: (e) => errors.push(e) }).ready());
  const long = `/tmp/${'x'.repeat(103)}`; // 108 bytes: sun_path would lose the last one
  t.false(Notifier.fromEnv({ NOTIFY_SOCKET: long }, { onError: (e) => errors.push(e) }).ready());
  t.deepEqual(
    errors.map((e) => [e.code, e.message]),
    [
      ['EINVAL', "Cannot send 'READY=1' to NOTIFY_SOCKET 'run/notify': not an absolute path, ignoring"],
      ['EINVAL', `Cannot send 'READY=1' to NOTIFY_SOCKET '${long}': longer than 107 bytes, ignoring`],
    ],
  );
});

test('a send failure is reported once, and again only after a success', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'notify.sock');
  const errors: DatagramError[] = [];
  const notifier = Notifier.fromEnv({ NOTIFY_SOCKET: path }, { onError: (e) => errors.push(e) });

  t.false(notifier.status('one'));
  t.false(notifier.status('two'));
  t.is(errors.length, 1);
  t.is(errors[0]?.code, 'ENOENT');
  t.is(errors[0]?.message, `Cannot send 'STATUS=one' to NOTIFY_SOCKET '${path}': no such file or directory (ENOENT), ignoring`);

  const rx = await receiver(t, dir);
  t.true(notifier.status('three'));
  t.deepEqual(await rx.waitFor(1), ['STATUS=three']);

  rx.close(); // the socket file stays, nobody listens: ECONNREFUSED
  t.false(notifier.status('four'));
  t.false(notifier.status('five'));
  t.deepEqual(
    errors.map((e) => e.code),
    ['ENOENT', 'ECONNREFUSED'],
  );
});

test('a throwing onError does not escape', (t) => {
  const notifier = Notifier.fromEnv(
    { NOTIFY_SOCKET: '/nonexistent/notify.sock' },
    {
      onError: () => {
        throw new Error('logger down');
      },
    },
  );
  t.notThrows(() => notifier.ready());
});

// --- environment ---

test('unsetEnvironment removes NOTIFY_SOCKET and the watchdog variables after reading them', async (t) => {
  const rx = await receiver(t, await tempDir(t));
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: rx.path, WATCHDOG_USEC: '200000', WATCHDOG_PID: '4242', PATH: '/usr/bin' };
  const notifier = Notifier.fromEnv(env, { unsetEnvironment: true, pid: 4242 });
  t.deepEqual(env, { PATH: '/usr/bin' });
  t.is(notifier.watchdogUsec, 200000);
  t.true(notifier.ready());
  t.deepEqual(await rx.waitFor(1), ['READY=1']);
});

test('the environment is left alone by default', (t) => {
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '200000' };
  Notifier.fromEnv(env);
  t.deepEqual(env, { NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '200000' });
});
