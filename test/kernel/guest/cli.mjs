// Section 2 of the kernel-tier guest test, run INSIDE the QEMU guest by
// test.sh with the machine's own node: drives the project's CLI
// (dist/bin/vfio-hookctl.js) against real sysfs and checks the result
// through sysfs itself. Prints "ok - ..." / "not ok - ..." / "# ..." lines,
// then "# engine-median-ms N", "# node-startup-median-ms N", "# cli-done".
// A missing CLI is a failure of every check, never a skip.
//
// In (env): VGA HDA NIC GROUP (found by test.sh from class and ids), CLI.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const { VGA, HDA, GROUP, CLI, HOSTVGA, NIC } = process.env;
const G = path.dirname(new URL(import.meta.url).pathname);
const PCI = '/sys/bus/pci/devices';
const CALL_TIMEOUT_MS = 45_000; // one CLI call under TCG (node start ~3 s)

const out = (line) => process.stdout.write(`${line}\n`);
const check = (cond, desc, diag) => {
  out(`${cond ? 'ok' : 'not ok'} - cli: ${desc}`);
  if (!cond && diag) {
    for (const l of String(diag).split('\n').filter(Boolean).slice(0, 6)) out(`#   ${l}`);
  }
  return cond;
};

const drv = (a) => {
  try {
    return path.basename(fs.readlinkSync(`${PCI}/${a}/driver`));
  } catch {
    return 'none';
  }
};
const ovr = (a) => fs.readFileSync(`${PCI}/${a}/driver_override`, 'utf8').trim();
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000; // ms

const cliPresent = fs.existsSync(CLI);
if (!cliPresent) out(`# CLI missing: ${CLI} does not exist (npm run build); every cli check fails`);

function hookctl(...args) {
  if (!cliPresent) return { code: null, stdout: '', stderr: `CLI missing: ${CLI}`, ms: 0 };
  const t = now();
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: CALL_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  const res = {
    code: r.status,
    signal: r.signal,
    stdout: r.stdout ?? '',
    stderr: r.stderr ?? '',
    ms: Math.round(now() - t),
  };
  if (r.error) res.stderr += `\n(spawn: ${r.error.message})`;
  out(`# cli call: ${args.join(' ')} -> exit ${res.code}${res.signal ? ` (${res.signal})` : ''} in ${res.ms} ms`);
  return res;
}
const describe = (r) =>
  `exit ${r.code}${r.signal ? ` signal ${r.signal}` : ''} in ${r.ms} ms; stderr: ${r.stderr.trim().slice(0, 400)}` +
  `${r.code !== 0 && r.stdout.trim() ? `\nstdout: ${r.stdout.trim().slice(0, 300).replace(/\n/g, ' | ')}` : ''}`;

// raw shell steps (lib.sh), for setting up states the CLI must observe
function raw(fn, ...addrs) {
  const r = spawnSync('sh', ['-c', `. ${G}/lib.sh; ${fn} ${addrs.join(' ')}`], {
    encoding: 'utf8',
    timeout: 30_000,
    killSignal: 'SIGKILL',
  });
  return r.status === 0;
}

const hex = (s) =>
  String(s ?? '')
    .toLowerCase()
    .replace(/^0x/, '');
function devicesJson() {
  const r = hookctl('devices', '--json');
  let json = null;
  let err = '';
  try {
    json = JSON.parse(r.stdout);
  } catch (e) {
    err = `not JSON: ${e.message}; stdout starts: ${r.stdout.slice(0, 200)}`;
  }
  const devs = Array.isArray(json?.devices) ? json.devices : [];
  const find = (vendor, device, cls) =>
    devs.find((d) => hex(d.vendorId) === vendor && hex(d.deviceId) === device && hex(d.classCode).startsWith(cls));
  // two VGAs share 1234:1111: the guest's is the one in the HDA's group
  const hda = find('8086', '293e', '0403');
  const vgas = devs.filter((d) => hex(d.vendorId) === '1234' && hex(d.deviceId) === '1111' && hex(d.classCode).startsWith('0300'));
  const vga = vgas.find((d) => hda !== undefined && d.iommuGroup === hda.iommuGroup);
  const hostVga = vgas.find((d) => d !== vga);
  const groups = Array.isArray(json?.groups) ? json.groups : [];
  const group = vga ? groups.find((g) => g.group === vga.iommuGroup) : undefined;
  return { r, json, err, vga, hda, hostVga, vgas, group, devs };
}

