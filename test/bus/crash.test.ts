/**
 * A crash at any instant leaves nothing stranded. The real daemon on a
 * private bus and the simulated reference host is SIGKILLed right after
 * each sysfs write and after each state save of a prepare and of a release
 * (VFIO_HOOKD_CRASH_AFTER, honoured only on a simulated host), every point,
 * not a sample: the loop goes on until the hook completes without reaching
 * the point. Then the daemon is started again and the hooks are retried as
 * libvirt would (after a failed prepare: `release end failed`; then the
 * user's next `virsh start` and stop), and at every point:
 * - no device of the host is driverless that had a driver;
 * - no device is on vfio-pci without a claim, and no claim without vfio-pci;
 * - the recorded original drivers are the real ones;
 * - after the release, every device is where it started (driver, override).
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startDaemon, startPrivateBus, tempDir, type DaemonProcess, type PrivateBus } from '../helpers/private-bus.js';
import { BUILTIN_HOSTS } from '../../lib/sim/index.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import { handleHook } from '../helpers/command.js';

const RX590 = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' } as const;
/** Every device of the reference host with its driver at boot. */
const BOOT_DRIVERS = new Map(
  (BUILTIN_HOSTS.get('reference-host')!.devices as { address: string; driver?: string }[]).map((d) => [d.address, d.driver ?? null]),
);

/** HandleHook for win10, as the hook of an earlier version called it. */
function hook(bus: PrivateBus, op: string, sub: string, extra = '-'): Promise<{ ok: boolean; text: string }> {
  return handleHook(bus, 'win10', op, sub, WIN10_XML, extra);
}

async function binding(daemon: DaemonProcess, address: string): Promise<{ driver: string | null; override: string }> {
  const dir = path.join(daemon.simDir, 'sys/bus/pci/devices', address);
  const link = await fs.readlink(path.join(dir, 'driver')).catch(() => null);
  return {
    driver: link === null ? null : path.basename(link),
    override: (await fs.readFile(path.join(dir, 'driver_override'), 'utf8')).trim(),
  };
}

interface Claims {
  claims: Record<string, { owner: { kind: string; name?: string }; originalDriver: string | null; originalKnown: boolean }>;
  pending: unknown;
}

async function state(daemon: DaemonProcess): Promise<Claims> {
  const text = await fs.readFile(path.join(daemon.runRoot, 'vfio-hookd', 'state.json'), 'utf8').catch(() => null);
  return text === null ? { claims: {}, pending: null } : (JSON.parse(text) as Claims);
}

/** The invariants that must hold after every restart; returns the violations, [] when none. */
async function violations(daemon: DaemonProcess, when: string): Promise<string[]> {
  const out: string[] = [];
  const s = await state(daemon);
  if (s.pending !== null) out.push(`${when}: a write-ahead record is left`);
  for (const [address, boot] of BOOT_DRIVERS) {
    const b = await binding(daemon, address);
    if (boot !== null && b.driver === null) out.push(`${when}: ${address} is driverless`);
    const claim = s.claims[address];
    if (b.driver === 'vfio-pci' && claim === undefined) out.push(`${when}: ${address} is on vfio-pci without an owner`);
    if (claim !== undefined && b.driver !== 'vfio-pci') out.push(`${when}: ${address} is claimed but on ${b.driver ?? 'no driver'}`);
    if (claim !== undefined && (!claim.originalKnown || claim.originalDriver !== boot)) {
      out.push(
        `${when}: ${address} records ${claim.originalKnown ? String(claim.originalDriver) : 'unknown'} as its original driver, not ${boot}`,
      );
    }
  }
  return out;
}

