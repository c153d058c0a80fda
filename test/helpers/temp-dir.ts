/**
 * The tests' one temp-folder helper: a fresh folder under the system's temp
 * folder, removed in the test's teardown (teardowns run last-first, so after
 * the processes a test started in it have been stopped). The settled check
 * (settled.ts) fails the test if it is still there after the teardowns.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { trackDir } from './settled.js';

export async function tempDir(t: Pick<ExecutionContext, 'teardown'>, prefix = 'vfio-hookd-', mode = 0o700): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(dir, mode);
  trackDir(t, dir);
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}
