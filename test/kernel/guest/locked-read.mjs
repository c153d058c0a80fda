// While an unbind of VGA from vfio-pci blocks in the kernel (facts.sh 3b: a
// helper holds its device fd, so the driver core holds the device lock), the
// project's reads through the real port: the other function's binding reads
// at once; VGA's whole device read rejects with DeviceBusy after the port's
// bound, and the event loop keeps running meanwhile (a timer ticks). Prints
// one line, `locked-read|HDA-BINDING|VGA-OUTCOME|SECONDS|TICKS`, then waits
// for its stuck read to return before node can exit (libuv joins its pool
// threads at exit): facts.sh releases the lock after reading the line.
const d = '/repo/dist/lib';
const { openRealKernel } = await import(`${d}/pci/real-kernel-factory.js`);
const { PciEngine } = await import(`${d}/pci/engine.js`);
const { readPciDevice } = await import(`${d}/pci/pci-device.js`);
const { VGA, HDA } = process.env;
const port = openRealKernel();
let ticks = 0;
const ticker = setInterval(() => ticks++, 100);
try {
  const engine = new PciEngine(port);
  const hda = await engine.binding(HDA);
  const t = performance.now();
  let outcome;
  try {
    const device = await readPciDevice(port, VGA);
    outcome = `read ${device?.driverOverride ?? 'null'}`;
  } catch (error) {
    outcome = `${error.name}: ${error.message}`;
  }
  const seconds = ((performance.now() - t) / 1000).toFixed(1);
  console.log(`locked-read|${hda.driver ?? 'none'}|${outcome}|${seconds}|${ticks}`);
} finally {
  clearInterval(ticker);
  await port.close();
}
