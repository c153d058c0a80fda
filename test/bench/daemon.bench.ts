/**
 * Daemon figures, on a private bus and the simulated reference host, with
 * the bundle that is installed (dist/bin/vfio-hookd.js) started with the
 * node options of the shipped unit (units/vfio-hookd.service.in):
 *
 * - start to READY=1, median of 10 cold starts (a new node each time; the
 *   simulated host and the V8 code cache are made once before, as a real
 *   host's sysfs exists and the unit's CacheDirectory= holds the cache),
 *   anchor `node -e 0` run alternately;
 * - resident memory idle after start, and after N full lifecycles
 *   (VFIO_BENCH_LIFECYCLES, default 1,000; 2,000 with `npm run bench:long`,
 *   which also reports the growth from 1,000 to 2,000);
 * - the hook's round trip (the real hooks/qemu, sh + busctl, as libvirt runs
 *   it: argv and the XML on stdin) for a VM with nothing to do, against a
 *   bash dispatcher hook that finds no script (dispatcher-anchor.sh) and a
 *   bare `busctl call` of Peer.Ping on the same bus, run round-robin; for a
 *   managed VM's stage without work against the bare busctl; a prepare and
 *   release of the managed VM and a 1 MiB domain XML, as context.
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { ExecutionContext } from 'ava';
import dbus from 'dbus-next';
import { REPO, startDaemon, startPrivateBus, type DaemonProcess } from '../helpers/private-bus.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';
import type { Series } from './chart.js';
import { quantile, timeRuns, type Report } from './figures.js';

const run = promisify(execFile);
const PLAIN_XML = "<domain type='kvm'><name>plain</name><devices/></domain>";

async function rssMiB(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 'NaN') / 1024;
}

/** The node options between @NODE@ and the script in the shipped unit's ExecStart=, so the figures are the unit's. */
export async function unitNodeOptions(): Promise<string[]> {
  const unit = await fs.readFile(path.join(REPO, 'units/vfio-hookd.service.in'), 'utf8');
  const exec = /^ExecStart=@NODE@ (.*) @LIBDIR@\/\S+$/m.exec(unit);
  return exec ? exec[1]!.split(/\s+/) : [];
}

/** Run each function in turn, `n` rounds, so load changes hit all alike. */
async function roundRobin(n: number, fns: readonly (() => Promise<unknown>)[]): Promise<number[][]> {
  const out = fns.map(() => [] as number[]);
  for (let i = 0; i < n; i++) {
    for (const [k, fn] of fns.entries()) out[k]!.push(...(await timeRuns(1, fn)));
  }
  return out;
}

