/**
 * A process that opens a simulated host and makes sysfs writes, one after
 * the other, for sim-atomic-write.test.ts. The test runs it with a crash
 * switch set (VFIO_HOOKD_SIM_KILL_AT_FILE_OP, VFIO_HOOKD_SIM_KILL_AFTER_WRITES)
 * so that it dies inside or between writes, as a killed daemon would.
 *
 * argv: DIR [ATTRIBUTE DATA]...   ATTRIBUTE relative to the host's sysfs root.
 * With no writes it only opens the host (which rolls a left-over write forward).
 * Prints one line a write on stdout: `ok` or the kernel's errno name (a
 * refused write is an outcome, not a failure). Anything else: exit 1.
 */
import path from 'node:path';
import { SimKernel } from '../../lib/sim/index.js';
import { KernelWriteError } from '../../lib/pci/kernel-port.js';

const [dir, ...writes] = process.argv.slice(2);
try {
  if (dir === undefined || writes.length % 2 !== 0) throw new Error('usage: sim-write-child DIR [ATTRIBUTE DATA]...');
  const kernel = await SimKernel.open(dir);
  for (let i = 0; i < writes.length; i += 2) {
    try {
      await kernel.write(path.join(kernel.roots.sysfs, writes[i]!), writes[i + 1]!, new AbortController().signal);
      process.stdout.write('ok\n');
    } catch (error) {
      if (!(error instanceof KernelWriteError)) throw error;
      process.stdout.write(`${error.code}\n`);
    }
  }
} catch (error) {
  process.stderr.write(`${(error as Error).name}: ${(error as Error).message}\n`);
  process.exitCode = 1;
}