async function everythingWhereItStarted(daemon: DaemonProcess, when: string): Promise<string[]> {
  const out: string[] = [];
  for (const [address, boot] of BOOT_DRIVERS) {
    const b = await binding(daemon, address);
    if (b.driver !== boot || b.override !== '(null)')
      out.push(`${when}: ${address} is on ${b.driver ?? 'no driver'} (override ${b.override}), not ${boot}`);
  }
  if (Object.keys((await state(daemon)).claims).length > 0) out.push(`${when}: claims are left`);
  return out;
}

/**
 * Crash at `kind:n` during `stage`. Returns null when the stage finished
 * before reaching the point (the loop's end), else the violations found.
 */
async function crashAt(t: ExecutionContext, stage: 'prepare' | 'release', kind: 'write' | 'save', n: number): Promise<string[] | null> {
  const bus = await startPrivateBus(t);
  const dir = await tempDir(t, 'vfio-hookd-crash-');
  await fs.writeFile(path.join(dir, 'vfio-hookd.toml'), WIN10_CONFIG);
  const crashEnv = { VFIO_HOOKD_CRASH_AFTER: `${kind}:${n}` };
  if (stage === 'release') {
    const first = await startDaemon(t, bus, { dir });
    t.true((await hook(bus, 'prepare', 'begin')).ok);
    t.true((await hook(bus, 'started', 'begin')).ok);
    first.child.kill('SIGTERM');
    await first.exited;
  }
  const doomed = await startDaemon(t, bus, { dir, env: crashEnv });
  const answer = await hook(bus, stage, stage === 'prepare' ? 'begin' : 'end', stage === 'prepare' ? '-' : 'shutdown');
  if (answer.ok) {
    // The kill happens before the reply, so a reply means the point was never reached.
    doomed.child.kill('SIGTERM');
    t.is(await doomed.exited, 0);
    return null;
  }
  t.is(await doomed.exited, 'SIGKILL', answer.text);

  const daemon = await startDaemon(t, bus, { dir });
  const found = await violations(daemon, `after restart (${stage}, ${kind} ${n})`);
  if (stage === 'prepare') {
    // libvirt after a failed prepare, then the user's next start and stop.
    t.true((await hook(bus, 'stopped', 'end')).ok);
    t.true((await hook(bus, 'release', 'end', 'failed')).ok);
    found.push(...(await everythingWhereItStarted(daemon, `after release end failed (${kind} ${n})`)));
    const again = await hook(bus, 'prepare', 'begin');
    t.true(again.ok, again.text);
    found.push(...(await violations(daemon, `after the retried prepare (${kind} ${n})`)));
    for (const [address, driver] of Object.entries(RX590)) {
      if ((await binding(daemon, address)).driver !== 'vfio-pci') found.push(`retried prepare (${kind} ${n}): ${address} not on vfio-pci`);
      if ((await state(daemon)).claims[address]?.originalDriver !== driver)
        found.push(`retried prepare (${kind} ${n}): ${address} original is wrong`);
    }
  }
  t.true((await hook(bus, 'stopped', 'end')).ok);
  const release = await hook(bus, 'release', 'end', 'shutdown');
  t.true(release.ok, release.text);
  found.push(...(await everythingWhereItStarted(daemon, `after release (${stage}, ${kind} ${n})`)));
  return found;
}

for (const stage of ['prepare', 'release'] as const) {
  for (const kind of ['write', 'save'] as const) {
    test(`a daemon killed after every ${kind} of a ${stage} strands nothing once restarted and retried`, async (t) => {
      const problems: string[] = [];
      let points = 0;
      for (let n = 1; n < 100; n++) {
        const found = await crashAt(t, stage, kind, n);
        if (found === null) break;
        points++;
        problems.push(...found);
      }
      t.log(`${points} crash points tried after each ${kind} of the ${stage}`);
      console.log(`crash test: ${points} points after each ${kind} of the ${stage}, ${problems.length} problems`);
      t.true(points >= (kind === 'write' ? 6 : 2), `the ${stage} has at least that many ${kind}s: ${points}`);
      t.deepEqual(problems, []);
    });
  }
}