export async function daemonFigures(report: Report): Promise<Series[]> {
  const cleanups: (() => unknown)[] = [];
  // The helpers register cleanups on an ava context; a bench keeps them itself.
  const t = { teardown: (fn: () => unknown) => cleanups.push(fn) } as unknown as ExecutionContext;
  try {
    const bus = await startPrivateBus(t);
    const nodeOptions = await unitNodeOptions();
    // As under the unit (CacheDirectory=): the first start writes the V8 code cache ten seconds after it
    // began (lib/daemon/code-cache.ts), and the timed starts use it.
    const env = { CACHE_DIRECTORY: path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-bench-cache-')), 'cache') };
    await fs.mkdir(env.CACHE_DIRECTORY, { mode: 0o700 });
    cleanups.push(() => fs.rm(path.dirname(env.CACHE_DIRECTORY), { recursive: true, force: true }));
    const first = await startDaemon(t, bus, { config: WIN10_CONFIG, bundled: true, nodeOptions, env });
    const cacheFile = path.join(env.CACHE_DIRECTORY, 'vfio-hookd.v8cache');
    for (let waited = 0; waited < 60_000 && !(await fs.stat(cacheFile).catch(() => null)); waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const cacheBytes = (await fs.stat(cacheFile).catch(() => null))?.size ?? 0;
    first.child.kill('SIGTERM');
    await first.exited;

    let daemon: DaemonProcess | null = null;
    const starts: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < 10; i++) {
      bare.push(...(await timeRuns(1, () => run(process.execPath, ['-e', '0']))));
      if (daemon !== null) {
        daemon.child.kill('SIGTERM');
        await daemon.exited;
      }
      const t0 = performance.now();
      daemon = await startDaemon(t, bus, { dir: first.dir, bundled: true, nodeOptions, env });
      starts.push(performance.now() - t0);
    }
    report.add({
      id: 'ready',
      label: 'start to READY=1 (bundle, cold node, unit options)',
      value: quantile(starts, 0.5),
      unit: 'ms',
      samples: starts,
      anchor: { label: 'node -e 0', value: quantile(bare, 0.5) },
      goal: { on: 'value', max: 300 },
      note: `node options: ${nodeOptions.join(' ') || 'none'}; code cache ${cacheBytes ? `${(cacheBytes / 2 ** 20).toFixed(1)} MiB` : 'NOT written'}`,
    });
    const d = daemon!;
    const pid = d.child.pid!;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    report.add({
      id: 'rss-idle',
      label: 'rss idle, 2 s after READY=1',
      value: await rssMiB(pid),
      unit: 'MiB',
      goal: { on: 'value', max: 55 },
    });
    const hookText = (await fs.readFile(path.join(REPO, 'hooks/qemu'), 'utf8'))
      .replace(/^BUS_ADDRESS=.*$/m, `BUS_ADDRESS='${bus.address}'`)
      .replace(/^RUNTIME=.*$/m, `RUNTIME='${path.join(d.runRoot, 'vfio-hookd')}'`);
    const hook = path.join(d.dir, 'hook');
    await fs.writeFile(hook, hookText, { mode: 0o755 });
    const runScript = async (file: string, args: string[], xml: string): Promise<void> => {
      const child = spawn(file, args, { env: { LC_ALL: 'C', PATH: '/usr/bin:/bin' }, stdio: ['pipe', 'ignore', 'inherit'] });
      // A hook that never reads its stdin (the dispatcher) closes it early; libvirt ignores that EPIPE too.
      child.stdin.on('error', () => undefined);
      child.stdin.end(xml);
      const [code] = (await once(child, 'exit')) as [number];
      if (code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${code}`);
    };
    const runHook = (args: string[], xml: string): Promise<void> => runScript(hook, args, xml);
    const ping = (): Promise<unknown> =>
      run('busctl', [`--address=${bus.address}`, 'call', 'org.vfiohookd1', '/org/vfiohookd1', 'org.freedesktop.DBus.Peer', 'Ping']);
    const dispatcher = path.join(d.dir, 'dispatcher', 'qemu');
    await fs.mkdir(path.join(d.dir, 'dispatcher', 'qemu.d'), { recursive: true });
    await fs.copyFile(path.join(REPO, 'test/bench/dispatcher-anchor.sh'), dispatcher);
    await fs.chmod(dispatcher, 0o755);

    const unmanagedArgs = ['plain', 'prepare', 'begin', '-'];
    const [ours, anchor, busctl] = (await roundRobin(300, [
      () => runHook(unmanagedArgs, PLAIN_XML),
      () => runScript(dispatcher, unmanagedArgs, PLAIN_XML),
      ping,
    ])) as [number[], number[], number[]];
    report.add({
      id: 'hook-unmanaged',
      label: 'hook round trip, VM with nothing to do (prepare begin)',
      value: quantile(ours, 0.5),
      unit: 'ms',
      samples: ours,
      anchor: { label: 'bash dispatcher hook finding no script', value: quantile(anchor, 0.5), samples: anchor },
      goal: { on: 'ratio', max: 1.5 },
    });
    report.add({
      id: 'busctl-ping',
      label: 'bare busctl call of Peer.Ping (the daemon answers)',
      value: quantile(busctl, 0.5),
      unit: 'ms',
      samples: busctl,
    });
    const [noop, ping2] = (await roundRobin(300, [() => runHook(['win10', 'start', 'begin', '-'], WIN10_XML), ping])) as [
      number[],
      number[],
    ];
    report.add({
      id: 'hook-managed-noop',
      label: "hook round trip, managed VM's stage without work (start begin)",
      value: quantile(noop, 0.5),
      unit: 'ms',
      samples: noop,
      anchor: { label: 'bare busctl Peer.Ping', value: quantile(ping2, 0.5) },
      goal: { on: 'ratio', max: 1.3 },
    });
    const disk = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/data.qcow2'/><target dev='vdb'/></disk>\n";
    const bigXml = PLAIN_XML.replace(
      '<devices/>',
      `<devices><hostdev mode='subsystem' type='usb'/>${disk.repeat(Math.ceil(2 ** 20 / disk.length))}</devices>`,
    );
    const big = await timeRuns(20, () => runHook(unmanagedArgs, bigXml));
    report.add({
      id: 'hook-1mib',
      label: 'hook round trip, unmanaged VM with a <hostdev>, 1 MiB domain XML (parsed on a worker thread)',
      value: quantile(big, 0.5),
      unit: 'ms',
      samples: big,
    });
    const cycles = await timeRuns(50, async () => {
      await runHook(['win10', 'prepare', 'begin', '-'], WIN10_XML);
      await runHook(['win10', 'release', 'end', '-'], WIN10_XML);
    });
    report.add({
      id: 'prepare-release',
      label: 'hook prepare + release of the managed VM (RX 590 group to vfio-pci and back, 2 shm files)',
      value: quantile(cycles, 0.5),
      unit: 'ms',
      samples: cycles,
    });

    // N lifecycles over one client connection (the hook's own cost is measured above).
    const lifecycles = Number(process.env['VFIO_BENCH_LIFECYCLES'] ?? '1000');
    const client = dbus.sessionBus({ busAddress: bus.address });
    cleanups.push(() => client.disconnect());
    const manager = (await client.getProxyObject('org.vfiohookd1', '/org/vfiohookd1')).getInterface('org.vfiohookd1.Manager');
    const handle = manager['HandleHook'] as (...a: string[]) => Promise<void>;
    const t1 = performance.now();
    const rssAt = new Map<number, number>();
    for (let i = 1; i <= lifecycles; i++) {
      for (const [op, sub] of [
        ['prepare', 'begin'],
        ['start', 'begin'],
        ['started', 'begin'],
        ['stopped', 'end'],
        ['release', 'end'],
      ]) {
        await handle('win10', op!, sub!, '-', WIN10_XML);
      }
      if (i % 1000 === 0 || i === lifecycles) rssAt.set(i, await rssMiB(pid));
    }
    const seconds = (performance.now() - t1) / 1000;
    const at1000 = rssAt.get(Math.min(1000, lifecycles))!;
    report.add({
      id: 'rss-lifecycles',
      label: `rss after ${Math.min(1000, lifecycles)} full lifecycles (5 hook calls each, ${seconds.toFixed(0)} s for ${lifecycles})`,
      value: at1000,
      unit: 'MiB',
      goal: { on: 'value', max: 65 },
    });
    if (lifecycles >= 2000) {
      report.add({
        id: 'rss-growth',
        label: 'rss growth from 1,000 to 2,000 lifecycles',
        value: rssAt.get(2000)! - at1000,
        unit: 'MiB',
        note: `${at1000.toFixed(1)} MiB at 1,000, ${rssAt.get(2000)!.toFixed(1)} MiB at 2,000`,
      });
    }
    return [
      { label: 'vfio-hookd hook, nothing to do', samples: ours, color: '#4c9be8' },
      { label: 'bash dispatcher, no script', samples: anchor, color: '#e8a84c' },
      { label: 'bare busctl Peer.Ping', samples: busctl, color: '#9bd18b' },
      { label: 'vfio-hookd hook, managed no-op', samples: noop, color: '#b58be8' },
    ];
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}
