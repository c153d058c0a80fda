/**
 * Daemon figures on a private bus and the simulated reference host (the
 * built daemon, `dist/`): time from start to READY=1, the hook's round trip
 * (the real hooks/qemu, sh + busctl, as libvirt runs it) for an unmanaged VM
 * and a managed one, next to a bare `busctl call` of Peer.Ping on the same
 * bus, and resident memory after start and after N VM lifecycles
 * (VFIO_BENCH_LIFECYCLES, default 100 for `npm run bench`; `npm run bench:long`
 * runs 2,000 and reports the memory at 1,000 and 2,000, to show no growth).
 * Prints figures; never fails on a time.
 *
 * Run alone: npm run build && node --import tsx test/bench/hook.bench.ts
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import dbus from 'dbus-next';
import { REPO, startDaemon, startPrivateBus } from '../helpers/private-bus.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import { stats, timeRuns } from './figures.js';

const run = promisify(execFile);

// The helpers register cleanups on an ava context; a bench keeps them itself.
const cleanups: (() => unknown)[] = [];
const t = { teardown: (fn: () => unknown) => cleanups.push(fn) } as unknown as ExecutionContext;

async function rssMiB(pid: number): Promise<string> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 'NaN');
  return `${(kb / 1024).toFixed(1)} MiB`;
}

const PLAIN_XML = "<domain type='kvm'><name>plain</name><devices/></domain>";

try {
  const bus = await startPrivateBus(t);
  const t0 = performance.now();
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG, compiled: true });
  console.log(`bench daemon: start to READY=1 (built daemon, cold node): ${(performance.now() - t0).toFixed(0)} ms`);
  const pid = daemon.child.pid!;
  console.log(`bench daemon: rss after start: ${await rssMiB(pid)}`);

  const hookText = (await fs.readFile(path.join(REPO, 'hooks/qemu'), 'utf8'))
    .replace(/^BUS_ADDRESS=.*$/m, `BUS_ADDRESS='${bus.address}'`)
    .replace(/^RUNTIME=.*$/m, `RUNTIME='${path.join(daemon.runRoot, 'vfio-hookd')}'`);
  const hook = path.join(daemon.dir, 'hook');
  await fs.writeFile(hook, hookText, { mode: 0o755 });
  const runHook = async (args: string[], xml: string): Promise<void> => {
    const child = spawn(hook, args, { env: { LC_ALL: 'C', PATH: '/usr/bin:/bin' }, stdio: ['pipe', 'ignore', 'inherit'] });
    child.stdin.end(xml);
    const [code] = (await once(child, 'exit')) as [number];
    if (code !== 0) throw new Error(`hook ${args.join(' ')} exited ${code}`);
  };

  const ping = await timeRuns(300, () =>
    run('busctl', [`--address=${bus.address}`, 'call', 'org.vfiohookd1', '/org/vfiohookd1', 'org.freedesktop.DBus.Peer', 'Ping']),
  );
  console.log(`bench daemon: bare busctl call of Peer.Ping: ${stats(ping)}`);
  console.log(
    `bench daemon: hook round trip, unmanaged VM (prepare begin): ${stats(await timeRuns(300, () => runHook(['plain', 'prepare', 'begin', '-'], PLAIN_XML)))}`,
  );
  const disk = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/data.qcow2'/><target dev='vdb'/></disk>\n";
  const bigXml = PLAIN_XML.replace('<devices/>', `<devices>${disk.repeat(Math.ceil(2 ** 20 / disk.length))}</devices>`);
  console.log(
    `bench daemon: hook round trip, unmanaged VM, 1 MiB domain XML (parsed on a worker thread): ${stats(await timeRuns(20, () => runHook(['plain', 'prepare', 'begin', '-'], bigXml)))}`,
  );
  console.log(
    `bench daemon: hook round trip, managed VM, stage without work (start begin): ${stats(await timeRuns(300, () => runHook(['win10', 'start', 'begin', '-'], WIN10_XML)))}`,
  );
  const cycles = await timeRuns(50, async () => {
    await runHook(['win10', 'prepare', 'begin', '-'], WIN10_XML);
    await runHook(['win10', 'release', 'end', '-'], WIN10_XML);
  });
  console.log(`bench daemon: hook prepare + release of the managed VM (RX 590 to vfio-pci and back, 2 shm files): ${stats(cycles)}`);

  // N lifecycles over one client connection (the hook's own cost is measured above).
  const lifecycles = Number(process.env['VFIO_BENCH_LIFECYCLES'] ?? '100');
  const client = dbus.sessionBus({ busAddress: bus.address });
  cleanups.push(() => client.disconnect());
  const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
  const handle = manager['HandleHook'] as (...a: string[]) => Promise<void>;
  const t1 = performance.now();
  let rssAtHalf = '';
  for (let i = 0; i < lifecycles; i++) {
    if (i === lifecycles / 2) rssAtHalf = await rssMiB(pid);
    for (const [op, sub] of [
      ['prepare', 'begin'],
      ['start', 'begin'],
      ['started', 'begin'],
      ['stopped', 'end'],
      ['release', 'end'],
    ]) {
      await handle('win10', op!, sub!, '-', WIN10_XML);
    }
  }
  console.log(
    `bench daemon: ${lifecycles} full lifecycles (5 hook calls each) in ${((performance.now() - t1) / 1000).toFixed(1)} s; ` +
      `rss after ${lifecycles / 2}: ${rssAtHalf}, after ${lifecycles}: ${await rssMiB(pid)}`,
  );
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
