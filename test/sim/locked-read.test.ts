/**
 * Reads of an attribute whose show takes the device lock (`driver_override`)
 * go through libuv's thread pool, bounded: lib/pci/fs-reads.ts. A FIFO with
 * no writer stands in for the lock here (its open blocks a pool thread as the
 * kernel's device_lock blocks the read); the real lock, held by an unbind
 * that blocks, is the kernel tier's (facts.sh, locked-read.mjs).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DeviceBusy } from '../../lib/errors.js';
import { readLockedFileOrNull } from '../../lib/pci/fs-reads.js';
import { openRealKernel } from '../../lib/pci/real-kernel-factory.js';
import { rootsUnder } from '../../lib/roots.js';
import { tempDir } from '../helpers/temp-dir.js';

/** A FIFO no one writes yet; the teardown opens it for writing, so no read of it stays stuck. */
async function lockedAttribute(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-locked-');
  const fifo = path.join(dir, 'driver_override');
  execFileSync('mkfifo', [fifo]);
  t.teardown(async () => {
    // O_RDWR never blocks on a FIFO: a reader still waiting in open() is let through and sees end of file.
    const handle = await fs.open(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK).catch(() => null);
    await handle?.close();
  });
  return fifo;
}

/** Open the FIFO for writing (the "lock" released), write `text`, close. */
async function release(fifo: string, text: string): Promise<void> {
  const handle = await fs.open(fifo, 'w');
  await handle.write(text);
  await handle.close();
}

test('a lock-taking attribute reads as its text, and a missing one as null', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-locked-');
  await fs.writeFile(path.join(dir, 'driver_override'), 'vfio-pci\n');
  t.is(await readLockedFileOrNull(path.join(dir, 'driver_override')), 'vfio-pci\n');
  t.is(await readLockedFileOrNull(path.join(dir, 'missing')), null);
  t.is(await readLockedFileOrNull(path.join(dir, 'no', 'driver_override')), null);
});

test('a read that waits on the lock rejects with DeviceBusy after its bound, and the event loop runs meanwhile', async (t) => {
  const fifo = await lockedAttribute(t);
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 10);
  t.teardown(() => clearInterval(ticker));
  const started = Date.now();
  const error = await t.throwsAsync(readLockedFileOrNull(fifo, 300), { instanceOf: DeviceBusy });
  t.is(
    error.message,
    `Reading '${fifo}' did not return within 300 ms: the kernel holds the device's lock, as it does while an unbind or a ` +
      `driver's probe of it runs; wait for that to finish, or see 'dmesg' for a task blocked on the device`,
  );
  t.true(Date.now() - started >= 250, 'it waited for its bound');
  t.true(ticks >= 5, `timers ran while the read waited (${ticks} ticks)`);
});

test('reads of the same attribute while one waits join it (one pool thread), and a read after it returns is fresh', async (t) => {
  const fifo = await lockedAttribute(t);
  const first = readLockedFileOrNull(fifo, 5000);
  const second = readLockedFileOrNull(fifo, 5000);
  await release(fifo, 'vfio-pci\n');
  // Two opens of the FIFO would each need the writer; one read shared gets its text twice.
  t.deepEqual(await Promise.all([first, second]), ['vfio-pci\n', 'vfio-pci\n']);
  const third = readLockedFileOrNull(fifo, 5000);
  await release(fifo, 'amdgpu\n');
  t.is(await third, 'amdgpu\n');
});

test('a read that timed out still returns later, and the next read of the attribute does not wait on it', async (t) => {
  const fifo = await lockedAttribute(t);
  await t.throwsAsync(readLockedFileOrNull(fifo, 100), { instanceOf: DeviceBusy });
  // The stuck read is joined while it waits: released, it gives the joined caller its text.
  const joined = readLockedFileOrNull(fifo, 5000);
  await release(fifo, 'vfio-pci\n');
  t.is(await joined, 'vfio-pci\n');
  // And once it has returned, a new read opens afresh.
  const next = readLockedFileOrNull(fifo, 5000);
  await release(fifo, '(null)\n');
  t.is(await next, '(null)\n');
});

test('the real port reads driver_override through the pool (a device read waits on its lock, not the event loop)', async (t) => {
  const top = await tempDir(t, 'vfio-hookd-locked-');
  const roots = rootsUnder(top);
  const dir = path.join(roots.sysfs, 'bus', 'pci', 'devices', '0000:0b:00.0');
  await fs.mkdir(dir, { recursive: true });
  execFileSync('mkfifo', [path.join(dir, 'driver_override')]);
  const kernel = openRealKernel(roots);
  t.teardown(() => kernel.close());
  let ticked = false;
  const pending = kernel.readLockedFile(path.join(dir, 'driver_override'));
  setTimeout(() => (ticked = true), 20);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.true(ticked, 'a timer fired while the read waited');
  await release(path.join(dir, 'driver_override'), 'vfio-pci\n');
  t.is(await pending, 'vfio-pci\n');
});
