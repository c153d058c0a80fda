// Issue 14's graphics half on the real kernel, run INSIDE the QEMU guest by
// graphics.sh: the project's own host changes (dist/lib/host) and lifecycle
// against real sysfs. One mode per call, one result line per call:
//   console           unbind the frame-buffer consoles and bind them back
//   framebuffer       how many firmware frame buffers are bound (0: none to test)
//   release ADDR MS   prepare a VM with on-busy = "release" for ADDR, then release it
const d = '/repo/dist/lib';
const { openRealKernel } = await import(`${d}/pci/real-kernel-factory.js`);
const { PciEngine } = await import(`${d}/pci/engine.js`);
const { DeviceLedger } = await import(`${d}/lifecycle/device-ledger.js`);
const { Lifecycle } = await import(`${d}/lifecycle/lifecycle.js`);
const { parseHookEvent } = await import(`${d}/lifecycle/hook-event.js`);
const { StateFile } = await import(`${d}/state/state-file.js`);
const { DEFAULT_ROOTS } = await import(`${d}/roots.js`);
const { planVtconsoleUnbind, undoVtconsoleUnbind } = await import(`${d}/host/vtconsole.js`);
const { planFramebufferUnbind } = await import(`${d}/host/framebuffer.js`);
const fs = await import('node:fs');

const [mode, addr, ms] = process.argv.slice(2);
const roots = { ...DEFAULT_ROOTS, run: process.env.GFXRUN ?? '/tmp' };
const port = openRealKernel(roots);
const context = { roots, kernel: port, systemd: null };
const binds = () =>
  fs
    .readdirSync('/sys/class/vtconsole')
    .sort()
    .map((c) => `${c}=${fs.readFileSync(`/sys/class/vtconsole/${c}/bind`, 'utf8').trim()}`)
    .join(',');
try {
  if (mode === 'console') {
    const before = binds();
    const change = await planVtconsoleUnbind(context);
    await change.apply();
    const during = binds();
    let result = 'ok';
    try {
      await undoVtconsoleUnbind(change.record, context);
    } catch (error) {
      result = `undo-failed: ${error.message}`;
    }
    console.log(`${result}|${change.record.consoles.join(',')}|${before}|${during}|${binds()}`);
  } else if (mode === 'framebuffer') {
    const change = await planFramebufferUnbind(context);
    console.log(`ok|${change.record.devices.length}|${change.describe}`);
  } else if (mode === 'release') {
    const ledger = new DeviceLedger({ engine: new PciEngine(port), state: new StateFile(roots.run) });
    const life = new Lifecycle({ ledger, roots, trustedShmOwners: () => [0], host: { kernel: port, systemd: null } });
    const vm = {
      name: 'win11',
      devices: [addr],
      shmFiles: [],
      force: false,
      removeShmOnStop: false,
      user: null,
      units: [],
      hostPolicy: { onBusy: 'release', stopUnits: [], busyTimeoutMs: Number(ms), singleGpu: false },
    };
    let prepared;
    try {
      prepared = await life.handle(parseHookEvent('win11', 'prepare', 'begin', '-'), vm);
    } catch (error) {
      console.log(`refused|${error.name}|${error.message}|machines=${(await ledger.read()).machines.size}`);
      process.exitCode = 0;
      throw null;
    }
    const released = await life.handle(parseHookEvent('win11', 'release', 'end', '-'), null);
    console.log(`ok|${(prepared.hostChanges ?? []).join(';')}|${prepared.message}|${released.message}`);
  }
} catch (error) {
  if (error !== null) console.log(`error|${error.name}|${error.message}`);
} finally {
  await port.close();
}