const engineRuns = [];
let holder = null;
try {
  // ---------------------------------------------------------- listing
  let d = devicesJson();
  check(d.r.code === 0 && d.json !== null, 'devices --json exits 0 with JSON', `${describe(d.r)} ${d.err}`);
  check(
    d.hda?.address === HDA,
    `devices --json finds the HDA (class 0x0403xx, 8086:293e) at ${HDA}`,
    `got ${JSON.stringify(d.hda)?.slice(0, 300)}`,
  );
  check(
    d.vga?.address === VGA,
    `devices --json finds the guest VGA (class 0x0300xx, 1234:1111, the HDA's group) at ${VGA}`,
    `got ${JSON.stringify(d.vga)?.slice(0, 300)}`,
  );
  check(
    d.vgas.length === 2 && d.hostVga?.address === HOSTVGA,
    `devices --json lists the host VGA with the same ids at ${HOSTVGA}`,
    `VGAs: ${JSON.stringify(d.vgas.map((v) => v.address))}`,
  );
  check(
    d.hostVga?.bootVga === true && d.vga?.bootVga === false,
    'bootVga is true for the host VGA and false for the guest VGA',
    `host ${d.hostVga?.bootVga}, guest ${d.vga?.bootVga}`,
  );
  check(
    d.vga?.iommuGroup === Number(GROUP) && d.hda?.iommuGroup === Number(GROUP),
    `VGA and HDA report iommuGroup ${GROUP} (a number, as sysfs)`,
    `vga ${d.vga?.iommuGroup}, hda ${d.hda?.iommuGroup}`,
  );
  check(
    d.group !== undefined && [...(d.group.devices ?? [])].sort().join(' ') === [VGA, HDA].sort().join(' '),
    `groups[] has group ${GROUP} with exactly the VGA and the HDA`,
    `got ${JSON.stringify(d.group)}`,
  );
  check(
    d.vga?.driver === 'bochs-drm' && d.hda?.driver === 'snd_hda_intel',
    'drivers reported as bochs-drm and snd_hda_intel',
    `vga ${d.vga?.driver}, hda ${d.hda?.driver}`,
  );
  check(d.group?.viable === false, `group ${GROUP} is viable:false while on host drivers`, `got ${JSON.stringify(d.group)}`);
  const card = fs.readdirSync(`${PCI}/${VGA}/drm`).find((n) => n.startsWith('card'));
  check(Array.isArray(d.vga?.drm) && d.vga.drm.includes(card), `VGA drm lists ${card}`, `got ${JSON.stringify(d.vga?.drm)}`);
  const table = hookctl('devices');
  check(table.code === 0 && table.stdout.includes(VGA), 'devices (table) exits 0 and shows the VGA address', describe(table));

  // ---------------------------------------------------------- detach/reattach
  let r = hookctl('detach', VGA);
  const detachMs = r.ms;
  const detached = check(r.code === 0, `detach ${VGA} exits 0`, describe(r));
  check(
    detached && drv(VGA) === 'vfio-pci' && drv(HDA) === 'vfio-pci',
    'detach takes both functions of the group to vfio-pci (sysfs driver links)',
    `vga ${drv(VGA)}, hda ${drv(HDA)}`,
  );
  check(
    detached && drv(HOSTVGA) === 'bochs-drm',
    `detach by address leaves the host VGA with the same ids (${HOSTVGA}) on bochs-drm`,
    `detach ok ${detached}; host VGA ${drv(HOSTVGA)}`,
  );
  check(fs.existsSync(`/dev/vfio/${GROUP}`), `/dev/vfio/${GROUP} exists after detach`);
  let stateFiles = [];
  try {
    stateFiles = fs.readdirSync('/run/vfio-hookd');
  } catch {}
  check(stateFiles.length > 0, 'a state file exists under /run/vfio-hookd after detach', `found: ${JSON.stringify(stateFiles)}`);
  d = devicesJson();
  check(
    d.vga?.driver === 'vfio-pci' && d.hda?.driver === 'vfio-pci' && d.group?.viable === true,
    `devices --json after detach: both on vfio-pci, group ${GROUP} viable:true`,
    `vga ${d.vga?.driver}, hda ${d.hda?.driver}, group ${JSON.stringify(d.group)}; ${describe(d.r)}`,
  );
  r = hookctl('reattach', VGA);
  const reattachMs = r.ms;
  const reattached = check(r.code === 0, `reattach ${VGA} exits 0`, describe(r));
  // the sysfs checks after a CLI call count only when the call itself ran and
  // succeeded: an unchanged sysfs must not pass for a missing CLI
  check(
    detached && reattached && drv(VGA) === 'bochs-drm' && drv(HDA) === 'snd_hda_intel',
    'after detach + reattach (both exit 0) the VGA is on bochs-drm and the HDA on snd_hda_intel',
    `detach ok ${detached}, reattach ok ${reattached}; vga ${drv(VGA)}, hda ${drv(HDA)}`,
  );
  check(
    detached && reattached && ovr(VGA) === '(null)' && ovr(HDA) === '(null)',
    "after detach + reattach driver_override reads '(null)' on both",
    `detach ok ${detached}, reattach ok ${reattached}; vga ${ovr(VGA)}, hda ${ovr(HDA)}`,
  );
  if (detached && reattached) engineRuns.push(detachMs + reattachMs);
  if (drv(VGA) !== 'bochs-drm' || drv(HDA) !== 'snd_hda_intel') raw('raw_reattach', VGA, HDA);

  // ---------------------------------------------------------- non-viable group
  raw('raw_detach', HDA);
  const half = drv(HDA) === 'vfio-pci' && drv(VGA) === 'bochs-drm';
  d = devicesJson();
  check(
    half && d.hda?.driver === 'vfio-pci' && d.group?.viable === false,
    `with only the HDA on vfio-pci (raw write), devices --json reports group ${GROUP} viable:false`,
    `sysfs vga ${drv(VGA)} hda ${drv(HDA)}; json hda ${d.hda?.driver}, group ${JSON.stringify(d.group)}; ${describe(d.r)}`,
  );
  raw('raw_reattach', HDA);

  // ---------------------------------------------------------- a DRM holder
  const fd = fs.openSync(`/dev/dri/${card}`, 'r');
  holder = spawn('sleep', ['1000'], { stdio: [fd, 'ignore', 'ignore'] });
  fs.closeSync(fd); // only the sleep holds the card now
  await new Promise((res) => setTimeout(res, 300));
  const pid = holder.pid;
  d = devicesJson();
  check(
    (d.vga?.holders ?? []).some((h) => h.pid === pid && h.comm === 'sleep' && h.path === `/dev/dri/${card}`),
    `devices --json lists holder {pid ${pid}, comm sleep, path /dev/dri/${card}} on the VGA`,
    `got ${JSON.stringify(d.vga?.holders)}`,
  );
  r = hookctl('detach', VGA);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  check(
    r.code !== 0 && r.code !== null && r.stderr.includes(String(pid)) && r.stderr.includes('sleep') && lines.length === 1,
    `detach while pid ${pid} (sleep) holds /dev/dri/${card} exits non-zero with one stderr line naming the pid and 'sleep'`,
    describe(r),
  );
  if (r.stderr.trim()) out(`# detach refusal said: ${r.stderr.trim().split('\n')[0]}`);
  check(
    r.code !== 0 &&
      r.code !== null &&
      drv(VGA) === 'bochs-drm' &&
      drv(HDA) === 'snd_hda_intel' &&
      ovr(VGA) === '(null)' &&
      ovr(HDA) === '(null)',
    'after the refused detach (CLI ran, exit non-zero) both stay on their drivers with driver_override (null)',
    `exit ${r.code}; vga ${drv(VGA)} (${ovr(VGA)}), hda ${drv(HDA)} (${ovr(HDA)})`,
  );
  holder.kill('SIGKILL');
  holder = null;
  if (drv(VGA) !== 'bochs-drm' || drv(HDA) !== 'snd_hda_intel') raw('raw_reattach', VGA, HDA);

  // ---------------------------------------------------------- safety rails
  // the boot VGA carries the framebuffer console: refused without --force
  r = hookctl('detach', HOSTVGA);
  let lines2 = r.stderr.split('\n').filter((l) => l.trim() !== '');
  check(
    r.code !== 0 && r.code !== null && lines2.length === 1 && r.stderr.includes(HOSTVGA) && /console/i.test(r.stderr),
    `detach of the boot VGA ${HOSTVGA} (framebuffer console on it) is refused: non-zero, one stderr line naming it and the console`,
    describe(r),
  );
  if (r.stderr.trim()) out(`# boot VGA refusal said: ${r.stderr.trim().split('\n')[0]}`);
  check(
    r.code !== 0 && r.code !== null && drv(HOSTVGA) === 'bochs-drm' && ovr(HOSTVGA) === '(null)',
    'after the refusal the host VGA is still on bochs-drm with driver_override (null)',
    `exit ${r.code}; host VGA ${drv(HOSTVGA)} (${ovr(HOSTVGA)})`,
  );
  if (drv(HOSTVGA) !== 'bochs-drm') raw('raw_reattach', HOSTVGA);
  // a network interface that is up
  const ifname = (() => {
    try {
      return fs.readdirSync(`${PCI}/${NIC}/net`)[0];
    } catch {
      return undefined;
    }
  })();
  const up = ifname !== undefined && spawnSync('ip', ['link', 'set', ifname, 'up'], { timeout: 10_000 }).status === 0;
  r = hookctl('detach', NIC);
  lines2 = r.stderr.split('\n').filter((l) => l.trim() !== '');
  check(
    up && r.code !== 0 && r.code !== null && lines2.length === 1 && r.stderr.includes(NIC) && r.stderr.includes(`'${ifname}'`),
    `detach of the e1000e ${NIC} while '${ifname}' is up is refused: non-zero, one stderr line naming the interface`,
    `link up ${up}; ${describe(r)}`,
  );
  if (r.stderr.trim()) out(`# network refusal said: ${r.stderr.trim().split('\n')[0]}`);
  check(
    r.code !== 0 && r.code !== null && drv(NIC) === 'e1000e',
    'after the refusal the e1000e is still on e1000e',
    `exit ${r.code}; nic ${drv(NIC)}`,
  );
  if (ifname) spawnSync('ip', ['link', 'set', ifname, 'down'], { timeout: 10_000 });
  if (drv(NIC) !== 'e1000e') raw('raw_reattach', NIC);

  // ---------------------------------------------------------- benchmark
  if (engineRuns.length === 1) {
    for (let i = 0; i < 2; i++) {
      const a = hookctl('detach', VGA);
      const b = hookctl('reattach', VGA);
      if (a.code !== 0 || b.code !== 0) break;
      engineRuns.push(a.ms + b.ms);
    }
  }
  const nodeRuns = [];
  for (let i = 0; i < 3; i++) {
    const t = now();
    spawnSync(process.execPath, ['-e', '0'], { timeout: 30_000 });
    nodeRuns.push(Math.round(now() - t));
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  // The engine alone, in this process (no node start, no writer spawn after
  // the first run): the figure to set beside the raw shell writes.
  const inProcess = [];
  try {
    const pci = await import(path.resolve(path.dirname(CLI), '..', 'lib', 'pci', 'index.js'));
    const port = pci.openRealKernel();
    try {
      const engine = new pci.PciEngine(port);
      // Where the time goes: one read of the host (every plan makes one), alone.
      const reads = [];
      for (let i = 0; i < 3; i++) {
        const t = now();
        await engine.inspect();
        reads.push(Math.round(now() - t));
      }
      out(`# bench engine in-process read of the host (devices, processes, dependencies) runs (ms): ${reads.join(' ')}`);
      await readBreakdown(port, path.resolve(path.dirname(CLI), '..', 'lib', 'pci'));
      for (let i = 0; i < 4; i++) {
        const t = now();
        const { claims } = await engine.detach([VGA], { owner: 'bench' });
        await engine.reattach([VGA], { owner: 'bench', claims });
        if (i > 0) inProcess.push(Math.round(now() - t)); // the first run also starts the writer process
      }
      // One more cycle, split: planning (its read of the host) against running the plan,
      // with the port calls each makes (a read-back polled more than once shows as more readLink).
      const calls = {};
      const split = [];
      const kinds = () => {
        const text = Object.entries(calls)
          .filter(([k]) => !k.endsWith(' ms'))
          .map(([k, n]) => `${k} ${n} (${(calls[`${k} ms`] ?? 0).toFixed(1)} ms)`)
          .join(' ');
        for (const k of Object.keys(calls)) delete calls[k];
        return text;
      };
      let t = now();
      // Each step's time, from onStepStart to onStep (its write, read-back and checks).
      const steps = [];
      let stepT = 0;
      const counted = new pci.PciEngine(countingPort(port, calls), {
        onStepStart: () => (stepT = now()),
        onStep: (step) => steps.push(`${step.op}${step.address ? ` ${step.address.slice(-4)}` : ''} ${(now() - stepT).toFixed(1)}`),
      });
      const d = await counted.planDetach([VGA], { owner: 'bench' });
      split.push(`plan detach ${Math.round(now() - t)} [${kinds()}]`);
      t = now();
      await counted.execute(d.plan);
      split.push(`execute ${Math.round(now() - t)} (${d.plan.steps.length} steps) [${kinds()}]`);
      t = now();
      const r = await counted.planReattach([VGA], { owner: 'bench' });
      split.push(`plan reattach ${Math.round(now() - t)} [${kinds()}]`);
      t = now();
      await counted.execute(r.plan);
      split.push(`execute ${Math.round(now() - t)} (${r.plan.steps.length} steps) [${kinds()}]`);
      // Each kind's time is summed over its calls: a plan's concurrent reads overlap (their sum exceeds the plan's
      // time); a plan's steps run one after the other, so there a write's sum is what the writes cost.
      out(`# bench engine in-process cycle split (ms; port calls, each kind's time summed): ${split.join(', ')}`);
      out(`# bench engine in-process steps (ms): ${steps.join(', ')}`);
      await writerRoundTrip(path.resolve(path.dirname(CLI), '..', 'lib', 'pci', '_internal', 'sysfs-writer.js'));
    } finally {
      await port.close();
    }
  } catch (e) {
    out(`# bench in-process engine failed: ${String(e.message ?? e).split('\n')[0]}`);
  }
  out(`# bench engine in-process detach+reattach runs (ms): ${inProcess.join(' ') || 'none'}`);
  if (inProcess.length) out(`# engine-inprocess-median-ms ${median(inProcess)}`);
  out(`# bench engine detach+reattach runs (ms): ${engineRuns.join(' ') || 'none'}`);
  if (engineRuns.length) out(`# engine-median-ms ${median(engineRuns)}`);
  out(`# node-startup-median-ms ${median(nodeRuns)}`);
  if (drv(VGA) !== 'bochs-drm' || drv(HDA) !== 'snd_hda_intel') raw('raw_reattach', VGA, HDA);
} catch (e) {
  check(false, 'cli.mjs ran without an exception', e.stack);
} finally {
  holder?.kill('SIGKILL');
}
out('# cli-done');

/**
 * Where one read of the host goes: each part of readHost timed alone
 * (median of 3), with the number of port calls it makes by kind. Figures,
 * never an assertion.
 */
async function readBreakdown(port, pciDir) {
  const load = (f) => import(path.join(pciDir, f));
  const [{ readPciDevices }, { scanProcesses }, { hostDependencies }] = await Promise.all([
    load('pci-device.js'),
    load('holders.js'),
    load('host-dependencies.js'),
  ]);
  const counting = (calls) => countingPort(port, calls);
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
  const part = async (name, run) => {
    const ms = [];
    let calls = {};
    for (let i = 0; i < 3; i++) {
      calls = {};
      const t = now();
      await run(counting(calls));
      ms.push(Math.round(now() - t));
    }
    const counts = Object.entries(calls).filter(([k]) => !k.endsWith(' ms'));
    const total = counts.reduce((a, [, n]) => a + n, 0);
    const kinds = counts.map(([k, n]) => `${k} ${n}`).join(', ');
    out(`# bench read part ${name}: ${med(ms)} ms median (${ms.join(' ')}), ${total} port calls (${kinds})`);
  };
  const devices = await readPciDevices(port);
  await part(`devices (${devices.size})`, (p) => readPciDevices(p));
  const pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length;
  await part(`processes (${pids} pids)`, (p) => scanProcesses(p));
  await part('dependencies', (p) => hostDependencies(p, devices.values()));
  // What one call costs: the syscalls, or node's JS around them (the path
  // building every read makes, under() in lib/roots.ts)?
  const { under } = await import(path.resolve(pciDir, '..', 'roots.js'));
  const each = (fn) => {
    const n = 200;
    const t = now();
    for (let i = 0; i < n; i++) fn();
    return ((now() - t) / n).toFixed(3);
  };
  const attr = `${PCI}/${VGA}/vendor`;
  out(
    `# bench one call (ms each, 200 runs): readFileSync ${each(() => fs.readFileSync(attr, 'utf8'))}, ` +
      `readlinkSync ${each(() => fs.readlinkSync(`${PCI}/${VGA}/driver`))}, ` +
      `readdirSync ${each(() => fs.readdirSync('/proc/1/fd'))}, ` +
      `realpathSync.native ${each(() => fs.realpathSync.native(`${PCI}/${VGA}`))}, ` +
      `under() ${each(() => under('/sys', 'bus', 'pci', 'devices', VGA, 'vendor'))}`,
  );
  const { readHost, readHostFor } = await load('host-snapshot.js');
  await part('readHost (whole host)', (p) => readHost(p));
  // The engine's read for a detach or reattach of the pair (absent before issue 13).
  if (typeof readHostFor === 'function') await part('readHostFor (the pair)', (p) => readHostFor(p, [VGA]));
}

/** The port, counting its calls by kind into `calls` (writes included). */
function countingPort(port, calls) {
  // calls[kind] counts the calls; calls[`${kind} ms`] sums the time each took until it settled.
  const took = (key, t) => (calls[`${key} ms`] = (calls[`${key} ms`] ?? 0) + (now() - t));
  return new Proxy(port, {
    get(target, key) {
      const v = Reflect.get(target, key);
      if (typeof v !== 'function') return v;
      return (...a) => {
        calls[key] = (calls[key] ?? 0) + 1;
        const t = now();
        const r = v.apply(target, a);
        if (r && typeof r.then === 'function') return r.finally(() => took(key, t));
        took(key, t);
        return r;
      };
    },
  });
}

/** One write through the writer child and back, to a tmpfs file (median of 30), beside the same write made here. */
async function writerRoundTrip(modulePath) {
  const { SysfsWriter } = await import(modulePath);
  const file = '/tmp/writer-round-trip';
  fs.writeFileSync(file, '');
  const writer = new SysfsWriter();
  try {
    writer.start();
    const signal = new AbortController().signal;
    await writer.write(file, 'x\n', signal);
    const child = [];
    const local = [];
    for (let i = 0; i < 30; i++) {
      let t = now();
      await writer.write(file, 'x\n', signal);
      child.push(now() - t);
      t = now();
      const fd = fs.openSync(file, fs.constants.O_WRONLY);
      fs.writeSync(fd, 'x\n');
      fs.closeSync(fd);
      local.push(now() - t);
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)].toFixed(2);
    out(`# bench one write (ms, median of 30): through the writer child ${med(child)}, in this process ${med(local)}`);
    // The child is a process of its own beside the daemon: its memory, as the daemon's unit would hold it.
    const kids = fs
      .readdirSync('/proc/self/task')
      .flatMap((task) => fs.readFileSync(`/proc/self/task/${task}/children`, 'utf8').trim().split(/\s+/))
      .filter(Boolean);
    const writerPid = kids.find((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sysfs-writer-child');
      } catch {
        return false;
      }
    });
    const kb = writerPid ? /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${writerPid}/status`, 'utf8'))?.[1] : undefined;
    out(`# bench the writer child's resident memory: ${kb ? `${(Number(kb) / 1024).toFixed(1)} MiB` : 'not found'}`);
  } finally {
    await writer.close();
  }
}
