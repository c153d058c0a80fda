/** The daemon's small policies, on their own: the refresh coalescer and the trusted shm owners. */
import test from 'ava';
import { CoalescedRefresh } from '../../lib/daemon/coalesced-refresh.js';
import { trustedShmOwners } from '../../lib/daemon/trusted-owners.js';

test('a burst of refresh requests while one runs queues exactly one more', async (t) => {
  let runs = 0;
  let release!: () => void;
  const first = new Promise<void>((resolve) => (release = resolve));
  const refresh = new CoalescedRefresh(async () => {
    runs++;
    if (runs === 1) await first;
  });
  void refresh.request();
  await Promise.resolve();
  void refresh.request();
  void refresh.request();
  void refresh.request();
  release();
  await refresh.settled();
  t.is(runs, 2);
});

/** A refresh that notes 'start N' and 'end N' around a turn of the event loop. */
function recordingRefresh(): { events: string[]; refresh: CoalescedRefresh } {
  const events: string[] = [];
  let n = 0;
  const refresh = new CoalescedRefresh(async () => {
    const i = ++n;
    events.push(`start ${i}`);
    await new Promise((resolve) => setImmediate(resolve));
    events.push(`end ${i}`);
  });
  return { events, refresh };
}

test('refreshes run one at a time, in order', async (t) => {
  const { events, refresh } = recordingRefresh();
  void refresh.request();
  await new Promise((resolve) => setImmediate(resolve));
  void refresh.request();
  await refresh.settled();
  t.deepEqual(events, ['start 1', 'end 1', 'start 2', 'end 2']);
});

test('request() resolves when a refresh begun after it has run, though the queue never goes idle', async (t) => {
  // A long stage asks for a refresh at every step: settled() (the queue idle) could wait for its whole run.
  const { events, refresh } = recordingRefresh();
  const busy = setInterval(() => void refresh.request(), 0);
  t.teardown(() => clearInterval(busy));
  await new Promise((resolve) => setImmediate(resolve));
  const mark = events.length;
  await refresh.request();
  const atAnswer = [...events];
  clearInterval(busy);
  // Resolved once the first refresh started after the request has ended (not the one running then).
  const first = atAnswer.slice(mark).find((e) => e.startsWith('start'));
  t.truthy(first, atAnswer.join(', '));
  t.true(atAnswer.includes(first!.replace('start', 'end')), atAnswer.slice(mark).join(', '));
  // A request made while a refresh waits shares it.
  const a = refresh.request();
  const b = refresh.request();
  t.is(a, b);
  await refresh.settled();
});

const USERS: Record<string, number> = { 'libvirt-qemu': 64055, qemu: 107 };
const lookups: (readonly string[])[] = [];
const resolveUids = async (users: readonly string[]): Promise<Map<string, number>> => {
  lookups.push(users);
  return new Map(users.flatMap((user) => (USERS[user] === undefined ? [] : [[user, USERS[user]] as [string, number]])));
};

test.serial('without qemu-user, root and every distribution name that resolves are trusted, quietly, in one lookup', async (t) => {
  lookups.length = 0;
  t.deepEqual(await trustedShmOwners(null, resolveUids), { uids: [0, 64055, 107], warnings: [] });
  t.deepEqual(lookups, [['libvirt-qemu', 'qemu', 'qemu-libvirtd']]);
});

test('a lookup that fails trusts root alone; said for a configured qemu-user, quiet for the defaults', async (t) => {
  const failing = async (): Promise<Map<string, number>> => {
    throw new Error('getent exited with 1');
  };
  t.deepEqual(await trustedShmOwners(null, failing), { uids: [0], warnings: [] });
  t.deepEqual(await trustedShmOwners('qemu', failing), {
    uids: [0],
    warnings: ["[daemon] qemu-user 'qemu' does not resolve to a user, ignoring"],
  });
});

test('a configured qemu-user is the only one tried, and one that does not resolve is a warning', async (t) => {
  t.deepEqual(await trustedShmOwners('qemu', resolveUids), { uids: [0, 107], warnings: [] });
  t.deepEqual(await trustedShmOwners('kvm', resolveUids), {
    uids: [0],
    warnings: ["[daemon] qemu-user 'kvm' does not resolve to a user, ignoring"],
  });
});
