/**
 * One bounded sysfs write for the host changes, through the kernel port (the
 * real one writes in the writer child, so a write that hangs in the kernel
 * cannot hang the daemon), with the errno turned into a sentence.
 */
import { BindFailed, Timeout, q } from '../errors.js';
import { KernelWriteError, KernelWriteTimeout, type KernelPort } from '../pci/kernel-port.js';

/** How long one of these writes may take: they are quick in the kernel (no driver probe waits on hardware). */
export const HOST_WRITE_TIMEOUT_MS = 10_000;

export async function writeSysfs(port: KernelPort, file: string, data: string, what: string): Promise<void> {
  const abort = new AbortController();
  // Cleared after the write, so no timer outlives it (the settled check).
  const timer = setTimeout(() => abort.abort(), HOST_WRITE_TIMEOUT_MS);
  try {
    await port.write(file, data, abort.signal);
  } catch (error) {
    if (error instanceof KernelWriteTimeout) {
      throw new Timeout(`Cannot ${what}: writing ${q(data.trim())} to ${q(file)} did not return within ${HOST_WRITE_TIMEOUT_MS / 1000} s`);
    }
    if (error instanceof KernelWriteError) {
      throw new BindFailed(`Cannot ${what}: the kernel refused ${q(data.trim())} in ${q(file)} (${error.code})`);
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** The context's kernel port, or a refusal naming the change that needs one. */
export function needKernel(port: KernelPort | undefined, what: string): KernelPort {
  if (port === undefined) throw new Error(`Cannot ${what}: no kernel port was given to the host changes (a wiring bug)`);
  return port;
}
