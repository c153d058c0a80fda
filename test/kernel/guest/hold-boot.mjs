// hold = "boot" on the real kernel: after the blog's initrd loop put the pair
// on vfio-pci, the daemon's start step (recover, then holdAtBoot) adopts both
// functions with their original driver unknown and marks them held at boot;
// the VM's release leaves them on vfio-pci. Prints one line:
// ERROR-OR-ok|ADOPTED|CLAIMS|RELEASE-MESSAGE. Run by test.sh (section 2b).
const d = '/repo/dist/lib';
const { openRealKernel } = await import(`${d}/pci/real-kernel-factory.js`);
const { PciEngine } = await import(`${d}/pci/engine.js`);
const { DeviceLedger } = await import(`${d}/lifecycle/device-ledger.js`);
const { Lifecycle } = await import(`${d}/lifecycle/lifecycle.js`);
const { StateFile } = await import(`${d}/state/state-file.js`);
const { DEFAULT_ROOTS } = await import(`${d}/roots.js`);
const roots = { ...DEFAULT_ROOTS, run: process.env.HOLDRUN };
const port = openRealKernel(roots);
try {
  const ledger = new DeviceLedger({ engine: new PciEngine(port), state: new StateFile(roots.run) });
  const life = new Lifecycle({ ledger, roots, trustedShmOwners: () => [0] });
  await life.recover();
  const [r] = await life.holdAtBoot([{ name: 'win10', devices: [process.env.VGA], force: false }]);
  const rel = await life.release('win10');
  const claims = [...(await ledger.read()).claims].map(([a, x]) => `${a}=${x.hold}/${x.originalKnown}`).join(' ');
  console.log(`${r.error ? r.error.message : 'ok'}|${r.adopted.length}|${claims}|${rel.message}`);
} finally {
  await port.close();
}
